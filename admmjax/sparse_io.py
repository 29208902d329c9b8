"""Sparse params files: the second (and last) admmjax module that does file I/O.

``save_sparse`` writes a pruned params pytree as one file in the format of
``admmjax._export`` (version 1: magic, version, SHA-256 checksum, JSON manifest,
payload; the byte layout is documented in that module's docstring);
``load_sparse`` reads it back bit for bit. The usual suffix is ``.admmsparse``.

Why not in ``admmjax.checkpoint``: that module needs orbax-checkpoint (and
TensorStore) to import at all, while a sparse file needs only NumPy and the standard
library, so a deployment that only loads a pruned model should not have to install
orbax. Everything here is thin: the encoding and the byte format are pure functions
in ``admmjax._export`` (``encode_sparse``, ``sparse_to_bytes``...), testable in
memory; this module only moves those bytes to and from disk, atomically on write.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

from admmjax._export import (
    SparseFormatError,
    SparseParams,
    decode_sparse,
    encode_sparse,
    sparse_from_bytes,
    sparse_to_bytes,
)

__all__ = ["SUFFIX", "SparseFormatError", "load_sparse", "read_sparse", "save_sparse"]

PyTree = Any
SUFFIX = ".admmsparse"


def save_sparse(
    path: str | os.PathLike,
    params: PyTree | SparseParams,
    *,
    metadata: dict[str, Any] | None = None,
    encoding: str = "auto",
) -> SparseParams:
    """Writes ``params`` (or an already encoded :class:`SparseParams`) to one file.

    The file is written to a temporary name in the same directory and renamed, so a
    crash never leaves a half-written file at ``path``. ``metadata`` (JSON-able) is
    stored in the manifest and returned by :func:`read_sparse`. Returns the encoding
    (per-leaf choices and byte counts, for reporting).
    """
    if isinstance(params, SparseParams):
        sparse = params
    else:
        sparse = encode_sparse(params, encoding=encoding)
    data = sparse_to_bytes(sparse, metadata)
    path = os.path.abspath(os.fspath(path))
    directory = os.path.dirname(path)
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=SUFFIX, dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return sparse


def read_sparse(path: str | os.PathLike) -> tuple[SparseParams, dict[str, Any]]:
    """The checked encoding and the metadata of a sparse file, without densifying.

    Raises ``FileNotFoundError`` if there is no file and :class:`SparseFormatError`
    (a ``ValueError`` naming the file) for a bad magic, an unsupported version, a
    truncated or over-long file, a checksum mismatch or an inconsistent manifest.
    """
    path = os.path.abspath(os.fspath(path))
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no sparse params file at {path}")
    with open(path, "rb") as f:
        data = f.read()
    return sparse_from_bytes(data, name=path)


def load_sparse(path: str | os.PathLike, like: PyTree = None) -> PyTree:
    """Reads a file written by :func:`save_sparse` back into dense params, exactly.

    ``like`` (any pytree with the same leaf paths, shapes and dtypes: an
    ``nnx.State``, a dict...) gives the structure, and its ``jax.Array`` leaves make
    the result's leaves ``jax.Array``; without it the result is nested dicts of NumPy
    arrays keyed by the path components (``{"fc1": {"kernel": ...}}``).
    """
    sparse, _ = read_sparse(path)
    try:
        return decode_sparse(sparse, like)
    except (ValueError, SparseFormatError) as err:
        raise type(err)(f"{os.path.abspath(os.fspath(path))}: {err}") from None

"""A compact sparse encoding of pruned params, and its byte format (no file I/O here).

:func:`encode_sparse` turns a params pytree into a :class:`SparseParams`: one
:class:`SparseLeaf` record per leaf, in flattening order, each stored in whichever of
three encodings is smallest for that leaf:

* ``"dense"``: every entry (biases, and leaves where sparse storage would be bigger);
* ``"bitmask"``: the nonzero entries plus one bit per entry (``ceil(n / 8)`` bytes,
  ``np.packbits`` with ``bitorder="little"``: entry ``i`` is bit ``i % 8`` of byte
  ``i // 8``; the pad bits of the last byte are 0);
* ``"relative"``: the nonzero entries plus the gaps between successive nonzero
  positions in the flat (C-order) leaf, as in Deep Compression (Han et al. 2016),
  stored in the narrowest of ``uint8``/``uint16``/``uint32`` that gives the fewest
  bytes. With ``M`` the type's maximum, a code ``c`` in ``1..M`` means "the next
  nonzero is ``c`` positions after the previous one" (the previous position starts at
  ``-1``, so the first code is ``position + 1``), and the escape code ``0`` means
  "advance ``M`` positions, no value here". A gap ``g`` is written as ``(g - 1) // M``
  escapes and a final code ``g - M * ((g - 1) // M)``. Deep Compression pads with
  filler zero *values* instead; the escape code costs the index entry only.

"Nonzero" means "not all bits zero": ``-0.0`` and NaN are kept as values, so
:func:`decode_sparse` gives back every leaf bit for bit, for any NumPy or ml_dtypes
dtype (float64/32/16, bfloat16, float8, integers, bool). Decoding happens in NumPy, so
float64 leaves survive without ``jax_enable_x64``.

:func:`sparse_to_bytes` / :func:`sparse_from_bytes` write and read format version 1,
one self-describing byte string (``admmjax.sparse_io`` puts it in a file)::

    offset  size  field
    0       8     magic b"\\x89ADMMSP\\n"
    8       2     format version, uint16 little-endian (1)
    10      2     flags, uint16 little-endian (0; reserved)
    12      4     manifest length M in bytes, uint32 little-endian
    16      8     payload length P in bytes, uint64 little-endian
    24      32    SHA-256 of the M + P bytes that follow the header
    56      M     manifest: UTF-8 JSON (below)
    56+M    P     payload: the arrays of every leaf, raw little-endian, back to back

The file is exactly ``56 + M + P`` bytes. The manifest is::

    {"format": "admmjax.sparse", "version": 1, "byteorder": "little",
     "leaves": [{"path": "fc1/kernel", "shape": [800, 500], "dtype": "float32",
                 "encoding": "relative", "nonzero": 4000,
                 "values": [offset, nbytes],             # into the payload
                 "index": [offset, nbytes],              # null for "dense"
                 "index_dtype": "uint8"}, ...],          # null unless "relative"
     "metadata": {...}}                                  # free JSON from the writer

``values`` holds ``nonzero`` entries of ``dtype`` (all ``prod(shape)`` for
``"dense"``). Paths are ``admmjax.leaf_paths`` strings (``"fc1/kernel"``); reading
rebuilds the structure from a ``like`` pytree with the same paths or, without one,
as nested dicts split on ``"/"``. Every length, offset, count and index is checked
on reading; a bad magic, an unknown version, reserved flag bits that are set, a
checksum mismatch, a truncated or over-long file, or an inconsistent manifest raise
:class:`SparseFormatError`. So does a leaf whose decoded size (``prod(shape)`` times
its item size; an all-zero ``"relative"`` leaf legitimately has no payload at all)
exceeds this machine's physical memory, checked before anything is allocated.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import struct
import sys
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_dtypes  # noqa: F401  (registers bfloat16, float8... so np.dtype(name) finds them)
import numpy as np

from admmjax._sparsity import path_str

PyTree = Any

MAGIC = b"\x89ADMMSP\n"
FORMAT_VERSION = 1
HEADER = struct.Struct("<8sHHIQ32s")  # magic, version, flags, M, P, sha256
HEADER_SIZE = HEADER.size  # 56
ENCODINGS = ("dense", "bitmask", "relative")
_INDEX_DTYPES = (np.dtype(np.uint8), np.dtype(np.uint16), np.dtype(np.uint32))
_LITTLE = sys.byteorder == "little"


class SparseFormatError(ValueError):
    """A sparse byte string or file is not valid: says where and what is wrong."""


class SparseLeaf(NamedTuple):
    """One leaf of :class:`SparseParams`.

    ``values`` is 1-D in the leaf's dtype: every entry (``"dense"``) or the nonzero
    entries in flat C order. ``index`` is ``None`` (``"dense"``), the packed bits
    (``"bitmask"``, uint8) or the gap codes (``"relative"``, uint8/16/32).
    ``nonzero`` counts the entries whose bits are not all zero.
    """

    path: str
    shape: tuple[int, ...]
    dtype: np.dtype
    encoding: str
    nonzero: int
    values: np.ndarray
    index: np.ndarray | None

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        """Bytes of ``values`` plus ``index`` (the payload; no manifest)."""
        return int(self.values.nbytes) + (0 if self.index is None else int(self.index.nbytes))

    @property
    def dense_nbytes(self) -> int:
        """Bytes of the leaf stored densely in its own dtype."""
        return self.size * self.dtype.itemsize


class SparseParams(NamedTuple):
    """Encoded params: one :class:`SparseLeaf` per leaf, in flattening order.

    ``treedef`` is the original structure when encoded in memory (so
    :func:`decode_sparse` needs no ``like``); ``None`` when read from bytes.
    """

    leaves: tuple[SparseLeaf, ...]
    treedef: Any = None

    @property
    def paths(self) -> list[str]:
        return [leaf.path for leaf in self.leaves]

    @property
    def nbytes(self) -> int:
        """Payload bytes over all leaves (see :func:`sparse_nbytes`)."""
        return sum(leaf.nbytes for leaf in self.leaves)


# --------------------------------------------------------------------------- encoding


def _flat_native(leaf: Any) -> np.ndarray:
    arr = np.asarray(leaf)
    if not arr.dtype.isnative:
        arr = arr.astype(arr.dtype.newbyteorder("="))
    return np.ascontiguousarray(arr).reshape(-1)


def _nonzero_mask(flat: np.ndarray) -> np.ndarray:
    """True where an entry has any bit set (so -0.0 and NaN count as nonzero)."""
    size = flat.dtype.itemsize
    if size in (1, 2, 4, 8):
        return flat.view(f"u{size}") != 0
    return flat.view(np.uint8).reshape(-1, size).any(axis=1)


def relative_codes(positions: np.ndarray, index_dtype: Any) -> np.ndarray:
    """Gap codes of sorted flat ``positions`` in ``index_dtype`` (escape code 0)."""
    dtype = np.dtype(index_dtype)
    if dtype not in _INDEX_DTYPES:
        raise ValueError(f"index_dtype must be one of uint8, uint16, uint32; got {dtype}")
    m = int(np.iinfo(dtype).max)
    pos = np.asarray(positions, dtype=np.int64)
    if pos.size == 0:
        return np.zeros(0, dtype)
    gaps = np.diff(pos, prepend=-1)
    if gaps.min() < 1:
        raise ValueError("positions must be strictly increasing and >= 0")
    escapes = (gaps - 1) // m
    ends = np.cumsum(escapes + 1) - 1
    codes = np.zeros(int(ends[-1]) + 1, dtype)
    codes[ends] = gaps - escapes * m
    return codes


def _relative_length(gaps: np.ndarray, index_dtype: np.dtype) -> int:
    m = int(np.iinfo(index_dtype).max)
    return int(gaps.size + np.sum((gaps - 1) // m))


def _decode_relative(codes: np.ndarray, nonzero: int, size: int, where: str) -> np.ndarray:
    """Flat positions of the nonzeros from gap codes, validated against the leaf."""
    if codes.size == 0:
        if nonzero:
            raise SparseFormatError(f"{where}: no index codes for {nonzero} nonzero values")
        return np.zeros(0, np.int64)
    if codes[-1] == 0:
        raise SparseFormatError(f"{where}: the index codes end with an escape code")
    m = int(np.iinfo(codes.dtype).max)
    c = codes.astype(np.int64)
    is_value = c != 0
    positions = (np.cumsum(np.where(is_value, c, m)) - 1)[is_value]
    if positions.size != nonzero:
        raise SparseFormatError(
            f"{where}: the index codes give {positions.size} positions, "
            f"the record says {nonzero} nonzero values"
        )
    if positions[-1] >= size:
        raise SparseFormatError(
            f"{where}: index position {int(positions[-1])} is outside the leaf of {size} entries"
        )
    return positions


def _encode_leaf(path: str, leaf: Any, encoding: str, index_dtype: np.dtype | None) -> SparseLeaf:
    arr = np.asarray(leaf)
    if arr.dtype.hasobject or arr.dtype.itemsize == 0 or arr.dtype.fields is not None:
        raise TypeError(f"leaf '{path}' has dtype {arr.dtype}; expected a numeric or bool array")
    shape = tuple(int(d) for d in arr.shape)
    flat = _flat_native(arr)
    dtype = flat.dtype
    mask = _nonzero_mask(flat)
    positions = np.flatnonzero(mask)
    k, n = int(positions.size), int(flat.size)

    bitmask_bytes = -(-n // 8)
    gaps = np.diff(positions.astype(np.int64), prepend=-1)
    widths = _INDEX_DTYPES if index_dtype is None else (index_dtype,)
    rel_dtype = min(widths, key=lambda d: (_relative_length(gaps, d) * d.itemsize, d.itemsize))
    relative_bytes = _relative_length(gaps, rel_dtype) * rel_dtype.itemsize
    if encoding == "auto":
        sparse_index = min(bitmask_bytes, relative_bytes)
        if n * dtype.itemsize <= k * dtype.itemsize + sparse_index:
            encoding = "dense"
        else:
            encoding = "bitmask" if bitmask_bytes <= relative_bytes else "relative"

    if encoding == "dense":
        return SparseLeaf(path, shape, dtype, "dense", k, flat.copy(), None)
    values = flat[positions]
    if encoding == "bitmask":
        index = np.packbits(mask, bitorder="little")
    else:
        index = relative_codes(positions, rel_dtype)
    return SparseLeaf(path, shape, dtype, encoding, k, values, index)


def encode_sparse(
    params: PyTree, *, encoding: str = "auto", index_dtype: Any = None
) -> SparseParams:
    """Encodes every leaf of ``params`` (host-side; reads concrete arrays).

    Args:
      params: any pytree of arrays (``nnx.State``, dicts, lists...); ``None`` is no leaf.
      encoding: ``"auto"`` (default) picks per leaf the smallest of ``"dense"``,
        ``"bitmask"`` and ``"relative"`` (values + index bytes; dense on ties); a
        name forces that encoding on every leaf.
      index_dtype: for ``"relative"``, force ``uint8``/``uint16``/``uint32`` gap codes
        instead of the one giving the fewest bytes.

    Returns:
      :class:`SparseParams`; :func:`decode_sparse` gives ``params`` back exactly.
    """
    if encoding != "auto" and encoding not in ENCODINGS:
        raise ValueError(f"encoding must be 'auto' or one of {ENCODINGS}; got {encoding!r}")
    if index_dtype is not None:
        index_dtype = np.dtype(index_dtype)
        if index_dtype not in _INDEX_DTYPES:
            raise ValueError(f"index_dtype must be uint8, uint16 or uint32; got {index_dtype}")
    flat, treedef = jax.tree_util.tree_flatten_with_path(params)
    leaves = tuple(_encode_leaf(path_str(p), leaf, encoding, index_dtype) for p, leaf in flat)
    return SparseParams(leaves, treedef)


def sparse_nbytes(sparse: SparseParams | SparseLeaf | PyTree) -> int:
    """Payload bytes (values + indices) of an encoding; a params pytree is encoded first.

    The bytes written by :func:`sparse_to_bytes` are this plus the 56-byte header
    and the JSON manifest (a few hundred bytes per leaf).
    """
    if not isinstance(sparse, SparseParams | SparseLeaf):
        sparse = encode_sparse(sparse)
    return sparse.nbytes


# --------------------------------------------------------------------------- decoding


def _physical_memory() -> int | None:
    """Bytes of physical memory of this machine; ``None`` where the OS does not say."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def _check_decoded_size(where: str, what: str, nbytes: int) -> None:
    """Raises before allocating ``nbytes`` that this machine cannot hold."""
    memory = _physical_memory()
    if nbytes > np.iinfo(np.intp).max or (memory is not None and nbytes > memory):
        raise SparseFormatError(
            f"{where}: {what} decodes to {nbytes:,} bytes, more than this machine's "
            f"{memory:,} bytes of memory; the file is corrupted or crafted"
        )


def _check_leaf(leaf: SparseLeaf) -> None:
    """Validates one record's arrays against its shape, dtype and encoding."""
    where = f"leaf '{leaf.path}'"
    if leaf.encoding not in ENCODINGS:
        raise SparseFormatError(f"{where}: unknown encoding {leaf.encoding!r}")
    n = leaf.size
    _check_decoded_size(where, f"shape {list(leaf.shape)} of {leaf.dtype}", n * leaf.dtype.itemsize)
    want = n if leaf.encoding == "dense" else leaf.nonzero
    if not 0 <= leaf.nonzero <= n:
        raise SparseFormatError(f"{where}: nonzero={leaf.nonzero} with {n} entries")
    if leaf.values.ndim != 1 or leaf.values.size != want or leaf.values.dtype != leaf.dtype:
        raise SparseFormatError(
            f"{where}: expected {want} values of {leaf.dtype}, "
            f"got {leaf.values.size} of {leaf.values.dtype}"
        )
    if leaf.encoding == "dense":
        if leaf.index is not None:
            raise SparseFormatError(f"{where}: a dense leaf has no index")
    elif leaf.encoding == "bitmask":
        if leaf.index is None or leaf.index.dtype != np.uint8 or leaf.index.size != -(-n // 8):
            raise SparseFormatError(f"{where}: the bitmask must be {-(-n // 8)} uint8 bytes")
    elif leaf.index is None or leaf.index.dtype not in _INDEX_DTYPES:
        raise SparseFormatError(f"{where}: relative codes must be uint8, uint16 or uint32")


def _decode_leaf(leaf: SparseLeaf) -> np.ndarray:
    _check_leaf(leaf)
    if leaf.encoding == "dense":
        return leaf.values.copy().reshape(leaf.shape)
    where = f"leaf '{leaf.path}'"
    n = leaf.size
    if leaf.encoding == "bitmask":
        bits = np.unpackbits(leaf.index, bitorder="little")
        if bits[n:].any():
            raise SparseFormatError(f"{where}: pad bits after entry {n} are set")
        mask = bits[:n].astype(bool)
        if int(mask.sum()) != leaf.nonzero:
            raise SparseFormatError(
                f"{where}: the bitmask has {int(mask.sum())} bits set, "
                f"the record says {leaf.nonzero} nonzero values"
            )
        positions = np.flatnonzero(mask)
    else:
        positions = _decode_relative(leaf.index, leaf.nonzero, n, where)
    out = np.zeros(n, leaf.dtype)
    out[positions] = leaf.values
    return out.reshape(leaf.shape)


def _nested(paths: Sequence[str], arrays: Sequence[np.ndarray]) -> PyTree:
    if len(paths) == 1 and paths[0] == "":
        return arrays[0]
    root: dict[str, Any] = {}
    for path, arr in zip(paths, arrays, strict=True):
        *parents, last = path.split("/")
        node = root
        for key in parents:
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                raise SparseFormatError(f"path '{path}' conflicts with another leaf")
        if last in node:
            raise SparseFormatError(f"path '{path}' conflicts with another leaf")
        node[last] = arr
    return root


def _is_jax(leaf: Any) -> bool:
    return isinstance(leaf, jax.Array | jax.ShapeDtypeStruct)


def decode_sparse(sparse: SparseParams, like: PyTree = None) -> PyTree:
    """The dense params of ``sparse``, bit for bit.

    Args:
      sparse: from :func:`encode_sparse` or :func:`sparse_from_bytes`.
      like: a pytree with the same leaf paths, shapes and dtypes (``nnx.State``,
        dicts, ``jax.ShapeDtypeStruct`` leaves...) whose structure the result takes.
        Without it: the encoded structure when there is one, else nested dicts from
        the paths (``"fc1/kernel"`` -> ``{"fc1": {"kernel": ...}}``).

    Returns:
      The params. Leaves are NumPy arrays, except where ``like`` has a ``jax.Array``
      (or ``ShapeDtypeStruct``) leaf: there they are ``jax.Array``.
    """
    arrays = [_decode_leaf(leaf) for leaf in sparse.leaves]
    if like is None:
        if sparse.treedef is not None:
            return sparse.treedef.unflatten(arrays)
        return _nested(sparse.paths, arrays)
    flat, treedef = jax.tree_util.tree_flatten_with_path(like)
    like_paths = [path_str(p) for p, _ in flat]
    if like_paths != sparse.paths:
        missing = [p for p in sparse.paths if p not in like_paths]
        extra = [p for p in like_paths if p not in sparse.paths]
        raise ValueError(
            "`like` does not have the leaf paths of the sparse params: "
            f"stored but not in like {missing[:8]}, in like but not stored {extra[:8]}"
            + ("" if missing or extra else " (same paths, different order)")
        )
    out = []
    for (_, ref), arr, leaf in zip(flat, arrays, sparse.leaves, strict=True):
        shape, dtype = tuple(np.shape(ref)), np.dtype(getattr(ref, "dtype", np.asarray(ref).dtype))
        if shape != leaf.shape or dtype != leaf.dtype:
            raise ValueError(
                f"leaf '{leaf.path}' is {leaf.dtype}{list(leaf.shape)} in the sparse params "
                f"but {dtype}{list(shape)} in `like`"
            )
        out.append(jnp.asarray(arr) if _is_jax(ref) else arr)
    return treedef.unflatten(out)


# --------------------------------------------------------------------------- bytes


def _le_bytes(arr: np.ndarray) -> bytes:
    if not _LITTLE and arr.dtype.itemsize > 1:  # pragma: no cover - big-endian hosts
        arr = arr.byteswap()
    return np.ascontiguousarray(arr).tobytes()


def _from_le(buf: memoryview, dtype: np.dtype) -> np.ndarray:
    arr = np.frombuffer(buf, dtype=dtype).copy()
    if not _LITTLE and dtype.itemsize > 1:  # pragma: no cover - big-endian hosts
        arr = arr.byteswap()
    return arr


def sparse_to_bytes(sparse: SparseParams, metadata: dict[str, Any] | None = None) -> bytes:
    """Format version 1 (module docstring) of ``sparse``; ``metadata`` must be JSON-able."""
    chunks: list[bytes] = []
    offset = 0
    records = []

    def put(arr: np.ndarray) -> list[int]:
        nonlocal offset
        data = _le_bytes(arr)
        chunks.append(data)
        span = [offset, len(data)]
        offset += len(data)
        return span

    for leaf in sparse.leaves:
        _check_leaf(leaf)
        records.append(
            {
                "path": leaf.path,
                "shape": list(leaf.shape),
                "dtype": leaf.dtype.name,
                "encoding": leaf.encoding,
                "nonzero": leaf.nonzero,
                "values": put(leaf.values),
                "index": None if leaf.index is None else put(leaf.index),
                "index_dtype": leaf.index.dtype.name if leaf.encoding == "relative" else None,
            }
        )
    manifest = json.dumps(
        {
            "format": "admmjax.sparse",
            "version": FORMAT_VERSION,
            "byteorder": "little",
            "leaves": records,
            "metadata": metadata or {},
        },
        separators=(",", ":"),
    ).encode()
    payload = b"".join(chunks)
    digest = hashlib.sha256(manifest + payload).digest()
    header = HEADER.pack(MAGIC, FORMAT_VERSION, 0, len(manifest), len(payload), digest)
    return header + manifest + payload


def _bad(name: str, what: str) -> SparseFormatError:
    return SparseFormatError(f"{name}: {what}")


def _count(v: Any) -> bool:
    """A JSON count: a non-negative int (``true`` is not one)."""
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _leaf_from_record(rec: Any, payload: memoryview, name: str, i: int) -> SparseLeaf:
    where = f"manifest leaf {i}"
    try:
        path = rec["path"]
        shape = tuple(rec["shape"])
        encoding = rec["encoding"]
        nonzero = rec["nonzero"]
        values_span, index_span = rec["values"], rec["index"]
        index_dtype = rec["index_dtype"]
        dtype_name = rec["dtype"]
    except (KeyError, TypeError) as err:
        raise _bad(name, f"{where} is malformed ({err!r})") from None
    where = f"leaf '{path}'"
    if not isinstance(path, str) or not all(_count(d) for d in shape):
        raise _bad(name, f"{where}: bad path or shape {list(shape)}")
    if not _count(nonzero) or encoding not in ENCODINGS:
        raise _bad(name, f"{where}: bad nonzero count or encoding {encoding!r}")
    try:
        dtype = np.dtype(dtype_name)
    except TypeError:
        raise _bad(name, f"{where}: unknown dtype {dtype_name!r}") from None
    if dtype.hasobject or dtype.itemsize == 0 or dtype.fields is not None:
        raise _bad(name, f"{where}: unsupported dtype {dtype_name!r}")

    def take(span: Any, dt: np.dtype, what: str) -> np.ndarray:
        ok = (
            isinstance(span, list)
            and len(span) == 2
            and all(_count(v) for v in span)
            and span[0] + span[1] <= len(payload)
        )
        if not ok:
            raise _bad(name, f"{where}: {what} span {span} is outside the payload")
        if span[1] % dt.itemsize:
            raise _bad(name, f"{where}: {what} length {span[1]} is not a multiple of {dt}")
        return _from_le(payload[span[0] : span[0] + span[1]], dt)

    values = take(values_span, dtype, "values")
    index = None
    if encoding == "bitmask":
        index = take(index_span, np.dtype(np.uint8), "index")
    elif encoding == "relative":
        if index_dtype not in ("uint8", "uint16", "uint32"):
            raise _bad(name, f"{where}: bad index dtype {index_dtype!r}")
        index = take(index_span, np.dtype(index_dtype), "index")
    elif index_span is not None:
        raise _bad(name, f"{where}: a dense leaf has an index span")
    return SparseLeaf(path, shape, dtype, encoding, nonzero, values, index)


def sparse_from_bytes(
    data: bytes | bytearray | memoryview, *, name: str = "<bytes>"
) -> tuple[SparseParams, dict[str, Any]]:
    """Parses and checks format version 1; returns ``(sparse, metadata)``.

    ``name`` (e.g. the file path) starts every error message. Raises
    :class:`SparseFormatError` for a bad magic, an unsupported version, a size that
    disagrees with the header (truncated or trailing bytes), a checksum mismatch or
    an inconsistent manifest; the arrays are decoded once to check the indices.
    """
    buf = memoryview(data).cast("B")
    total = len(buf)
    if total == 0:
        raise _bad(name, "empty (0 bytes); expected an admmjax sparse file")
    if bytes(buf[: len(MAGIC)]) != MAGIC[: min(total, len(MAGIC))]:
        raise _bad(
            name,
            f"not an admmjax sparse file (bad magic {bytes(buf[:8])!r}, expected {MAGIC!r})",
        )
    if total < HEADER_SIZE:
        raise _bad(name, f"truncated: {total} bytes, shorter than the {HEADER_SIZE}-byte header")
    _, version, flags, m, p, digest = HEADER.unpack_from(buf)
    if version != FORMAT_VERSION:
        raise _bad(
            name,
            f"unsupported format version {version} (this admmjax reads version "
            f"{FORMAT_VERSION}); upgrade admmjax or re-export the model",
        )
    if flags != 0:
        raise _bad(
            name,
            f"reserved header flags are set (0x{flags:04x}, expected 0x0000 in format "
            f"version {FORMAT_VERSION}); the file is corrupted or from a newer writer",
        )
    expected = HEADER_SIZE + m + p
    if total < expected:
        raise _bad(
            name,
            f"truncated payload: the header declares {expected} bytes "
            f"(manifest {m} + payload {p}), the data has {total}",
        )
    if total > expected:
        raise _bad(name, f"{total - expected} unexpected bytes after the declared {expected}")
    body = buf[HEADER_SIZE:]
    actual = hashlib.sha256(body).digest()
    if actual != digest:
        raise _bad(
            name,
            f"checksum mismatch: SHA-256 of the content is {actual.hex()[:16]}..., "
            f"the header says {digest.hex()[:16]}...; the data is corrupted",
        )
    try:
        manifest = json.loads(bytes(body[:m]).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise _bad(name, f"the manifest is not valid JSON ({err})") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("leaves"), list):
        raise _bad(name, "the manifest has no list of leaves")
    if manifest.get("format") != "admmjax.sparse" or manifest.get("version") != version:
        raise _bad(name, "the manifest's format/version disagree with the header")
    payload = body[m:]
    leaves = tuple(
        _leaf_from_record(rec, payload, name, i) for i, rec in enumerate(manifest["leaves"])
    )
    sparse = SparseParams(leaves, None)
    try:
        for leaf in leaves:  # every size is checked before the first leaf is allocated
            _check_leaf(leaf)
        total = sum(leaf.size * leaf.dtype.itemsize for leaf in leaves)
        _check_decoded_size("the leaves", "together, their shapes", total)
        for leaf in leaves:
            _decode_leaf(leaf)
    except SparseFormatError as err:
        raise _bad(name, str(err)) from None
    metadata = manifest.get("metadata") or {}
    return sparse, metadata

"""MNIST-like data through tensorflow-datasets without TensorFlow, and seeded batches.

Loading (`load_split`)
    Any TFDS dataset whose features are a 28x28x1 uint8 ``image`` and a 10-class
    ``label`` (mnist, fashion_mnist, kmnist, ...) is read with ``tfds.data_source``
    (array_record files; images decoded by tfds with pillow) and returned as
    ``images`` uint8 (N, 28, 28, 1) and ``labels`` int32 (N,). The data directory is
    ``data_dir``, else ``$TFDS_DATA_DIR``, else ``~/tensorflow_datasets``; the directory
    to point at is the one that contains ``mnist/3.0.1/``.

    Decoded arrays are cached as ``.npz`` under ``$ADMMJAX_CACHE`` (default
    ``~/.cache/admmjax``), never in the data directory (it may be read-only and
    shared), keyed by dataset name, version, split and source. Cache files are written
    to a temporary file and renamed, and are validated on load (zip CRCs, dtypes,
    shapes, metadata, example count); a bad file is rebuilt. Loaded arrays are also
    memoised in-process and marked read-only, because every caller shares them.

TF-free preparation (`prepare_idx_dataset`)
    TFDS's own mnist/fashion_mnist/kmnist builders need TensorFlow to *prepare* the
    array_record files. Where a dataset is not prepared in the data directory, these
    three are instead built from the official IDX ``.gz`` files: downloaded by
    ``tfds.download.DownloadManager`` and verified against the checksums that TFDS
    registers for the builder, parsed with NumPy, and written straight to the cache.
    The cache file *is* the product: nothing is written in TFDS format. The record
    order is the IDX files' order, which differs from the order of a TFDS-prepared
    copy (TFDS shuffles records when writing), so the two sources are cached under
    different keys and the same seed gives different batches on each.

Batches (`iterate_batches`, `iterate_eval`)
    The permutation of epoch ``e`` is a pure function of ``(seed, e)``, so a resumed
    run restarts exactly at ``(epoch, start_step)``. With ``num_shards > 1`` every
    host draws the same global batch and keeps its contiguous slice
    ``[shard_index * b, (shard_index + 1) * b)`` with ``b = batch_size // num_shards``,
    which is the layout of a global array sharded on its batch axis.

Images stay uint8 until `to_float`, called on device inside the jitted step: a quarter
of the host memory and transfer of float32.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import logging
import os
import re
import socket
import tempfile
import threading
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from experiments.data import check_eval_subset
from experiments.data.sharding import check_shard

__all__ = [
    "IDX_DATASETS",
    "ArraySource",
    "DatasetUnavailableError",
    "cache_dir",
    "cache_path",
    "check_features",
    "clear_memo",
    "epoch_permutation",
    "idx_urls",
    "iterate_batches",
    "iterate_eval",
    "load_split",
    "parse_idx",
    "prepare_idx_dataset",
    "read_idx",
    "steps_per_epoch",
    "tfds_data_dir",
    "to_float",
]

log = logging.getLogger(__name__)

IMAGE_SHAPE = (28, 28, 1)
NUM_CLASSES = 10

# Bump when the cache layout changes: old files then fail validation and are rebuilt.
_CACHE_FORMAT = 1

# Datasets with a TF-free prepare path: same four IDX files at the builder's `URL`.
IDX_DATASETS = ("mnist", "fashion_mnist", "kmnist")
_IDX_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}

_MEMO: dict[str, tuple[np.ndarray, np.ndarray]] = {}
_MEMO_LOCK = threading.Lock()


class DatasetUnavailableError(FileNotFoundError):
    """The dataset is neither prepared in the data dir, nor cached, nor preparable."""


# --------------------------------------------------------------------------- paths


def tfds_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """The TFDS data dir to read: ``data_dir``, else ``$TFDS_DATA_DIR``, else the default.

    Resolved here at call time because tfds reads ``$TFDS_DATA_DIR`` once, when it is
    imported; setting the variable later would otherwise be ignored.
    """
    if data_dir is None:
        data_dir = os.environ.get("TFDS_DATA_DIR") or "~/tensorflow_datasets"
    return Path(data_dir).expanduser()


def cache_dir(root: str | os.PathLike | None = None) -> Path:
    """The admmjax cache root: ``root``, else ``$ADMMJAX_CACHE``, else ``~/.cache/admmjax``."""
    if root is None:
        root = os.environ.get("ADMMJAX_CACHE") or "~/.cache/admmjax"
    return Path(root).expanduser()


def _slug(text: str) -> str:
    """A file-name-safe form of ``text``; a hash suffix keeps distinct inputs distinct."""
    if re.fullmatch(r"[A-Za-z0-9_.-]+", text):
        return text
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_")
    return f"{safe}-{hashlib.sha256(text.encode()).hexdigest()[:8]}"


def cache_path(
    name: str, version: str, split: str, source: str, root: str | os.PathLike | None = None
) -> Path:
    """Where the decoded arrays of (name, version, split) from ``source`` are cached.

    ``source`` is ``"tfds"`` (decoded from a prepared TFDS copy) or ``"idx"`` (built
    from the official IDX files); their record orders differ.
    """
    folder = cache_dir(root) / "datasets" / _slug(name) / _slug(str(version))
    return folder / f"{_slug(split)}.{source}.npz"


# --------------------------------------------------------------------------- cache


def _cache_meta(name: str, version: str, split: str, source: str) -> dict[str, Any]:
    return {
        "format": _CACHE_FORMAT,
        "name": name,
        "version": str(version),
        "split": split,
        "source": source,
    }


def _write_cache(
    path: Path, images: np.ndarray, labels: np.ndarray, meta: Mapping[str, Any]
) -> None:
    """Write atomically: a temporary file in the same directory, then ``os.replace``.

    A crash leaves at most a stray ``.tmp`` file, never a truncated cache under the
    real name, and concurrent writers (several hosts sharing a home) each replace the
    file with a complete one.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {**meta, "num_examples": len(labels)}
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o644)  # mkstemp makes it 0600; others may share the cache
        with os.fdopen(fd, "wb") as f:
            np.savez(f, images=images, labels=labels, meta=np.array(json.dumps(meta)))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _read_cache(
    path: Path, meta: Mapping[str, Any], num_examples: int | None
) -> tuple[np.ndarray, np.ndarray] | None:
    """The cached arrays, or None when the file is missing, corrupt or stale."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            # Reading each member to the end checks its zip CRC-32: truncation and bit
            # flips raise here.
            images, labels, stored = z["images"], z["labels"], json.loads(str(z["meta"]))
        n = len(labels)
        problems = [
            what
            for what, bad in [
                ("metadata", any(stored.get(k) != v for k, v in meta.items())),
                ("count in metadata", stored.get("num_examples") != n),
                ("example count", num_examples is not None and n != num_examples),
                (
                    "image dtype/shape",
                    images.dtype != np.uint8 or images.shape != (n, *IMAGE_SHAPE),
                ),
                ("label dtype/shape", labels.dtype != np.int32 or labels.shape != (n,)),
            ]
            if bad
        ]
        if problems:
            raise ValueError("mismatched " + ", ".join(problems))
    except Exception as e:  # Any unreadable cache is rebuilt, never fatal.
        log.warning(
            "Ignoring bad cache file %s (%s: %s); rebuilding it.", path, type(e).__name__, e
        )
        return None
    return images, labels


def _frozen(images: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    images.flags.writeable = False
    labels.flags.writeable = False
    return images, labels


def clear_memo() -> None:
    """Forget the in-process copies of loaded splits (the on-disk cache stays)."""
    with _MEMO_LOCK:
        _MEMO.clear()


# --------------------------------------------------------------------------- features


def check_features(features: Any, name: str) -> None:
    """Raise ValueError unless ``features`` has a 28x28x1 uint8 image and a 10-class label."""
    import tensorflow_datasets as tfds

    expected = (
        "features {'image': Image(shape=(28, 28, 1), dtype=uint8), "
        "'label': ClassLabel(num_classes=10)}"
    )
    image = features["image"] if "image" in features else None
    label = features["label"] if "label" in features else None
    ok = (
        isinstance(image, tfds.features.Image)
        and tuple(image.shape) == IMAGE_SHAPE
        and np.dtype(image.np_dtype) == np.uint8
        and isinstance(label, tfds.features.ClassLabel)
        and label.num_classes == NUM_CLASSES
    )
    if not ok:
        raise ValueError(f"dataset {name!r} is not MNIST-like: expected {expected}, got {features}")


# --------------------------------------------------------------------------- loading


def load_split(
    name: str = "mnist",
    split: str = "train",
    data_dir: str | os.PathLike | None = None,
    *,
    cache_root: str | os.PathLike | None = None,
    download: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Images uint8 (N, 28, 28, 1) and labels int32 (N,) of one split (read-only arrays).

    Reads the TFDS-prepared copy in ``data_dir`` (see `tfds_data_dir`) through the
    decode cache. Where the dataset is not prepared there, uses the IDX-built cache,
    building it with `prepare_idx_dataset` when ``download`` is true (mnist,
    fashion_mnist and kmnist only). Raises ValueError for unknown or non-MNIST-like
    datasets and `DatasetUnavailableError` when no source is available.
    """
    import tensorflow_datasets as tfds

    data_dir = tfds_data_dir(data_dir)
    try:
        # download=False: tfds's own prepare path would need TensorFlow.
        source = tfds.data_source(name, split=split, data_dir=os.fspath(data_dir), download=False)
    except tfds.core.DatasetNotFoundError:
        raise ValueError(
            f"unknown TFDS dataset {name!r}; use an MNIST-like TFDS name such as "
            f"{', '.join(IDX_DATASETS)}"
        ) from None
    except Exception as e:
        builder = _builder(name, data_dir)
        if builder.is_prepared():
            raise  # Prepared but unreadable (e.g. tfrecord format): tfds says why.
        return _load_unprepared(builder, name, split, data_dir, cache_root, download, e)

    info = source.dataset_info
    check_features(info.features, name)
    path = cache_path(name, str(info.version), split, "tfds", cache_root)
    meta = _cache_meta(name, str(info.version), split, "tfds")
    return _load_cached(path, meta, len(source), lambda: _decode_all(source))


def _load_cached(
    path: Path,
    meta: Mapping[str, Any],
    num_examples: int | None,
    build: Callable[[], tuple[np.ndarray, np.ndarray]],
    *,
    write: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Memo, then the disk cache, then ``build()`` (its result cached when ``write``)."""
    key = os.fspath(path)
    with _MEMO_LOCK:
        hit = _MEMO.get(key)
    if hit is not None and (num_examples is None or len(hit[1]) == num_examples):
        return hit
    arrays = _read_cache(path, meta, num_examples)
    if arrays is None:
        arrays = build()
        if write:
            try:
                _write_cache(path, *arrays, meta)
            except OSError as e:
                # A read-only cache only costs a re-decode next time; don't fail the run.
                log.warning("Could not write data cache %s: %s", path, e)
    arrays = _frozen(*arrays)
    with _MEMO_LOCK:
        _MEMO[key] = arrays
    return arrays


def _decode_all(source: Any) -> tuple[np.ndarray, np.ndarray]:
    """Decode every record of a tfds data source into preallocated arrays."""
    n = len(source)
    images = np.empty((n, *IMAGE_SHAPE), np.uint8)
    labels = np.empty((n,), np.int32)
    chunk = 4096
    for start in range(0, n, chunk):
        keys = list(range(start, min(start + chunk, n)))
        try:
            records = source.__getitems__(keys)  # Batched reads: ~1.5x faster.
        except TypeError:
            # tfds.testing.mock_data (4.9.10) installs a __getitems__ that fails when
            # called; per-record reads work everywhere.
            records = [source[k] for k in keys]
        for i, record in zip(keys, records, strict=True):
            images[i] = record["image"]
            labels[i] = record["label"]
    _check_labels(labels, "decoded")
    return images, labels


def _builder(name: str, data_dir: Path) -> Any:
    import tensorflow_datasets as tfds

    return tfds.builder(name, data_dir=os.fspath(data_dir))


def _load_unprepared(
    builder: Any,
    name: str,
    split: str,
    data_dir: Path,
    cache_root: str | os.PathLike | None,
    download: bool,
    cause: BaseException,
) -> tuple[np.ndarray, np.ndarray]:
    """Serve a split that is not prepared in ``data_dir`` from the IDX-built cache."""
    check_features(builder.info.features, name)
    version = str(builder.info.version)
    path = cache_path(name, version, split, "idx", cache_root)
    meta = _cache_meta(name, version, split, "idx")
    searched = Path(builder.data_dir)
    manual = cache_dir(cache_root) / "manual" / name
    how = (
        f"To use a prepared copy, point TFDS_DATA_DIR or --data-dir at the directory "
        f"that contains '{name}/{version}/' (e.g. a shared '.../tfds' holding the "
        f"array_record files and dataset_info.json)."
    )

    def build() -> tuple[np.ndarray, np.ndarray]:
        if name not in IDX_DATASETS:
            raise DatasetUnavailableError(
                f"dataset {name!r} is not prepared in {searched} (TFDS data dir "
                f"{data_dir}). {how} Without TensorFlow admmjax can prepare only "
                f"{', '.join(IDX_DATASETS)}."
            ) from cause
        if split not in _IDX_FILES:
            raise DatasetUnavailableError(
                f"dataset {name!r} is not prepared in {searched}, and split {split!r} "
                f"cannot be built from the IDX files (only {', '.join(_IDX_FILES)}). {how}"
            ) from cause
        if not download:
            raise DatasetUnavailableError(
                f"dataset {name!r} is not prepared in {searched} and download=False. {how} "
                f"Or put the four official .gz files in {manual}."
            ) from cause
        try:
            prepare_idx_dataset(name, root=cache_root)
        except Exception as e:
            if _is_checksum_error(e):
                raise
            raise DatasetUnavailableError(
                f"dataset {name!r} is not prepared in {searched}, and fetching the official "
                f"IDX files failed ({type(e).__name__}: {e}); offline? {how} Or put the four "
                f"official .gz files in {manual} and retry."
            ) from e
        arrays = _read_cache(path, meta, None)
        if arrays is None:
            raise DatasetUnavailableError(f"prepared cache {path} is missing or unreadable")
        return arrays

    return _load_cached(path, meta, None, build, write=False)


def _is_checksum_error(e: BaseException) -> bool:
    from tensorflow_datasets.core.download.download_manager import NonMatchingChecksumError

    return isinstance(e, NonMatchingChecksumError)


# --------------------------------------------------------------------------- IDX

_IDX_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def parse_idx(data: bytes) -> np.ndarray:
    """Parse an (uncompressed) IDX file: 0, 0, dtype code, ndim, big-endian u32 dims, data."""
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise ValueError("not an IDX file: the magic number must start with two zero bytes")
    code, ndim = data[2], data[3]
    if code not in _IDX_DTYPES:
        raise ValueError(f"IDX: unknown data type code 0x{code:02x}")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(f"IDX: truncated header ({len(data)} bytes for {ndim} dims)")
    shape = tuple(int(d) for d in np.frombuffer(data, ">u4", count=ndim, offset=4))
    dtype = _IDX_DTYPES[code]
    expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) != expected:
        raise ValueError(f"IDX: {len(data)} bytes, expected {expected} for shape {shape}")
    array = np.frombuffer(data, dtype, offset=header).reshape(shape)
    return array.astype(dtype.newbyteorder("="))  # native order, and a writable copy


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file, gunzipping it when it starts with the gzip magic bytes."""
    raw = Path(path).read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    return parse_idx(raw)


def _check_labels(labels: np.ndarray, what: str) -> None:
    if labels.size and (labels.min() < 0 or labels.max() >= NUM_CLASSES):
        raise ValueError(
            f"{what} labels outside [0, {NUM_CLASSES}): {labels.min()}..{labels.max()}"
        )


def _idx_arrays(images: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Validate parsed IDX arrays and convert them to the (N, 28, 28, 1) uint8 / int32 layout."""
    if images.dtype != np.uint8 or images.shape[1:] != IMAGE_SHAPE[:2]:
        raise ValueError(
            f"IDX images: expected uint8 (N, 28, 28), got {images.dtype} {images.shape}"
        )
    if labels.ndim != 1 or len(labels) != len(images):
        raise ValueError(f"IDX labels: expected ({len(images)},), got {labels.shape}")
    labels = labels.astype(np.int32)
    _check_labels(labels, "IDX")
    return np.ascontiguousarray(images[..., None]), labels


def idx_urls(name: str) -> dict[str, str]:
    """The official IDX files of ``name``, keyed ``"<split>/images"``, ``"<split>/labels"``.

    The base URL is the TFDS builder's (``tfds.image_classification.mnist``), so the
    files are the ones whose checksums TFDS registers.
    """
    import tensorflow_datasets as tfds

    if name not in IDX_DATASETS:
        raise ValueError(f"no TF-free prepare path for {name!r}; supported: {IDX_DATASETS}")
    base = tfds.builder_cls(name).URL
    return {
        f"{split}/{kind}": urllib.parse.urljoin(base, filename)
        for split, files in _IDX_FILES.items()
        for kind, filename in zip(("images", "labels"), files, strict=True)
    }


def prepare_idx_dataset(
    name: str,
    *,
    root: str | os.PathLike | None = None,
    url_infos: Mapping[str, Any] | None = None,
) -> dict[str, Path]:
    """Build the cache of ``name`` (mnist/fashion_mnist/kmnist) from the official IDX files.

    Files are fetched by ``tfds.download.DownloadManager`` into ``<cache>/downloads``
    with checksum validation forced (``url_infos`` defaults to the checksums TFDS
    registers for the builder; a mismatch raises tfds's NonMatchingChecksumError).
    Files already in ``<cache>/manual/<name>/`` under their official names are used
    instead of downloading, after the same checksum check. Returns the cache path of
    each split.
    """
    import tensorflow_datasets as tfds

    urls = idx_urls(name)  # Validates the name first.
    builder_cls = tfds.builder_cls(name)
    version = str(builder_cls.VERSION)
    url_infos = dict(builder_cls.url_infos or {}) if url_infos is None else dict(url_infos)
    if missing := sorted(set(urls.values()) - set(url_infos)):
        raise ValueError(f"no registered checksums for {missing}; refusing unverified files")
    root_dir = cache_dir(root)
    manual_dir = root_dir / "manual" / name
    pending = [u for u in urls.values() if not (manual_dir / url_infos[u].filename).is_file()]
    if pending:
        _check_reachable(pending)
    manager = tfds.download.DownloadManager(
        download_dir=root_dir / "downloads",
        manual_dir=manual_dir,
        url_infos=url_infos,
        dataset_name=name,
        force_checksums_validation=True,
    )
    files = manager.download(urls)
    out = {}
    for split in _IDX_FILES:
        images, labels = _idx_arrays(
            read_idx(files[f"{split}/images"]), read_idx(files[f"{split}/labels"])
        )
        path = cache_path(name, version, split, "idx", root)
        _write_cache(path, images, labels, _cache_meta(name, version, split, "idx"))
        out[split] = path
    return out


def _check_reachable(urls: list[str], timeout: float = 5.0) -> None:
    """Raise ConnectionError fast when a host is unreachable.

    tfds retries each URL ten times with backoff and no timeout: offline, a failed
    prepare took 3.5 minutes before this check. Skipped behind a proxy, which
    requests uses but a plain socket would not.
    """
    if urllib.request.getproxies():
        return
    for host, port in sorted({_host_port(u) for u in urls}):
        try:
            socket.create_connection((host, port), timeout=timeout).close()
        except OSError as e:
            raise ConnectionError(f"cannot reach {host}:{port} ({e})") from e


def _host_port(url: str) -> tuple[str, int]:
    parts = urllib.parse.urlsplit(url)
    return parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)


# --------------------------------------------------------------------------- batches


def steps_per_epoch(num_examples: int, batch_size: int, *, drop_remainder: bool = True) -> int:
    """Number of (global) batches in one epoch."""
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    if drop_remainder:
        return num_examples // batch_size
    return -(-num_examples // batch_size)


def epoch_permutation(num_examples: int, *, seed: int, epoch: int) -> np.ndarray:
    """The example order of ``epoch``: a pure function of ``(seed, epoch)``.

    Uses ``np.random.default_rng([seed, epoch])`` (SeedSequence), so epochs are
    independent streams and no generator state needs checkpointing; stable for a given
    NumPy version.
    """
    if seed < 0 or epoch < 0:
        raise ValueError(f"seed and epoch must be non-negative, got {seed}, {epoch}")
    return np.random.default_rng([seed, epoch]).permutation(num_examples)


def iterate_batches(
    images: np.ndarray,
    labels: np.ndarray,
    batch_size: int,
    *,
    seed: int,
    epoch: int,
    shuffle: bool = True,
    drop_remainder: bool = True,
    start_step: int = 0,
    shard_index: int = 0,
    num_shards: int = 1,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield the (x, y) NumPy batches of one epoch, from step ``start_step`` on.

    ``batch_size`` is global; with ``num_shards > 1`` each call yields this shard's
    contiguous ``batch_size // num_shards`` rows of every global batch. The last
    partial batch is kept only with ``drop_remainder=False`` (one host only).
    """
    if len(images) != len(labels):
        raise ValueError(f"{len(images)} images but {len(labels)} labels")
    per_shard = check_shard(batch_size, shard_index, num_shards)
    if not drop_remainder and num_shards > 1:
        raise ValueError("drop_remainder=False cannot split the last batch evenly over shards")
    n = len(labels)
    steps = steps_per_epoch(n, batch_size, drop_remainder=drop_remainder)
    if not 0 <= start_step <= steps:
        raise ValueError(f"start_step {start_step} outside [0, {steps}]")
    order = epoch_permutation(n, seed=seed, epoch=epoch) if shuffle else np.arange(n)
    for step in range(start_step, steps):
        lo = step * batch_size + shard_index * per_shard
        idx = order[lo : min(lo + per_shard, n)]
        yield images[idx], labels[idx]


def iterate_eval(
    images: np.ndarray,
    labels: np.ndarray,
    batch_size: int,
    *,
    shard_index: int = 0,
    num_shards: int = 1,
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Yield (x, y, valid) over all examples in order, every batch of the same shape.

    The last batch is padded (zeros, label 0) up to ``batch_size`` so a jitted eval
    step compiles once; ``valid`` (bool) marks the real rows: count correct
    predictions as ``sum(valid & (pred == y))``. Sharded as in `iterate_batches`.
    """
    if len(images) != len(labels):
        raise ValueError(f"{len(images)} images but {len(labels)} labels")
    per_shard = check_shard(batch_size, shard_index, num_shards)
    n = len(labels)
    for start in range(0, n, batch_size):
        lo = start + shard_index * per_shard
        hi = min(lo + per_shard, n)
        x = np.zeros((per_shard, *images.shape[1:]), images.dtype)
        y = np.zeros((per_shard,), labels.dtype)
        valid = np.zeros((per_shard,), bool)
        count = max(hi - lo, 0)
        x[:count], y[:count], valid[:count] = images[lo:hi], labels[lo:hi], True
        yield x, y, valid


def to_float(x: Any) -> jax.Array:
    """Scale uint8 images to float32 in [0, 1] (call it inside the jitted step)."""
    return jnp.asarray(x, jnp.float32) * (1.0 / 255.0)


# --------------------------------------------------------------------------- source


class ArraySource:
    """An MNIST-like dataset held in memory, as :class:`experiments.train.Pipeline` reads it.

    Loads both splits with `load_split` (``train`` and ``test``), keeping the first
    ``train_subset`` training images when it is > 0, and the first ``eval_subset``
    images of the test and validation splits when it is > 0. The batch methods are
    `iterate_batches` and `iterate_eval` over these arrays; other sources (e.g.
    :class:`experiments.data.imagenet.ImageNetSource`) offer the same interface:
    ``num_train``, ``num_test``, ``image_shape``, ``top5``, ``train_batches`` and
    ``eval_batches``.
    """

    top5 = False  # the pipeline reports top-1 accuracy only

    def __init__(
        self, name: str = "mnist", data_dir: str | os.PathLike | None = None, *,
        train_subset: int = 0, validation_size: int = 0, eval_subset: int = 0,
    ):  # fmt: skip
        check_eval_subset(eval_subset)
        self.train_x, self.train_y = load_split(name, "train", data_dir)
        if train_subset:
            self.train_x = self.train_x[:train_subset]
            self.train_y = self.train_y[:train_subset]
        if not 0 <= validation_size < len(self.train_x):
            raise ValueError(
                f"validation_size {validation_size} must be in [0, {len(self.train_x)}) "
                f"(the {len(self.train_x)} training images used)"
            )
        # The held-out split: the last `validation_size` training images, never trained on.
        n = len(self.train_x) - validation_size
        self.val_x, self.val_y = self.train_x[n:], self.train_y[n:]
        self.train_x, self.train_y = self.train_x[:n], self.train_y[:n]
        self.test_x, self.test_y = load_split(name, "test", data_dir)
        if eval_subset:
            self.val_x, self.val_y = self.val_x[:eval_subset], self.val_y[:eval_subset]
            self.test_x, self.test_y = self.test_x[:eval_subset], self.test_y[:eval_subset]
        self.image_shape = tuple(self.train_x.shape[1:])

    @property
    def num_train(self) -> int:
        return len(self.train_x)

    @property
    def num_test(self) -> int:
        return len(self.test_x)

    @property
    def num_validation(self) -> int:
        return len(self.val_x)

    def validation_batches(
        self, batch_size: int, *, shard_index: int = 0, num_shards: int = 1
    ) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """`iterate_eval` over the held-out validation arrays."""
        if not len(self.val_x):
            raise ValueError("no validation split: set validation_size > 0")
        return iterate_eval(
            self.val_x, self.val_y, batch_size, shard_index=shard_index, num_shards=num_shards
        )

    def train_batches(
        self, batch_size: int, *, seed: int, epoch: int, start_step: int = 0,
        shard_index: int = 0, num_shards: int = 1,
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:  # fmt: skip
        """`iterate_batches` over the training arrays (shuffled by ``(seed, epoch)``)."""
        return iterate_batches(
            self.train_x, self.train_y, batch_size, seed=seed, epoch=epoch,
            start_step=start_step, shard_index=shard_index, num_shards=num_shards,
        )  # fmt: skip

    def eval_batches(
        self, batch_size: int, *, shard_index: int = 0, num_shards: int = 1
    ) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """`iterate_eval` over the test arrays."""
        return iterate_eval(
            self.test_x, self.test_y, batch_size, shard_index=shard_index, num_shards=num_shards
        )

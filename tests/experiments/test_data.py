"""experiments.data: TFDS loading without TensorFlow, the decode cache, IDX, batches."""

from __future__ import annotations

import gzip
import hashlib
import os
import struct
from pathlib import Path

import numpy as np
import pytest
import tensorflow_datasets as tfds

from experiments.data import mnist as data

MOCK = tfds.testing.MockPolicy.USE_CODE
REAL_TFDS = Path(__file__).resolve().parents[2].parent / "shared" / "tfds"
# Resolved at import, before the fixture below points $ADMMJAX_CACHE at a tmp dir.
USER_CACHE = data.cache_dir()


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    """Every test gets its own cache dir and an empty in-process memo."""
    monkeypatch.setenv("ADMMJAX_CACHE", str(tmp_path / "cache"))
    data.clear_memo()
    yield
    data.clear_memo()


def _empty_data_dir(tmp_path: Path) -> Path:
    d = tmp_path / "tfds"
    d.mkdir(parents=True)
    return d


# --------------------------------------------------------------------------- IDX


def idx_bytes(array: np.ndarray) -> bytes:
    codes = {np.uint8: 0x08, np.int8: 0x09, np.int16: 0x0B, np.int32: 0x0C, np.float32: 0x0D}
    code = codes[array.dtype.type]
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32])
def test_parse_idx_round_trip(dtype):
    a = (np.arange(2 * 3 * 4) - 5).astype(dtype).reshape(2, 3, 4)
    out = data.parse_idx(idx_bytes(a))
    np.testing.assert_array_equal(out, a)
    assert out.dtype == np.dtype(dtype) and out.dtype.isnative and out.flags.writeable


def test_read_idx_gzip_and_plain(tmp_path):
    labels = np.array([5, 0, 4, 1, 9], np.uint8)
    (tmp_path / "l.gz").write_bytes(gzip.compress(idx_bytes(labels)))
    (tmp_path / "l").write_bytes(idx_bytes(labels))
    np.testing.assert_array_equal(data.read_idx(tmp_path / "l.gz"), labels)
    np.testing.assert_array_equal(data.read_idx(tmp_path / "l"), labels)


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        (b"\x01\x00\x08\x01\x00\x00\x00\x01\x07", "magic"),
        (b"\x00\x00\x07\x01\x00\x00\x00\x01\x07", "type code"),
        (b"\x00\x00\x08\x02\x00\x00\x00\x01", "truncated header"),
        (b"\x00\x00\x08\x01\x00\x00\x00\x02\x07", "expected 10"),  # short data
        (b"\x00\x00\x08\x01\x00\x00\x00\x01\x07\x07", "expected 9"),  # trailing bytes
    ],
)
def test_parse_idx_rejects_malformed(raw, match):
    with pytest.raises(ValueError, match=match):
        data.parse_idx(raw)


def test_idx_arrays_layout_and_checks():
    images = np.zeros((3, 28, 28), np.uint8)
    x, y = data._idx_arrays(images, np.array([0, 9, 3], np.uint8))
    assert x.shape == (3, 28, 28, 1) and x.dtype == np.uint8 and y.dtype == np.int32
    with pytest.raises(ValueError, match="labels"):
        data._idx_arrays(images, np.array([0, 1], np.uint8))
    with pytest.raises(ValueError, match="outside"):
        data._idx_arrays(images, np.array([0, 1, 10], np.uint8))
    with pytest.raises(ValueError, match="28, 28"):
        data._idx_arrays(np.zeros((3, 32, 32), np.uint8), np.zeros(3, np.uint8))


@pytest.mark.parametrize("name", data.IDX_DATASETS)
def test_idx_urls_have_registered_checksums(name):
    urls = data.idx_urls(name)
    infos = tfds.builder_cls(name).url_infos
    assert len(urls) == 4 and set(urls.values()) <= set(infos)


def _synthetic_idx_files(manual: Path, n: dict[str, int]) -> dict[str, dict]:
    """Write fake official .gz files into ``manual``; return their arrays and url_infos."""
    manual.mkdir(parents=True)
    rng = np.random.default_rng(0)
    arrays, infos = {}, {}
    urls = data.idx_urls("mnist")
    for split, count in n.items():
        images = rng.integers(0, 256, (count, 28, 28), np.uint8)
        labels = rng.integers(0, 10, count).astype(np.uint8)
        arrays[split] = (images, labels)
        for kind, a in (("images", images), ("labels", labels)):
            url = urls[f"{split}/{kind}"]
            blob = gzip.compress(idx_bytes(a))
            filename = url.rsplit("/", 1)[1]
            (manual / filename).write_bytes(blob)
            infos[url] = tfds.download.checksums.UrlInfo(
                size=len(blob), checksum=hashlib.sha256(blob).hexdigest(), filename=filename
            )
    return {"arrays": arrays, "url_infos": infos}


def test_prepare_from_manual_files_then_load_split(tmp_path, monkeypatch):
    """The TF-free prepare path end to end, offline: manual dir + checksums -> cache."""
    root = data.cache_dir()
    fake = _synthetic_idx_files(root / "manual" / "mnist", {"train": 7, "test": 3})
    monkeypatch.setattr(data, "_check_reachable", _no_network)
    paths = data.prepare_idx_dataset("mnist", url_infos=fake["url_infos"])
    assert {p.name for p in paths.values()} == {"train.idx.npz", "test.idx.npz"}

    # Not prepared in the data dir: load_split serves the IDX-built cache, no download.
    for split, (images, labels) in fake["arrays"].items():
        x, y = data.load_split("mnist", split, _empty_data_dir(tmp_path / split), download=False)
        np.testing.assert_array_equal(x[..., 0], images)
        np.testing.assert_array_equal(y, labels)
        assert x.dtype == np.uint8 and y.dtype == np.int32


def test_prepare_rejects_wrong_checksum(monkeypatch):
    root = data.cache_dir()
    fake = _synthetic_idx_files(root / "manual" / "mnist", {"train": 2, "test": 2})
    infos = dict(fake["url_infos"])
    url = data.idx_urls("mnist")["train/images"]
    infos[url] = tfds.download.checksums.UrlInfo(
        size=infos[url].size, checksum="0" * 64, filename=infos[url].filename
    )
    monkeypatch.setattr(data, "_check_reachable", _no_network)
    with pytest.raises(Exception, match="wrong checksum"):
        data.prepare_idx_dataset("mnist", url_infos=infos)
    assert not data.cache_path("mnist", "3.0.1", "train", "idx").exists()


def _no_network(urls):
    raise ConnectionError("simulated offline")


# --------------------------------------------------------------------------- errors


def test_unknown_dataset_is_a_value_error(tmp_path):
    with pytest.raises(ValueError, match="unknown TFDS dataset 'no_such_dataset'"):
        data.load_split("no_such_dataset", "train", _empty_data_dir(tmp_path))


def test_not_mnist_like_dataset_is_rejected():
    with tfds.testing.mock_data(num_examples=2, policy=MOCK):
        with pytest.raises(ValueError, match=r"'cifar10' is not MNIST-like.*\(28, 28, 1\)"):
            data.load_split("cifar10", "train")


def test_missing_data_dir_message_offline(tmp_path, monkeypatch):
    empty = _empty_data_dir(tmp_path)
    with pytest.raises(data.DatasetUnavailableError) as info:
        data.load_split("mnist", "train", empty, download=False)
    msg = str(info.value)
    assert str(empty / "mnist" / "3.0.1") in msg and "TFDS_DATA_DIR" in msg
    assert "--data-dir" in msg

    # download=True but offline: a fast, clear failure (tfds alone retries for minutes).
    monkeypatch.setattr(data, "_check_reachable", _no_network)
    with pytest.raises(data.DatasetUnavailableError, match=r"simulated offline.*TFDS_DATA_DIR"):
        data.load_split("mnist", "train", empty)


def test_data_dir_from_env_at_call_time(tmp_path, monkeypatch):
    empty = _empty_data_dir(tmp_path)
    monkeypatch.setenv("TFDS_DATA_DIR", str(empty))
    assert data.tfds_data_dir() == empty
    with pytest.raises(data.DatasetUnavailableError, match=str(empty)):
        data.load_split("fashion_mnist", "test", download=False)


def test_no_tf_free_path_for_other_datasets(tmp_path):
    # EMNIST/mnist is MNIST-like but has no IDX prepare path here.
    with pytest.raises(data.DatasetUnavailableError, match="can prepare only"):
        data.load_split("emnist/mnist", "train", _empty_data_dir(tmp_path))


# --------------------------------------------------------------------------- mock tfds


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist", "kmnist"])
def test_load_split_mocked_any_mnist_like(name):
    with tfds.testing.mock_data(num_examples=9, policy=MOCK):
        x, y = data.load_split(name, "train")
    assert x.shape == (9, 28, 28, 1) and x.dtype == np.uint8
    assert y.shape == (9,) and y.dtype == np.int32 and 0 <= y.min() and y.max() < 10
    assert not x.flags.writeable  # shared with the memo
    assert data.cache_path(name, "3.0.1", "train", "tfds").is_file()


def test_cache_round_trip_and_memo(monkeypatch):
    with tfds.testing.mock_data(num_examples=11, policy=MOCK):
        x, y = data.load_split("mnist", "test")
        assert data.load_split("mnist", "test")[0] is x  # memo
        data.clear_memo()
        monkeypatch.setattr(data, "_decode_all", _must_not_decode)
        x2, y2 = data.load_split("mnist", "test")  # from the .npz
    np.testing.assert_array_equal(x, x2)
    np.testing.assert_array_equal(y, y2)


def _must_not_decode(source):
    raise AssertionError("decoded although a valid cache exists")


@pytest.mark.parametrize("damage", ["truncate", "flip", "garbage", "stale_count"])
def test_corrupt_cache_is_rebuilt(damage):
    with tfds.testing.mock_data(num_examples=11, policy=MOCK):
        x, _ = data.load_split("mnist", "train")
    path = data.cache_path("mnist", "3.0.1", "train", "tfds")
    raw = bytearray(path.read_bytes())
    if damage == "truncate":
        path.write_bytes(raw[: len(raw) // 2])
    elif damage == "flip":
        raw[len(raw) // 3] ^= 0xFF  # inside the image data: caught by the zip CRC
        path.write_bytes(raw)
    elif damage == "garbage":
        path.write_bytes(b"not a zip")
    data.clear_memo()
    n = 13 if damage == "stale_count" else 11  # the source grew: cache is stale
    with tfds.testing.mock_data(num_examples=n, policy=MOCK):
        x2, y2 = data.load_split("mnist", "train")
    assert len(y2) == n
    if n == 11:
        np.testing.assert_array_equal(x, x2)
    data.clear_memo()
    assert data._read_cache(path, data._cache_meta("mnist", "3.0.1", "train", "tfds"), n)
    assert not list(path.parent.glob("*.tmp"))  # no leftovers from the atomic write


def test_cache_is_keyed_by_name_version_split_source(tmp_path):
    root = tmp_path / "c"
    p = data.cache_path("emnist/mnist", "3.1.0", "train[:10%]", "tfds", root)
    assert p.parent == root / "datasets" / p.parent.parent.name / "3.1.0"
    assert "/" not in p.parent.parent.name and p.name.endswith(".tfds.npz")
    q = data.cache_path("emnist/mnist", "3.1.0", "train[:20%]", "tfds", root)
    assert p != q
    assert data.cache_path("mnist", "3.0.1", "train", "idx", root).name == "train.idx.npz"


# --------------------------------------------------------------------------- batches


def _toy(n: int = 103):
    images = np.arange(n, dtype=np.uint8)[:, None, None, None] * np.ones((1, 28, 28, 1), np.uint8)
    return images, np.arange(n, dtype=np.int32)


def _order(labels_batches):
    return np.concatenate([y for _, y in labels_batches]) if labels_batches else np.array([])


def test_batches_deterministic_per_seed_and_epoch():
    x, y = _toy()
    a = _order(list(data.iterate_batches(x, y, 10, seed=3, epoch=0)))
    b = _order(list(data.iterate_batches(x, y, 10, seed=3, epoch=0)))
    c = _order(list(data.iterate_batches(x, y, 10, seed=3, epoch=1)))
    d = _order(list(data.iterate_batches(x, y, 10, seed=4, epoch=0)))
    np.testing.assert_array_equal(a, b)
    assert len(a) == 100 == data.steps_per_epoch(103, 10) * 10
    assert len(np.unique(a)) == 100  # no repeats within an epoch
    assert not np.array_equal(a, c) and not np.array_equal(a, d)


def test_batches_images_match_labels():
    x, y = _toy()
    for xb, yb in data.iterate_batches(x, y, 8, seed=0, epoch=2):
        assert xb.shape == (8, 28, 28, 1) and xb.dtype == np.uint8
        np.testing.assert_array_equal(xb[:, 0, 0, 0], yb)


@pytest.mark.parametrize("start_step", [0, 1, 4, 10])
def test_start_step_resumes_exactly(start_step):
    x, y = _toy()
    full = [yb for _, yb in data.iterate_batches(x, y, 10, seed=1, epoch=5)]
    resumed = [
        yb for _, yb in data.iterate_batches(x, y, 10, seed=1, epoch=5, start_step=start_step)
    ]
    assert len(resumed) == len(full) - start_step
    for a, b in zip(full[start_step:], resumed, strict=True):
        np.testing.assert_array_equal(a, b)


def test_no_shuffle_and_keep_remainder():
    x, y = _toy(25)
    batches = list(
        data.iterate_batches(x, y, 10, seed=0, epoch=0, shuffle=False, drop_remainder=False)
    )
    assert [len(b) for _, b in batches] == [10, 10, 5]
    assert data.steps_per_epoch(25, 10, drop_remainder=False) == 3
    np.testing.assert_array_equal(_order(batches), np.arange(25))


def test_shards_tile_the_global_batch():
    x, y = _toy()
    glob = [yb for _, yb in data.iterate_batches(x, y, 12, seed=7, epoch=1)]
    shards = [
        [
            yb
            for _, yb in data.iterate_batches(
                x, y, 12, seed=7, epoch=1, shard_index=i, num_shards=4
            )
        ]
        for i in range(4)
    ]
    for step, g in enumerate(glob):
        parts = [shards[i][step] for i in range(4)]
        assert all(len(p) == 3 for p in parts)
        np.testing.assert_array_equal(np.concatenate(parts), g)


def test_eval_batches_are_fixed_size_and_cover_everything():
    x, y = _toy(23)
    seen = []
    for xb, yb, valid in data.iterate_eval(x, y, 10):
        assert xb.shape == (10, 28, 28, 1) and yb.shape == (10,) and valid.dtype == bool
        seen.append(yb[valid])
        assert not xb[~valid].any()
    np.testing.assert_array_equal(np.concatenate(seen), np.arange(23))
    sharded = [
        np.concatenate(
            [yb[v] for _, yb, v in data.iterate_eval(x, y, 10, shard_index=i, num_shards=2)]
        )
        for i in range(2)
    ]
    assert sorted(np.concatenate(sharded).tolist()) == list(range(23))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"batch_size": 10, "num_shards": 3},
        {"batch_size": 12, "num_shards": 4, "shard_index": 4},
        {"batch_size": 12, "num_shards": 2, "drop_remainder": False},
        {"batch_size": 10, "start_step": 11},
        {"batch_size": 0},
        {"batch_size": 10, "seed": -1},
    ],
)
def test_batch_argument_errors(kwargs):
    x, y = _toy()
    kwargs = {"seed": 0, "epoch": 0, **kwargs}
    with pytest.raises(ValueError):
        list(data.iterate_batches(x, y, **kwargs))


def test_to_float():
    x = np.array([[0, 128, 255]], np.uint8)
    f = data.to_float(x)
    assert f.dtype == np.float32
    np.testing.assert_allclose(np.asarray(f), [[0.0, 128 / 255, 1.0]], rtol=1e-6)


# --------------------------------------------------------------------------- real MNIST


def test_real_mnist():
    """The TFDS-prepared MNIST of this repo's shared dir (or $TFDS_DATA_DIR)."""
    data_dir = Path(os.environ.get("TFDS_DATA_DIR") or REAL_TFDS)
    if not (data_dir / "mnist" / "3.0.1" / "dataset_info.json").is_file():
        pytest.fail(
            f"real MNIST not found: expected a TFDS-prepared mnist/3.0.1 (array_record) under "
            f"{data_dir}. Set TFDS_DATA_DIR to a TFDS data dir holding it."
        )
    for split, n in (("train", 60000), ("test", 10000)):
        # The user's cache, so the ~6 s decode is paid once, not on every run.
        x, y = data.load_split("mnist", split, data_dir, cache_root=USER_CACHE)
        assert x.shape == (n, 28, 28, 1) and x.dtype == np.uint8
        assert y.shape == (n,) and y.dtype == np.int32
        assert set(np.unique(y).tolist()) == set(range(10))
        assert x.min() == 0 and x.max() == 255
        # Every digit class is common: a broken decode would skew this.
        assert np.bincount(y, minlength=10).min() > n // 20

"""experiments.data.text on the real King James Bible: splits, hash, samplers, evaluation."""

from __future__ import annotations

import hashlib
import itertools
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from experiments.data import text

pytestmark = pytest.mark.data

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def kjv_dir() -> Path:
    """``$ADMMJAX_TEXT_DIR`` or ``../shared/text/kjv``; fails (never skips) if absent."""
    path = text.text_dir()
    if not (path / text.KJV_FILE).is_file():
        pytest.fail(
            f"kjv.txt not found under {path}: set ADMMJAX_TEXT_DIR to the directory holding "
            "it (../shared/text/kjv)"
        )
    return path


@pytest.fixture(scope="module")
def splits(kjv_dir) -> text.TextSplits:
    return text.load_splits(kjv_dir)


def _book_starts(raw: bytes) -> dict[str, int]:
    """The byte offset of each book's first heading line ("Exodus 1"), found in the text."""
    return {m.group(1).decode(): m.start() for m in re.finditer(rb"^(\S.*?) 1\n", raw, re.M)}


def test_file_hash_size_and_ascii(kjv_dir):
    raw = (kjv_dir / text.KJV_FILE).read_bytes()
    assert len(raw) == text.KJV_SIZE == 4_298_239
    assert hashlib.sha256(raw).hexdigest() == text.KJV_SHA256
    data = text.read_kjv(kjv_dir)
    assert data.dtype == np.uint8 and bytes(data) == raw
    assert int(data.max()) < 128  # ASCII: one byte is one character


def test_splits_are_whole_books_contiguous_and_documented(kjv_dir, splits):
    raw = (kjv_dir / text.KJV_FILE).read_bytes()
    books = _book_starts(raw)
    assert len(books) == 66 and next(iter(books)) == "Genesis" and list(books)[-1] == "Revelation"
    names = list(books)
    ends = dict(zip(names, [*list(books.values())[1:], len(raw)], strict=True))
    specs = list(text.SPLITS.values())
    # Contiguous, in file order, covering the file exactly once: disjoint by construction.
    assert specs[0].start == 0 and specs[-1].stop == len(raw)
    assert all(a.stop == b.start for a, b in itertools.pairwise(specs))
    for name, spec in text.SPLITS.items():
        first = 0 if spec.first_book == "Genesis" else books[spec.first_book]
        assert (spec.start, spec.stop) == (first, ends[spec.last_book]), name
        array = getattr(splits, name)
        assert bytes(array) == raw[spec.start : spec.stop]
        assert len(array) == spec.size
    # The sizes written in the module docstring.
    assert {n: len(getattr(splits, n)) for n in text.SPLITS} == {
        "validation": 204_675, "train": 3_934_638, "test": 158_926,
    }  # fmt: skip
    assert bytes(splits.train[:9]) == b"Exodus 1\n" and bytes(splits.test[:10]) == b"Hebrews 1\n"
    assert not splits.train.flags.writeable
    assert len(splits.train) + len(splits.validation) + len(splits.test) == len(raw)


def test_load_split_by_name_and_unknown_name(kjv_dir, splits):
    assert np.array_equal(text.load_split("test", kjv_dir), splits.test)
    with pytest.raises(ValueError, match=r"unknown split 'valid'.*train, test"):
        text.load_split("valid", kjv_dir)


def test_missing_file_names_path_and_hash(tmp_path):
    with pytest.raises(FileNotFoundError) as e:
        text.read_kjv(tmp_path)
    assert str(tmp_path / "kjv.txt") in str(e.value) and text.KJV_SHA256 in str(e.value)


def test_default_dir_from_environment_at_call_time(monkeypatch, tmp_path):
    monkeypatch.setenv("ADMMJAX_TEXT_DIR", str(tmp_path))
    assert text.text_dir() == tmp_path
    monkeypatch.delenv("ADMMJAX_TEXT_DIR")
    assert text.text_dir() == REPO.parent / "shared" / "text" / "kjv"


def test_altered_file_is_refused(kjv_dir, tmp_path):
    raw = bytearray((kjv_dir / text.KJV_FILE).read_bytes())
    raw[1000] ^= 1  # one flipped bit, same size
    (tmp_path / "kjv.txt").write_bytes(bytes(raw))
    with pytest.raises(text.TextDataError) as e:
        text.read_kjv(tmp_path)
    message = str(e.value)
    assert str(tmp_path / "kjv.txt") in message and text.KJV_SHA256 in message
    assert hashlib.sha256(bytes(raw)).hexdigest() in message
    (tmp_path / "kjv.txt").write_bytes(bytes(raw[:-1]))
    text.clear_memo()
    with pytest.raises(text.TextDataError, match="4298238 bytes"):
        text.read_kjv(tmp_path)


def test_a_verified_copy_elsewhere_reads(kjv_dir, tmp_path):
    shutil.copy(kjv_dir / text.KJV_FILE, tmp_path / text.KJV_FILE)
    assert len(text.load_splits(os.fspath(tmp_path)).test) == 158_926


def test_sample_batch_deterministic_windows_of_the_split(splits):
    a = text.sample_batch(splits.train, 16, 64, seed=3, step=7)
    b = text.sample_batch(splits.train, 16, 64, seed=3, step=7)
    assert a.shape == (16, 65) and a.dtype == np.uint8
    assert np.array_equal(a, b)
    assert not np.array_equal(a, text.sample_batch(splits.train, 16, 64, seed=3, step=8))
    assert not np.array_equal(a, text.sample_batch(splits.train, 16, 64, seed=4, step=7))
    # Every row is a contiguous window of the split it was drawn from.
    train = bytes(splits.train)
    assert all(train.find(bytes(row)) >= 0 for row in a)
    # Starts cover the whole split, up to the last offset where a window fits.
    tiny = np.arange(10, dtype=np.uint8)
    rows = np.concatenate([text.sample_batch(tiny, 64, 4, seed=0, step=s) for s in range(4)])
    assert set(rows[:, 0].tolist()) == set(range(6))
    assert np.array_equal(rows - rows[:, :1], np.broadcast_to(np.arange(5), rows.shape))


def test_sample_batch_bad_arguments(splits):
    with pytest.raises(ValueError, match="batch_size must be a positive integer, got 0"):
        text.sample_batch(splits.test, 0, 8, seed=0, step=0)
    with pytest.raises(ValueError, match="seed and step must be non-negative, got 0, -1"):
        text.sample_batch(splits.test, 2, 8, seed=0, step=-1)
    with pytest.raises(ValueError, match=r"window of 9 bytes \(seq_len \+ 1\).*in 5 tokens"):
        text.sample_batch(np.zeros(5, np.uint8), 2, 8, seed=0, step=0)


def test_calibration_only_from_train_distinct_and_deterministic(splits):
    calib = text.calibration_sample(splits, 128, 256, seed=0)
    assert calib.shape == (128, 256) and calib.dtype == np.uint8
    assert np.array_equal(calib, text.calibration_sample(splits, 128, 256, seed=0))
    assert not np.array_equal(calib, text.calibration_sample(splits, 128, 256, seed=1))
    train = bytes(splits.train)
    held_out = bytes(splits.validation) + b"|" + bytes(splits.test)
    starts = [train.find(bytes(row)) for row in calib]
    assert min(starts) >= 0
    assert not any(bytes(row) in held_out for row in calib)
    # Non-overlapping and in file order.
    assert all(b - a >= 256 for a, b in itertools.pairwise(starts))
    # Structural: only splits.train is read, whatever the other splits hold.
    fake = text.TextSplits(
        train=np.full(1000, 7, np.uint8), validation=np.zeros(5000, np.uint8),
        test=np.zeros(5000, np.uint8),
    )  # fmt: skip
    assert (text.calibration_sample(fake, 3, 100, seed=0) == 7).all()
    with pytest.raises(ValueError, match=r"num_sequences 11 exceeds the \d+ non-overlapping"):
        text.calibration_sample(fake, 11, 100, seed=0)


def test_iterate_eval_covers_every_target_once(splits):
    split = splits.test[:1000]  # 999 targets: 3 full windows of 256 and one of 231
    batches = list(text.iterate_eval(split, 3, 256))
    assert len(batches) == 2 == -(-text.num_eval_windows(len(split), 256) // 3)
    x = np.concatenate([b[0] for b in batches])
    y = np.concatenate([b[1] for b in batches])
    w = np.concatenate([b[2] for b in batches])
    assert x.shape == y.shape == w.shape == (6, 256)
    assert w.sum() == len(split) - 1 and w[:3].all() and w[3].sum() == 231 and not w[4:].any()
    assert np.array_equal(x[w], split[:-1]) and np.array_equal(y[w], split[1:])
    # The whole test split: every byte but the first is a target exactly once.
    total = sum(int(b[2].sum()) for b in text.iterate_eval(splits.test, 32, 256))
    assert total == len(splits.test) - 1

"""The King James Bible as byte-level language-modelling data: splits, batches, evaluation.

The text
    ``kjv.txt``: the King James Version (public domain) as plain ASCII, 4,298,239
    bytes, SHA-256 ``82fa5f37...59b033ea`` (how it was made: ``SOURCE.md`` beside it).
    A heading line ("Genesis 1") starts every chapter; the 66 books are in canonical
    order. The file is verified (size and SHA-256) every time it is read.

Tokens are bytes
    Token ``t`` is the byte value, so the vocabulary is 256 (:data:`VOCAB_SIZE`), of
    which the ASCII text uses a few dozen. Because the file is ASCII, one byte is one
    character and a cross-entropy in bits per token is bits per character.

Splits (:data:`SPLITS`): whole books, each split one contiguous byte range
    ========== ===================== ===================== ============ =======
    split      books                 bytes [start, stop)   size         share
    ========== ===================== ===================== ============ =======
    validation Genesis               [0, 204675)           204,675      4.76%
    train      Exodus .. Philemon    [204675, 4139313)     3,934,638    91.54%
    test       Hebrews .. Revelation [4139313, 4298239)    158,926      3.70%
    ========== ===================== ===================== ============ =======

    A boundary sits at the first byte of the book's first heading line ("Exodus 1",
    "Hebrews 1"); the blank line before it belongs to the previous book. Genesis is
    held out for validation because it is a narrative book like most of the training
    text; the last nine books (the letter to the Hebrews, the general epistles and
    Revelation) are the test set, at the end of the file as in enwik8. Chosen once,
    before any model was trained, and fixed: nothing is ever shuffled across a
    boundary, and every sampler below reads one split's array only.

Batches
    `sample_batch`: ``batch_size`` windows of ``seq_len + 1`` bytes at uniformly random
    offsets in one split (inputs ``w[:, :-1]``, targets ``w[:, 1:]``); the batch of
    step ``s`` is a pure function of ``(seed, s)``, so a resumed run draws the same
    batches. `calibration_sample`: ``num_sequences`` non-overlapping windows of the
    training split only (the calibration set of one-shot pruners). `iterate_eval`:
    every byte of a split after its first predicted exactly once, in order, in
    non-overlapping windows of ``seq_len`` targets (a model's context never reaches
    back past a window start), padded to fixed shapes with a weight mask.

The data directory is ``data_dir``, else ``$ADMMJAX_TEXT_DIR``, else
``<repo>/../shared/text/kjv``, resolved at call time. NumPy only: no JAX, no TFDS.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import numpy as np

from experiments.data import check_eval_subset
from experiments.data.sharding import shard_rows

__all__ = [
    "KJV_FILE",
    "KJV_SHA256",
    "KJV_SIZE",
    "NAME",
    "SPLITS",
    "VOCAB_SIZE",
    "SplitSpec",
    "TextDataError",
    "TextSource",
    "TextSplits",
    "calibration_sample",
    "clear_memo",
    "iterate_eval",
    "load_split",
    "load_splits",
    "num_eval_windows",
    "read_kjv",
    "sample_batch",
    "text_dir",
]

KJV_FILE = "kjv.txt"
KJV_SIZE = 4_298_239
KJV_SHA256 = "82fa5f3788c6a9a010fb128a0f0bf588984b5888a82058520620eded59b033ea"
VOCAB_SIZE = 256  # tokens are bytes
NAME = "kjv"  # the dataset name a run's config gives (experiments.train)


class SplitSpec(NamedTuple):
    """One split: the books it holds and its byte range ``[start, stop)`` in ``kjv.txt``."""

    first_book: str
    last_book: str
    start: int
    stop: int

    @property
    def size(self) -> int:
        return self.stop - self.start


# In file order. The offsets are those of the verified file (its SHA-256 fixes them);
# tests/experiments/test_text_data.py re-derives them from the book headings.
SPLITS: dict[str, SplitSpec] = {
    "validation": SplitSpec("Genesis", "Genesis", 0, 204_675),
    "train": SplitSpec("Exodus", "Philemon", 204_675, 4_139_313),
    "test": SplitSpec("Hebrews", "Revelation", 4_139_313, KJV_SIZE),
}

# Independent random streams of one seed (numpy SeedSequence spawn keys): training
# batches (spawn key (0, step)) and the calibration set (spawn key (1,)) never share one.
_BATCH_STREAM = 0
_CALIBRATION_STREAM = 1


class TextDataError(ValueError):
    """``kjv.txt`` is not the expected file (wrong size or SHA-256)."""


class TextSplits(NamedTuple):
    """The three splits as read-only uint8 arrays (views of one verified buffer)."""

    train: np.ndarray
    validation: np.ndarray
    test: np.ndarray


_MEMO: dict[str, np.ndarray] = {}
_MEMO_LOCK = threading.Lock()


def clear_memo() -> None:
    """Forget the in-process copy of the text (the next read verifies the file again)."""
    with _MEMO_LOCK:
        _MEMO.clear()


# --------------------------------------------------------------------------- loading


def text_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """The directory holding ``kjv.txt``: ``data_dir``, else ``$ADMMJAX_TEXT_DIR``, else
    ``<repo>/../shared/text/kjv`` (read when called, so setting the variable later works)."""
    if data_dir is None:
        data_dir = os.environ.get("ADMMJAX_TEXT_DIR") or (
            Path(__file__).resolve().parents[2].parent / "shared" / "text" / "kjv"
        )
    return Path(data_dir).expanduser()


def read_kjv(data_dir: str | os.PathLike | None = None) -> np.ndarray:
    """The whole verified ``kjv.txt`` as a read-only uint8 array of 4,298,239 bytes.

    Raises FileNotFoundError when the file is missing and `TextDataError` when its size
    or SHA-256 differs from :data:`KJV_SIZE` / :data:`KJV_SHA256`; both name the path
    and the expected hash. Memoised per resolved path.
    """
    path = text_dir(data_dir) / KJV_FILE
    key = os.fspath(path.resolve())
    with _MEMO_LOCK:
        hit = _MEMO.get(key)
    if hit is not None:
        return hit
    expected = f"the King James Bible, {KJV_SIZE} bytes, SHA-256 {KJV_SHA256}"
    if not path.is_file():
        raise FileNotFoundError(
            f"text file {path} not found: expected {expected}. Pass data_dir or set "
            "ADMMJAX_TEXT_DIR to the directory that holds kjv.txt (e.g. ../shared/text/kjv)"
        )
    raw = path.read_bytes()
    digest = hashlib.sha256(raw).hexdigest()
    if len(raw) != KJV_SIZE or digest != KJV_SHA256:
        raise TextDataError(
            f"text file {path} is not the expected one: got {len(raw)} bytes with SHA-256 "
            f"{digest}, expected {expected}"
        )
    data = np.frombuffer(raw, np.uint8)  # bytes are immutable: the array is read-only
    with _MEMO_LOCK:
        _MEMO[key] = data
    return data


def load_splits(data_dir: str | os.PathLike | None = None) -> TextSplits:
    """The train, validation and test splits of :data:`SPLITS` (read-only uint8 arrays)."""
    data = read_kjv(data_dir)
    return TextSplits(**{name: data[s.start : s.stop] for name, s in SPLITS.items()})


def load_split(name: str, data_dir: str | os.PathLike | None = None) -> np.ndarray:
    """One split by name (``"train"``, ``"validation"`` or ``"test"``)."""
    if name not in SPLITS:
        raise ValueError(f"unknown split {name!r}; expected one of {', '.join(SPLITS)}")
    return getattr(load_splits(data_dir), name)


# --------------------------------------------------------------------------- sampling


def _check_window(tokens: np.ndarray, length: int, what: str) -> None:
    if tokens.ndim != 1:
        raise ValueError(f"tokens must be 1-D (one split), got shape {tokens.shape}")
    if length < 2:
        raise ValueError(f"{what}: seq_len must be >= 1, got {length - 1}")
    if len(tokens) < length:
        raise ValueError(
            f"{what}: a window of {length} bytes (seq_len + 1) does not fit in {len(tokens)} tokens"
        )


def _check_positive(name: str, value: int) -> None:
    if not isinstance(value, int | np.integer) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def _windows(tokens: np.ndarray, starts: np.ndarray, length: int) -> np.ndarray:
    return tokens[starts[:, None] + np.arange(length)]


def sample_batch(
    tokens: np.ndarray, batch_size: int, seq_len: int, *, seed: int, step: int
) -> np.ndarray:
    """``batch_size`` random windows of ``seq_len + 1`` tokens: uint8 ``(B, seq_len + 1)``.

    The window starts are uniform over the ``len(tokens) - seq_len`` offsets where a
    window fits (drawn with replacement), from the numpy stream
    ``SeedSequence(seed, spawn_key=(0, step))``: a pure function of ``(seed, step)``,
    so no generator state needs checkpointing. Windows never leave ``tokens`` (pass
    one split). Inputs are ``w[:, :-1]``, targets ``w[:, 1:]``.
    """
    _check_positive("batch_size", batch_size)
    _check_positive("seq_len", seq_len)
    if seed < 0 or step < 0:
        raise ValueError(f"seed and step must be non-negative, got {seed}, {step}")
    _check_window(tokens, seq_len + 1, "sample_batch")
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(_BATCH_STREAM, step)))
    starts = rng.integers(0, len(tokens) - seq_len, size=batch_size)
    return _windows(tokens, starts, seq_len + 1)


def calibration_sample(
    splits: TextSplits, num_sequences: int, seq_len: int, *, seed: int
) -> np.ndarray:
    """``num_sequences`` distinct, non-overlapping windows of the training split:
    uint8 ``(num_sequences, seq_len)``, the model inputs a one-shot pruner calibrates on.

    The training split is cut into consecutive windows of ``seq_len`` bytes after a
    random offset in ``[0, seq_len)``; ``num_sequences`` of them are chosen without
    replacement and returned in file order. Only ``splits.train`` is read, and the
    stream (``SeedSequence(seed, spawn_key=(1,))``) is not one that `sample_batch`
    uses.
    """
    _check_positive("num_sequences", num_sequences)
    _check_positive("seq_len", seq_len)
    if seed < 0:
        raise ValueError(f"seed must be non-negative, got {seed}")
    train = splits.train
    _check_window(train, seq_len + 1, "calibration_sample")
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(_CALIBRATION_STREAM,)))
    offset = int(rng.integers(0, seq_len))
    slots = (len(train) - offset) // seq_len
    if num_sequences > slots:
        raise ValueError(
            f"num_sequences {num_sequences} exceeds the {slots} non-overlapping windows of "
            f"{seq_len} bytes in the training split ({len(train)} bytes)"
        )
    chosen = np.sort(rng.choice(slots, size=num_sequences, replace=False))
    return _windows(train, offset + chosen * seq_len, seq_len)


# --------------------------------------------------------------------------- evaluation


def num_eval_windows(num_tokens: int, seq_len: int) -> int:
    """How many windows `iterate_eval` cuts: ``ceil((num_tokens - 1) / seq_len)``."""
    return -(-(num_tokens - 1) // seq_len)


def iterate_eval(
    tokens: np.ndarray, batch_size: int, seq_len: int
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Yield ``(x, y, weight)`` batches covering every next-byte prediction of ``tokens``.

    Window ``i`` has inputs ``x = tokens[i T : i T + T]`` and targets
    ``y = tokens[i T + 1 : i T + T + 1]`` (``T = seq_len``), so each of the
    ``len(tokens) - 1`` targets occurs exactly once and windows do not overlap. The
    last window and the last batch are zero-padded to ``(batch_size, seq_len)`` (one
    compile of a jitted eval step); ``weight`` (bool) marks the real targets, and the
    bits per character of the split is ``sum(weight * ce) / sum(weight) / ln 2``.
    """
    _check_positive("batch_size", batch_size)
    _check_positive("seq_len", seq_len)
    _check_window(tokens, 2, "iterate_eval")
    n_targets = len(tokens) - 1
    n_windows = num_eval_windows(len(tokens), seq_len)
    for first in range(0, n_windows, batch_size):
        x = np.zeros((batch_size, seq_len), tokens.dtype)
        y = np.zeros((batch_size, seq_len), tokens.dtype)
        weight = np.zeros((batch_size, seq_len), bool)
        for row, window in enumerate(range(first, min(first + batch_size, n_windows))):
            lo = window * seq_len
            count = min(seq_len, n_targets - lo)
            x[row, :count] = tokens[lo : lo + count]
            y[row, :count] = tokens[lo + 1 : lo + 1 + count]
            weight[row, :count] = True
        yield x, y, weight


# --------------------------------------------------------------------------- source


class TextSource:
    """The KJV as :class:`experiments.train.Pipeline` reads a data set (the interface of
    :class:`experiments.data.mnist.ArraySource`), for language models.

    An example is a window of ``context`` targets: ``x`` the ``context`` bytes before
    them (uint8 ``(B, context)``), ``y`` the bytes themselves. Training batches are
    `sample_batch` windows of the training split, the batch of global step
    ``epoch * steps + step`` drawn from ``(seed, that step)``; an "epoch" is
    ``num_train = (len(train) - 1) // context`` windows, as many targets as the split
    holds. Evaluation (`iterate_eval`) scores every byte of the test or validation split
    once; ``num_test`` / ``num_validation`` count those targets. ``train_subset`` > 0
    keeps the first ``train_subset`` bytes of the training split; ``eval_subset`` > 0
    scores only the first ``eval_subset`` targets of the test and validation splits.
    """

    top5 = False
    image_shape = None  # not images: no MAC table in the summary

    def __init__(
        self, context: int, data_dir: str | os.PathLike | None = None, *,
        train_subset: int = 0, eval_subset: int = 0,
    ):  # fmt: skip
        _check_positive("context", context)
        check_eval_subset(eval_subset)
        splits = load_splits(data_dir)
        self.context = context
        self.train = splits.train[:train_subset] if train_subset else splits.train
        # N targets need the byte before the first of them: N + 1 bytes.
        scored = slice(eval_subset + 1 if eval_subset else None)
        self.validation, self.test = splits.validation[scored], splits.test[scored]
        _check_window(self.train, context + 1, "TextSource")

    @property
    def num_train(self) -> int:
        return (len(self.train) - 1) // self.context

    @property
    def num_test(self) -> int:
        return len(self.test) - 1

    @property
    def num_validation(self) -> int:
        return len(self.validation) - 1

    def train_batches(
        self, batch_size: int, *, seed: int, epoch: int, start_step: int = 0,
        shard_index: int = 0, num_shards: int = 1,
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:  # fmt: skip
        """This shard's rows of the ``(x, y)`` batches of ``epoch`` from ``start_step`` on."""
        rows = shard_rows(batch_size, shard_index, num_shards)
        steps = self.num_train // batch_size
        if not 0 <= start_step <= steps:
            raise ValueError(f"start_step {start_step} outside [0, {steps}]")
        for step in range(start_step, steps):
            windows = sample_batch(
                self.train, batch_size, self.context, seed=seed, step=epoch * steps + step
            )[rows]
            yield windows[:, :-1], windows[:, 1:]

    def _eval(
        self, tokens: np.ndarray, batch_size: int, shard_index: int, num_shards: int
    ) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        rows = shard_rows(batch_size, shard_index, num_shards)
        for x, y, weight in iterate_eval(tokens, batch_size, self.context):
            yield x[rows], y[rows], weight[rows]

    def eval_batches(
        self, batch_size: int, *, shard_index: int = 0, num_shards: int = 1
    ) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """`iterate_eval` over the test split: ``(x, y, weight)``, this shard's rows."""
        return self._eval(self.test, batch_size, shard_index, num_shards)

    def validation_batches(
        self, batch_size: int, *, shard_index: int = 0, num_shards: int = 1
    ) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """`iterate_eval` over the validation split (Genesis)."""
        return self._eval(self.validation, batch_size, shard_index, num_shards)


"""Checkpoints of pruning runs through orbax: the one module that does file I/O.

Optional: importing it needs ``orbax-checkpoint``; the rest of admmjax does not.
A checkpoint holds a pytree of arrays (params, optimizer state, ADMM state; ``None``
leaves allowed) and a JSON-serialisable dict of metadata (stage, step, history).

A checkpoint is one self-consistent unit:

* the metadata is a snapshot taken when :meth:`Checkpointer.save` is called (it is
  serialised to JSON text there), so changes the caller makes to its dict afterwards,
  while orbax still writes in the background, never reach the disk;
* the step is stored three times: as the step directory's name, as an array inside
  the array item and in an integrity record next to the metadata, together with a
  BLAKE2b digest of every array's dtype, shape and bytes taken at ``save``;
* orbax writes each step to a temporary directory and renames it when complete, so a
  run killed mid-save leaves the previous checkpoints intact;
* :meth:`Checkpointer.restore` verifies all of it and, when the newest checkpoint is
  unreadable or fails a check, logs one line naming what was wrong and falls back to
  the previous one (hence at least two are kept).

:func:`fault_point` is a test-only hook: with ``ADMMJAX_KILL_AT=EVENT:N`` in the
environment the process kills itself with ``SIGKILL`` at the ``N``-th occurrence of
``EVENT`` (1-based), deterministically, for crash tests with real processes. Without
the variable it does nothing.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import signal
from collections import Counter
from typing import Any

import jax
import numpy as np

try:
    import orbax.checkpoint as ocp
except ImportError as err:  # pragma: no cover - exercised only without orbax
    raise ImportError(
        "admmjax.checkpoint needs orbax-checkpoint: pip install orbax-checkpoint"
    ) from err

PyTree = Any

logger = logging.getLogger(__name__)

KILL_AT_ENV = "ADMMJAX_KILL_AT"
_fault_counts: Counter[str] = Counter()


def fault_point(event: str) -> None:
    """Test-only: ``SIGKILL`` this process at the ``N``-th ``event`` when
    ``$ADMMJAX_KILL_AT`` is ``"event:N"`` (see the module docstring).

    Events raised here: ``save`` (a checkpoint save is about to start), ``mid-write``
    (``save`` has returned, orbax is still writing in the background) and
    ``committed`` (a checkpoint is complete on disk). Callers add their own (the
    pipeline's ``output``: before each output file is written).
    """
    armed = os.environ.get(KILL_AT_ENV)
    if not armed:
        return
    _fault_counts[event] += 1
    name, _, count = armed.rpartition(":")
    if name == event and count.isdigit() and _fault_counts[event] == int(count):
        os.kill(os.getpid(), signal.SIGKILL)


def _fault_armed(event: str) -> bool:
    return os.environ.get(KILL_AT_ENV, "").rpartition(":")[0] == event


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or fails verification; says which and why."""


def _abstract(like: PyTree) -> PyTree:
    return jax.tree.map(ocp.utils.to_shape_dtype_struct, like)


def _host(leaf: Any) -> np.ndarray:
    """A leaf's value on this host (gathered over processes when it is split)."""
    if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
        from jax.experimental import multihost_utils

        return np.asarray(multihost_utils.process_allgather(leaf, tiled=True))
    return np.asarray(leaf)


def array_digests(tree: PyTree) -> dict[str, str]:
    """BLAKE2b (128-bit) hex digest of every array leaf's dtype, shape and bytes, by path."""
    out = {}
    for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
        value = np.ascontiguousarray(_host(leaf))
        h = hashlib.blake2b(digest_size=16)
        h.update(f"{value.dtype.str}{value.shape}".encode())
        h.update(value.reshape(-1).view(np.uint8))  # the bytes of tobytes(), not copied
        out[jax.tree_util.keystr(path)] = h.hexdigest()
    return out


def _one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}"[:300]


class Checkpointer:
    """Numbered, verified checkpoints of ``(tree, metadata)`` in one directory.

    Args:
      directory: where the numbered step directories live (created if missing).
      max_to_keep: how many recent checkpoints to keep on disk (at least 2, so a
        corrupted newest one has a predecessor to fall back to).
      async_save: let saving overlap with the next steps (orbax's default).
    """

    def __init__(self, directory: str | os.PathLike, max_to_keep: int = 2, async_save: bool = True):
        if not isinstance(max_to_keep, int) or max_to_keep < 2:
            raise ValueError(
                f"max_to_keep is {max_to_keep!r}; expected an integer >= 2 (the fallback "
                "from a corrupted newest checkpoint needs the previous one)"
            )
        self.directory = os.path.abspath(os.fspath(directory))
        options = ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep, enable_async_checkpointing=async_save, create=True
        )
        self._manager = ocp.CheckpointManager(self.directory, options=options)

    def all_steps(self) -> list[int]:
        """Steps of the complete (committed) checkpoints on disk, oldest first."""
        return sorted(self._manager.all_steps())

    def latest_step(self) -> int | None:
        """The newest complete checkpoint's step, or ``None`` when there is none.

        Complete means written to the end, not verified: :meth:`restore` verifies.
        """
        return self._manager.latest_step()

    def save(self, step: int, tree: PyTree, metadata: dict[str, Any]) -> None:
        """Saves ``tree`` and a snapshot of ``metadata`` as checkpoint ``step``.

        May return before the arrays are on disk; ``metadata`` and the digests of
        ``tree`` are taken now, so the caller may change its dict at once. ``tree``'s
        arrays must stay alive and unchanged until the write ends (pass copies of
        buffers that will be donated). A checkpoint ``step`` already on disk (one a
        restore fell back from) is replaced.
        """
        if not isinstance(step, int) or isinstance(step, bool) or step < 0:
            raise ValueError(f"step is {step!r}; expected an integer >= 0")
        fault_point("save")
        meta_text = json.dumps(metadata)  # the snapshot; refuses non-JSON values now
        integrity = {"step": step, "digests": array_digests(tree)}
        if step in self._manager.all_steps():
            self._manager.wait_until_finished()
            self._manager.delete(step)
        self._manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave({"tree": tree, "step": np.asarray(step, np.int64)}),
                meta=ocp.args.JsonSave(json.loads(meta_text)),
                integrity=ocp.args.JsonSave(integrity),
            ),
            force=True,
        )
        fault_point("mid-write")
        if _fault_armed("committed"):
            self._manager.wait_until_finished()
            fault_point("committed")

    def _read(self, step: int, like: Any) -> tuple[PyTree, dict[str, Any]]:
        """Checkpoint ``step`` (only its metadata when ``like`` is None), verified."""
        json_items = {"meta": ocp.args.JsonRestore(), "integrity": ocp.args.JsonRestore()}
        try:
            out = self._manager.restore(step, args=ocp.args.Composite(**json_items))
            meta, integrity = out.meta, out.integrity
            if not isinstance(meta, dict) or not isinstance(integrity, dict):
                raise TypeError("metadata or integrity record is not a JSON object")
            recorded = integrity["step"]
        except Exception as err:  # orbax/JSON errors of every kind
            raise CheckpointError(f"checkpoint {step} cannot be read ({_one_line(err)})") from err
        if recorded != step:
            raise CheckpointError(
                f"checkpoint {step}: its integrity record names step {recorded!r}"
            )
        if like is None:
            return None, meta
        try:
            like = like(meta) if callable(like) else like
            abstract = {"tree": _abstract(like), "step": jax.ShapeDtypeStruct((), np.int64)}
            state = ocp.args.StandardRestore(abstract)
            out = self._manager.restore(step, args=ocp.args.Composite(state=state))
        except Exception as err:  # orbax/tensorstore errors of every kind
            raise CheckpointError(
                f"checkpoint {step}: its arrays cannot be read ({_one_line(err)})"
            ) from err
        stored = int(np.asarray(out.state["step"]))
        if stored != step:
            raise CheckpointError(f"checkpoint {step}: its arrays hold step {stored}")
        tree = out.state["tree"]
        want, got = integrity.get("digests", {}), array_digests(tree)
        bad = sorted(k for k in set(want) | set(got) if want.get(k) != got.get(k))
        if bad:
            raise CheckpointError(
                f"checkpoint {step}: {len(bad)} array(s) do not match their digests "
                f"taken at save (first: {bad[0]})"
            )
        return tree, meta

    def _newest_valid(self, like: Any, step: int | None, warn: bool = True) -> tuple[PyTree, dict]:
        if step is not None:
            return self._read(step, like)
        steps = self.all_steps()
        if not steps:
            raise FileNotFoundError(f"no checkpoint in {self.directory}")
        errors = []
        for candidate in reversed(steps):
            try:
                result = self._read(candidate, like)
            except CheckpointError as err:
                errors.append(str(err))
                older = [s for s in steps if s < candidate]
                then = f"falling back to checkpoint {older[-1]}" if older else "no older one"
                if warn:
                    logger.warning("%s: %s; %s", self.directory, err, then)
                continue
            return result
        raise CheckpointError(f"no valid checkpoint in {self.directory}: " + "; ".join(errors))

    def restore(self, like: Any, step: int | None = None) -> tuple[PyTree, dict[str, Any]]:
        """Restores checkpoint ``step`` into the structure of ``like``, verified.

        ``like`` is a tree, or a function from a checkpoint's metadata to the tree its
        arrays have (checkpoints of different stages of a run hold different trees).

        With ``step=None``: the newest checkpoint that passes verification; each one
        skipped is logged (one line, what was wrong). Raises :class:`CheckpointError`
        when none (or the given ``step``) passes, ``FileNotFoundError`` when there is none.
        """
        return self._newest_valid(like, step)

    def metadata(self, step: int | None = None, *, warn: bool = True) -> dict[str, Any]:
        """Only the JSON metadata of checkpoint ``step`` (default: the newest readable one).

        Cheap: the arrays are neither read nor verified (:meth:`restore` does that).
        ``warn=False`` skips unreadable ones silently (for a look before a restore,
        which names them).
        """
        return self._newest_valid(None, step, warn)[1]

    def wait(self) -> None:
        """Blocks until pending asynchronous saves are on disk."""
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.wait_until_finished()
        self._manager.close()


# Orbax's commit marker; it names the directory it was written to.
_COMMIT_MARKER = "commit_success.txt"


def save_pytree(path: str | os.PathLike, tree: PyTree) -> None:
    """Writes one pytree (e.g. the final pruned params) to ``path`` synchronously.

    Orbax's commit marker names the directory as ``path`` was given (relative stays
    relative), so a checkpoint committed to a repository holds no machine path.
    """
    given = os.fspath(path)
    full = os.path.abspath(given)
    with ocp.StandardCheckpointer() as ckpt:
        ckpt.save(full, tree, force=True)
    marker = os.path.join(full, _COMMIT_MARKER)
    if os.path.isfile(marker):
        with open(marker, "w") as f:
            f.write(f"Checkpoint commit was successful to {given}")


def load_pytree(path: str | os.PathLike, like: PyTree | None = None) -> PyTree:
    """Reads a pytree written by :func:`save_pytree`; ``like`` fixes its structure."""
    path = os.path.abspath(os.fspath(path))
    if not os.path.isdir(path):
        raise FileNotFoundError(f"no checkpoint directory at {path}")
    with ocp.StandardCheckpointer() as ckpt:
        return ckpt.restore(path, _abstract(like)) if like is not None else ckpt.restore(path)

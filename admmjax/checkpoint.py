"""Checkpoints of pruning runs through orbax: the one module that does file I/O.

Optional: importing it needs ``orbax-checkpoint``; the rest of admmjax does not.
A checkpoint holds a pytree of arrays (params, optimizer state, ADMM state; ``None``
leaves allowed) and a JSON-serialisable dict of metadata (stage, step, history).
Orbax writes each step to a temporary directory and renames it when complete, so a
run killed mid-save leaves the previous checkpoint intact.
"""

from __future__ import annotations

import os
from typing import Any

import jax

try:
    import orbax.checkpoint as ocp
except ImportError as err:  # pragma: no cover - exercised only without orbax
    raise ImportError(
        "admmjax.checkpoint needs orbax-checkpoint: pip install orbax-checkpoint"
    ) from err

PyTree = Any


def _abstract(like: PyTree) -> PyTree:
    return jax.tree.map(ocp.utils.to_shape_dtype_struct, like)


class Checkpointer:
    """Numbered checkpoints of ``(tree, metadata)`` in one directory.

    Args:
      directory: where the numbered step directories live (created if missing).
      max_to_keep: how many recent checkpoints to keep on disk.
      async_save: let saving overlap with the next steps (orbax's default).
    """

    def __init__(self, directory: str | os.PathLike, max_to_keep: int = 2, async_save: bool = True):
        self.directory = os.path.abspath(os.fspath(directory))
        options = ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep, enable_async_checkpointing=async_save, create=True
        )
        self._manager = ocp.CheckpointManager(self.directory, options=options)

    def latest_step(self) -> int | None:
        """The newest complete checkpoint's step, or ``None`` when there is none."""
        return self._manager.latest_step()

    def save(self, step: int, tree: PyTree, metadata: dict[str, Any]) -> None:
        """Saves ``tree`` and ``metadata`` as checkpoint ``step`` (may return before done)."""
        self._manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(tree), meta=ocp.args.JsonSave(metadata)
            ),
            force=True,
        )

    def restore(self, like: PyTree, step: int | None = None) -> tuple[PyTree, dict[str, Any]]:
        """Restores checkpoint ``step`` (default: latest) into the structure of ``like``."""
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no checkpoint in {self.directory}")
        out = self._manager.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(_abstract(like)), meta=ocp.args.JsonRestore()
            ),
        )
        return out.state, out.meta

    def metadata(self, step: int | None = None) -> dict[str, Any]:
        """Only the JSON metadata of checkpoint ``step`` (default: latest)."""
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no checkpoint in {self.directory}")
        out = self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
        return out.meta

    def wait(self) -> None:
        """Blocks until pending asynchronous saves are on disk."""
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.wait_until_finished()
        self._manager.close()


def save_pytree(path: str | os.PathLike, tree: PyTree) -> None:
    """Writes one pytree (e.g. the final pruned params) to ``path`` synchronously."""
    path = os.path.abspath(os.fspath(path))
    with ocp.StandardCheckpointer() as ckpt:
        ckpt.save(path, tree, force=True)


def load_pytree(path: str | os.PathLike, like: PyTree | None = None) -> PyTree:
    """Reads a pytree written by :func:`save_pytree`; ``like`` fixes its structure."""
    path = os.path.abspath(os.fspath(path))
    if not os.path.isdir(path):
        raise FileNotFoundError(f"no checkpoint directory at {path}")
    with ocp.StandardCheckpointer() as ckpt:
        return ckpt.restore(path, _abstract(like)) if like is not None else ckpt.restore(path)

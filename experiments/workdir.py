"""A run directory ("workdir"): one run, locked while a process uses it, never overwritten.

A workdir holds exactly one run of one config:

* ``config.json`` is written (atomically) when the run starts, ``checkpoints/`` while
  it trains, and the outputs (``dense/``, ``pruned/``, ``history.json``, ``table.md``,
  the figures) as the stages finish; ``summary.json`` is written last, atomically, so
  its presence means the run is finished and every output is complete.
* Every record of a config in the workdir (``summary.json``, the newest readable
  checkpoint, ``config.json``) must match the config of a new command, up to the
  fields in :data:`RESUMABLE_CHANGES`; otherwise the workdir is refused
  (:class:`WorkdirError`), with or without ``checkpoints/``. Outputs without any
  config record (a directory of unknown origin) are refused too.
* A finished workdir of the same config is reported as done:
  :func:`finished_summary` returns its summary and no work is redone.
* :func:`locked` holds an exclusive ``fcntl.flock`` on ``WORKDIR/.lock`` for the life
  of a run; a second process on the same workdir gets a :class:`WorkdirError` at once.
  The OS releases the lock when the process ends, however it ends (``kill -9``
  included), so a stale lock file never blocks a restart.
* A finished run is read back without data: :func:`load_run` (its ``Config``) and
  :func:`load_params` (its ``pruned/`` or ``dense/`` params), as the analysis CLIs do.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
from collections.abc import Iterator
from typing import Any

import admmjax.checkpoint
from admmjax.checkpoint import Checkpointer
from experiments import config

LOCK_NAME = ".lock"
# What a run writes besides config.json and checkpoints/.
OUTPUT_NAMES = (
    "summary.json", "history.json", "table.md", "weights_histograms.png",
    "residuals_loss.png", "dense", "pruned",
)  # fmt: skip

# Config fields that may change between a run and its resumption: where the data lives,
# bookkeeping, and the device layout (a resumed run may land on another machine). The
# recipe stays fixed: a different budget would silently change the result of the run.
RESUMABLE_CHANGES = {
    "progress", "data_dir", "checkpoint_every", "eval_batch_size", "devices", "shard_min_size",
}  # fmt: skip


class WorkdirError(ValueError):
    """The workdir holds another run, unreadable records, or is in use by another process."""


def check_same_run(
    saved: dict[str, Any], cfg: Any, workdir: str, what: str = "a checkpoint"
) -> None:
    """A workdir holds one run: refuse to resume it with another model or recipe.

    ``cfg`` is a dataclass (``train.Config``); a field missing from ``saved`` (a record
    older than the field) counts as its default value. ``what`` names the record
    ``saved`` comes from, for the message.
    """
    now = dataclasses.asdict(cfg)
    defaults = dataclasses.asdict(type(cfg)())
    diff = {
        k: (saved.get(k, defaults[k]), v)
        for k, v in now.items()
        if k not in RESUMABLE_CHANGES and saved.get(k, defaults[k]) != v
    }
    if diff:
        lines = ", ".join(f"{k}: saved {a!r} vs now {b!r}" for k, (a, b) in sorted(diff.items()))
        raise WorkdirError(
            f"workdir {workdir} holds {what} of a different run ({lines}); "
            "use another --workdir or the original options"
        )


def _read_json(workdir: str, name: str) -> Any:
    path = os.path.join(workdir, name)
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as err:
        raise WorkdirError(
            f"workdir {workdir}: {name} cannot be read ({type(err).__name__}: {err}); "
            "refusing to overwrite it: use another --workdir"
        ) from None


def write_json_atomic(path: str, value: Any, **dump_kw: Any) -> None:
    """Writes ``value`` as JSON to ``path`` through a temporary file and a rename, so a
    reader (or a run killed mid-write) sees the old file or the whole new one."""
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(value, f, **dump_kw)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def finished_summary(cfg: Any, workdir: str) -> dict[str, Any] | None:
    """The summary of the finished run of ``cfg`` in ``workdir``, or ``None`` when the run
    is not finished. Raises :class:`WorkdirError` when it is another config's."""
    workdir = os.path.abspath(workdir)
    if not os.path.exists(os.path.join(workdir, "summary.json")):
        return None
    summary = _read_json(workdir, "summary.json")
    if not isinstance(summary, dict) or not isinstance(summary.get("config"), dict):
        raise WorkdirError(
            f"workdir {workdir}: summary.json holds no config; refusing to overwrite it"
        )
    check_same_run(summary["config"], cfg, workdir, "a finished run")
    return summary


def saved_run(cfg: Any, workdir: str) -> dict[str, Any] | None:
    """The metadata of ``workdir``'s newest readable checkpoint, or ``None`` when there is none.

    Before that, refuses (:class:`WorkdirError`) a workdir whose ``summary.json``,
    checkpoint or ``config.json`` belongs to another run, or that holds outputs but no
    config record. Reads only JSON, so it is cheap to call before any data is loaded.
    """
    workdir = os.path.abspath(workdir)
    finished_summary(cfg, workdir)
    meta = None
    ckpt_dir = os.path.join(workdir, "checkpoints")
    if os.path.isdir(ckpt_dir):
        ckpt = Checkpointer(ckpt_dir)
        try:
            if ckpt.latest_step() is not None:
                meta = ckpt.metadata(warn=False)  # the restore names what it skips
        except admmjax.checkpoint.CheckpointError as err:
            raise WorkdirError(f"workdir {workdir}: {err}") from None
        finally:
            ckpt.close()
        if meta is not None:
            check_same_run(meta["config"], cfg, workdir)
    if os.path.exists(os.path.join(workdir, "config.json")):
        check_same_run(_read_json(workdir, "config.json"), cfg, workdir, "a started run")
    elif meta is None:
        found = [n for n in OUTPUT_NAMES if os.path.exists(os.path.join(workdir, n))]
        if found:
            raise WorkdirError(
                f"workdir {workdir} holds outputs ({', '.join(found)}) but no config.json: "
                "refusing to overwrite them; use another --workdir"
            )
    return meta


@contextlib.contextmanager
def locked(workdir: str) -> Iterator[None]:
    """Holds an exclusive OS lock on ``workdir`` (created if missing) while inside.

    Raises :class:`WorkdirError` at once, naming the holder's pid, when another process
    holds it. The lock file stays; the lock goes with the process.
    """
    workdir = os.path.abspath(workdir)
    os.makedirs(workdir, exist_ok=True)
    path = os.path.join(workdir, LOCK_NAME)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise WorkdirError(
                f"workdir {workdir} is in use by another process (pid {holder}, lock {path}); "
                "wait for it to end or use another --workdir"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock


def load_dense_params(path: str, like: Any) -> Any:
    """Dense params from a workdir (its ``dense/``), a params checkpoint directory, or an
    ``.npz`` / ``.npy`` file keyed by parameter path (converted pretrained weights, see
    :func:`experiments.models.alexnet.load_pretrained`)."""
    if os.path.isfile(path) and path.endswith((".npz", ".npy")):
        from experiments.models.alexnet import load_pretrained

        return load_pretrained(path, like)
    candidate = os.path.join(path, "dense")
    path = candidate if os.path.isdir(candidate) else path
    return admmjax.checkpoint.load_pytree(path, like)


def load_run(workdir: str, data_dir: str | None = None) -> config.Config:
    """The ``Config`` a workdir was made with (from its ``config.json``); ValueError when
    ``workdir`` is not a run's. Fields the record lacks (older than them) keep their
    defaults; ``data_dir``, when given, replaces the recorded one."""
    path = os.path.join(workdir, "config.json")
    if not os.path.isfile(path):
        raise ValueError(f"{workdir} has no config.json; is it an experiments.mnist workdir?")
    with open(path) as f:
        values = json.load(f)
    known = {f.name for f in dataclasses.fields(config.Config)}
    cfg = config.Config(**{k: v for k, v in values.items() if k in known})
    if data_dir is not None:
        cfg.data_dir = data_dir
    return cfg


def load_params(workdir: str, which: str = "pruned") -> tuple[config.Config, Any]:
    """A finished run's config and its ``pruned`` (or ``dense``) params, without data.

    The restore template is the model's abstract params, so no model weights are
    initialised (cheap for AlexNet too).
    """
    cfg = load_run(workdir)
    like = config.abstract_params(cfg)  # the model as the run built it (the GPT's sizes)
    return cfg, admmjax.checkpoint.load_pytree(params_path(workdir, which), like)


def params_path(workdir: str, which: str = "pruned") -> str:
    """``WORKDIR/which`` (``pruned`` or ``dense``), which a finished run has written.

    Raises:
      ValueError: the folder does not exist (the run has not finished that stage).
    """
    params_dir = os.path.join(workdir, which)
    if not os.path.isdir(params_dir):
        raise ValueError(f"{params_dir} does not exist; has the run finished?")
    return params_dir

"""Kill -9 a small run at many points; every restart must end bit-identical (issue 22).

Real processes (``_fault_worker.py``: the whole pipeline on 64 mock images), real
``SIGKILL``: each process is started with ``ADMMJAX_KILL_AT=EVENT:N`` and kills
itself at the ``N``-th ``EVENT`` after its start (:func:`admmjax.checkpoint.fault_point`;
deterministic program points, not timers): before a checkpoint save (``save``), right
after ``save`` returned with the write still in flight (``mid-write``), right after a
checkpoint is complete (``committed``) and before each output (``output``: ``dense/``,
``pruned/`` and the five files of the summary). One chain of restarts walks through
every stage; the next kill point is chosen from the newest checkpoint left by the last
kill, so the chain reaches every stage whatever the timing of the background writes.
The final, unarmed restart must end with the same params bytes, history and accuracies
as an uninterrupted run. About 22 restarts each read the newest checkpoint: a race that
spoils one checkpoint in 6 is missed with probability (5/6)^22 < 2%, and a spoiled
checkpoint that verification catches makes the test fail too (no fallback warning is
allowed: kills alone never leave an invalid committed checkpoint).
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
from pathlib import Path

import _fault_worker  # tests/experiments/, on sys.path as the test's own folder
import jax
import numpy as np
import pytest
from _killable import run_worker

from admmjax.checkpoint import Checkpointer, load_pytree
from experiments import models

REPO = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).with_name("_fault_worker.py")
OUTPUT_FILES = 5  # history.json, table.md, two figures, summary.json (written last)
# Kill points while training, in turn: progress of 0, 0-1, 1, 0-1 and 1-2 checkpoints.
WHILE_TRAINING = ("save:1", "mid-write:1", "committed:1", "save:2", "mid-write:2")
# The worker's run saves every EVERY steps inside each stage (6 steps each) and at its end.
EVERY = _fault_worker.CONFIG["checkpoint_every"]
SAVES_PER_STAGE = _fault_worker.CONFIG["pretrain_steps"] // EVERY
LAST_INSIDE = (SAVES_PER_STAGE - 1) * EVERY  # step of a stage's last checkpoint before its end
STAGES = ("pretrain", "admm", "retrain", "done")


def _run(workdir: Path, env: dict[str, str], kill_at: str | None) -> subprocess.CompletedProcess:
    return run_worker(WORKER, workdir, env, kill_at, timeout=900)


def _newest(workdir: Path) -> tuple[str, int]:
    """(stage, step) of the newest complete checkpoint; ("pretrain", 0) when none."""
    if not (workdir / "checkpoints").is_dir():
        return "pretrain", 0
    ckpt = Checkpointer(workdir / "checkpoints")
    try:
        if ckpt.latest_step() is None:
            return "pretrain", 0
        meta = ckpt.metadata()
        return meta["stage"], meta["step"]
    finally:
        ckpt.close()


def _params_bytes(workdir: Path, name: str) -> list[bytes]:
    like = models.functional(models.create_model("lenet300_100", seed=0))[1]
    return [np.asarray(x).tobytes() for x in jax.tree.leaves(load_pytree(workdir / name, like))]


def _outputs(workdir: Path) -> dict:
    summary = json.loads((workdir / "summary.json").read_text())
    summary.pop("stage_seconds")  # wall-clock
    return {
        "summary": summary,
        "history": json.loads((workdir / "history.json").read_text()),
        "dense": _params_bytes(workdir, "dense"),
        "pruned": _params_bytes(workdir, "pruned"),
    }


@pytest.mark.slow
def test_killed_anywhere_the_restarted_run_ends_bit_identical(tmp_path):
    env = {
        **os.environ,
        "PYTHONPATH": os.environ.get("PYTHONPATH") or str(REPO),  # the code under test
        "JAX_PLATFORMS": "cpu",
        "ADMMJAX_CACHE": str(tmp_path / "cache"),  # mock data never enters the user's cache
        # Every process compiles the same functions: share them (the same executables).
        "JAX_COMPILATION_CACHE_DIR": str(tmp_path / "jax_cache"),
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
        "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0",
    }
    reference = tmp_path / "reference"
    done = _run(reference, env, None)
    assert done.returncode == 0, done.stderr[-3000:]
    want = _outputs(reference)

    workdir = tmp_path / "killed"
    training = itertools.cycle(WHILE_TRAINING)
    kills: list[tuple[str, int, str, bool]] = []  # stage, step, kill point, orbax tmp dir
    killed_at_output = {"pretrain": False, "retrain": False}
    output_kills = 0
    kill_at = "save:1"
    while True:
        stage, step = _newest(workdir)
        proc = _run(workdir, env, kill_at)
        tail = f"kill at {kill_at} from {stage} step {step}:\n{proc.stderr[-3000:]}"
        assert proc.returncode == -signal.SIGKILL, tail
        assert "falling back" not in proc.stderr + proc.stdout, tail
        assert not (workdir / "summary.json").exists(), tail
        in_flight = any(".orbax-checkpoint-tmp" in p.name for p in workdir.glob("checkpoints/*"))
        kills.append((stage, step, kill_at, in_flight))
        stage, step = _newest(workdir)
        if stage == "done":  # training over: kill before each output file in turn
            output_kills += 1
            if output_kills > OUTPUT_FILES:
                break
            kill_at = f"output:{output_kills}"
        elif stage in killed_at_output and step == LAST_INSIDE and not killed_at_output[stage]:
            killed_at_output[stage] = True  # the next output is dense/ or pruned/
            kill_at = "output:1"
        else:  # never past the run's last save (the process would end unkilled)
            event, n = next(training).split(":")
            saved = SAVES_PER_STAGE * STAGES.index(stage) + step // EVERY
            kill_at = f"{event}:{min(int(n), SAVES_PER_STAGE * 3 - saved)}"
    final = _run(workdir, env, None)
    assert final.returncode == 0, final.stderr[-3000:]
    assert "falling back" not in final.stderr

    assert _outputs(workdir) == want, kills
    assert len(kills) >= 20, kills
    assert {s for s, *_ in kills} == {"pretrain", "admm", "retrain", "done"}, kills
    assert {k.split(":")[0] for *_, k, _ in kills} == {"save", "mid-write", "committed", "output"}
    assert killed_at_output == {"pretrain": True, "retrain": True}, kills
    # Killed mid-write: the step's orbax temporary directory was left uncommitted.
    assert any(k.startswith("mid-write") and tmp for *_, k, tmp in kills), kills
    print(f"{len(kills)} kills (stage, step, point, orbax tmp dir left):", kills)

"""experiments.workdir: a finished run is never overwritten, a workdir is locked while in
use (issue 22, defects 2 and 4)."""

from __future__ import annotations

import dataclasses
import fcntl
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from experiments import command_line, train
from experiments.workdir import WorkdirError

REPO = Path(__file__).resolve().parents[2]
SPARSITY = {"fc1/kernel": 0.9}
CLI = [
    "--model", "lenet300_100", "--sparsity", "fc1/kernel=0.9", "--train-subset", "256",
    "--pretrain-steps", "1", "--admm-iterations", "1", "--admm-steps", "1",
    "--retrain-steps", "1", "--no-progress",
]  # fmt: skip


def _env() -> dict[str, str]:
    """The environment of a CLI subprocess: the code under test, from $PYTHONPATH or here."""
    return {**os.environ, "PYTHONPATH": os.environ.get("PYTHONPATH") or str(REPO),
            "JAX_PLATFORMS": "cpu"}  # fmt: skip


def _config(**changes) -> train.Config:
    return train.Config(model="lenet300_100", sparsity=SPARSITY, **changes)


def _finished_workdir(path: Path, cfg: train.Config) -> Path:
    """A finished workdir as committed results are: outputs, no checkpoints/."""
    path.mkdir()
    config = dataclasses.asdict(cfg)
    (path / "config.json").write_text(json.dumps(config))
    (path / "summary.json").write_text(json.dumps({"pruned_accuracy": 0.5, "config": config}))
    (path / "table.md").write_text("| table |\n")
    (path / "pruned").mkdir()
    return path


def _snapshot(path: Path) -> dict[str, tuple[bytes, int]]:
    return {
        str(p.relative_to(path)): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in sorted(path.rglob("*"))
        if p.is_file() and p.name != ".lock"
    }


def test_finished_workdir_of_another_config_is_refused_without_checkpoints(tmp_path):
    workdir = _finished_workdir(tmp_path / "done", _config())
    with pytest.raises(WorkdirError, match=r"finished run of a different run .*rho: saved"):
        command_line.check_workdir(_config(rho=2e-3), str(workdir))


def test_started_workdir_of_another_config_is_refused(tmp_path):
    """Killed before its first checkpoint: only config.json says whose it is."""
    workdir = tmp_path / "started"
    workdir.mkdir()
    (workdir / "config.json").write_text(json.dumps(dataclasses.asdict(_config())))
    with pytest.raises(WorkdirError, match=r"started run of a different run .*seed: saved"):
        command_line.check_workdir(_config(seed=3), str(workdir))


def test_outputs_without_a_config_record_are_refused(tmp_path):
    workdir = tmp_path / "unknown"
    (workdir / "pruned").mkdir(parents=True)
    (workdir / "summary.json").write_text('{"pruned_accuracy": 0.9')  # cut short
    with pytest.raises(WorkdirError, match=r"summary\.json cannot be read"):
        command_line.check_workdir(_config(), str(workdir))
    (workdir / "summary.json").unlink()
    with pytest.raises(WorkdirError, match=r"holds outputs \(pruned\) but no config.json"):
        command_line.check_workdir(_config(), str(workdir))


def _lock_is_held(workdir: Path) -> bool:
    """Whether someone holds the OS lock on ``WORKDIR/.lock`` (flock conflicts between
    open files of one process too)."""
    with open(workdir / ".lock", "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(f, fcntl.LOCK_UN)
        return False


def test_finished_workdir_of_the_same_config_is_done_without_work(tmp_path):
    """The summary comes back and nothing is rewritten; no data is even looked for (the
    data dir does not exist), and the lock is held meanwhile."""
    workdir = _finished_workdir(tmp_path / "done", _config())
    before = _snapshot(workdir)
    lines = []

    def log(line: str) -> None:
        lines.append((line, _lock_is_held(workdir)))

    cfg = _config(data_dir=str(tmp_path / "no_data"), progress=False)  # resumable changes
    summary = train.run(cfg, str(workdir), log=log)
    assert summary == json.loads((workdir / "summary.json").read_text())
    assert _snapshot(workdir) == before
    assert len(lines) == 1 and "finished: nothing to do" in lines[0][0], lines
    assert lines[0][1], "the lock is not held while the run is in train.run"
    assert not _lock_is_held(workdir)  # released on return


def test_second_process_on_a_locked_workdir_exits_2_at_once(tmp_path, mnist_dir):
    """Another process holds the OS lock on WORKDIR/.lock: the command refuses at once,
    with exit status 2 and a message naming the holder, and writes nothing."""
    workdir = tmp_path / "busy"
    workdir.mkdir()
    with open(workdir / ".lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        held.write(f"{os.getpid()}\n")
        held.flush()
        start = time.monotonic()
        proc = subprocess.run(
            [sys.executable, "-m", "experiments.mnist", *CLI, "--workdir", str(workdir),
             "--data-dir", mnist_dir],
            cwd=tmp_path, env=_env(), capture_output=True,
            text=True, timeout=300,
        )  # fmt: skip
        elapsed = time.monotonic() - start
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert f"is in use by another process (pid {os.getpid()}" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert sorted(p.name for p in workdir.iterdir()) == [".lock"]
    print(f"refused after {elapsed:.1f} s (process start included)")

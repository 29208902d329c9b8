"""Runs a test worker script as a real process, armed to SIGKILL itself at one point."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from admmjax.checkpoint import KILL_AT_ENV

REPO = Path(__file__).resolve().parents[2]


def run_worker(
    worker: Path, workdir: Path, env: Mapping[str, str], kill_at: str | None, timeout: float
) -> subprocess.CompletedProcess:
    """``python WORKER WORKDIR`` from the repo root with ``env``; with ``kill_at``
    (``EVENT:N``) it is started with ``$ADMMJAX_KILL_AT`` set (:func:`admmjax.checkpoint.
    fault_point`), without it any inherited value is removed."""
    env = {k: v for k, v in env.items() if k != KILL_AT_ENV}
    if kill_at:
        env[KILL_AT_ENV] = kill_at
    return subprocess.run(
        [sys.executable, str(worker), str(workdir)],
        env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip

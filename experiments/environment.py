"""What every measurement (benchmark JSONs, export timings) records about the machine."""

from __future__ import annotations

import datetime as dt
import os
import platform
import shlex
import sys
from pathlib import Path
from typing import Any

import jax
import numpy as np

REPO = Path(__file__).resolve().parent.parent


def _repo_relative(argument: str) -> str:
    # Recorded commands must replay on another checkout: no interpreter or repo path.
    path = Path(argument)
    if path.is_absolute():
        try:
            return path.relative_to(REPO).as_posix()
        except ValueError:
            pass
    return argument


def command_line() -> str:
    """The command that is running, as `python <repo-relative args>` (``python -m
    MODULE ...`` as typed when run as a module)."""
    # sys.argv[0] of `python -m experiments.x` is the module's file; orig_argv keeps `-m`.
    orig = list(getattr(sys, "orig_argv", []))
    if "-m" in orig[1:-1]:
        at = orig.index("-m", 1)
        return shlex.join(["python", "-m", orig[at + 1], *map(_repo_relative, sys.argv[1:])])
    return shlex.join(["python", *map(_repo_relative, sys.argv)])


def environment() -> dict[str, Any]:
    """Device, software versions, date, command line and the load when measured."""
    device = jax.devices()[0]
    return {
        "platform": device.platform,
        "device_kind": device.device_kind,
        "device_count": jax.device_count(),
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "processor": platform.processor(),
        "jax_version": jax.__version__,
        "numpy_version": np.__version__,
        "python": platform.python_version(),
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": command_line(),
        "load_average_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
    }

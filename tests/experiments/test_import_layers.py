"""The import-linter contracts in pyproject.toml hold, and they catch a layer violation."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _lint_imports(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"],
        cwd=root,
        env={"PYTHONPATH": str(root), "PATH": ""},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_contracts_are_kept():
    proc = _lint_imports(REPO)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "Contracts: 3 kept, 0 broken." in proc.stdout


def test_a_model_importing_the_training_loop_breaks_the_layers(tmp_path):
    for package in ("admmjax", "experiments"):
        shutil.copytree(
            REPO / package, tmp_path / package, ignore=shutil.ignore_patterns("results", "*.cc")
        )
    shutil.copy(REPO / "pyproject.toml", tmp_path)
    lenet = tmp_path / "experiments" / "models" / "lenet.py"
    lenet.write_text(lenet.read_text() + "\nfrom experiments import train  # noqa\n")
    proc = _lint_imports(tmp_path)
    assert proc.returncode == 1, proc.stdout[-4000:]
    assert "experiments.models is not allowed to import experiments.train" in proc.stdout
    assert "experiments.models.lenet -> experiments.train" in proc.stdout

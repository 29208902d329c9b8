"""tests/admmjax needs only the library's own dependencies: jax, optax, numpy, pytest, hypothesis.

Two checks: collecting tests/admmjax (conftest included) in a fresh process where
importing flax, tensorflow(-datasets), torch, orbax, matplotlib or ``experiments``
raises; and no import statement anywhere in these files (function-level ones too)
names one of them.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
BLOCKED = {"flax", "tensorflow", "tensorflow_datasets", "torch", "orbax", "matplotlib"}
BLOCKED.add("experiments")

_COLLECT_WITH_BLOCKER = """
import importlib.abc, sys
BLOCKED = set(sys.argv[1].split(","))
class Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"tests/admmjax must not import {name}")
sys.meta_path.insert(0, Blocker())
import pytest
code = pytest.main(["--collect-only", "-q", "-p", "no:cacheprovider", sys.argv[2]])
leaked = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
sys.exit(3 if leaked else int(code))
"""


def _imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            roots |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


def test_collects_with_heavy_dependencies_blocked():
    proc = subprocess.run(
        [sys.executable, "-c", _COLLECT_WITH_BLOCKER, ",".join(sorted(BLOCKED)), str(HERE)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert " tests collected" in proc.stdout


def test_no_file_imports_a_blocked_module():
    found = {f.name: sorted(_imported_roots(f) & BLOCKED) for f in sorted(HERE.glob("*.py"))}
    assert {name: roots for name, roots in found.items() if roots} == {}
    # The top conftest imports experiments.kernels, only for runs beyond tests/admmjax.
    assert _imported_roots(HERE.parent / "conftest.py") & BLOCKED == {"experiments"}
    assert _imported_roots(HERE / "test_sparsity.py") >= {"admmjax", "jax", "hypothesis"}

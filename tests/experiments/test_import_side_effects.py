"""Importing any ``experiments`` module changes no global state (issue 21, item 5)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# A fresh process: this one's conftest already called configure_cpu.
_CODE = """
import json, os, pkgutil, importlib
import jax
import experiments
before_env = dict(os.environ)
before_cfg = {k: repr(v) for k, v in jax.config.values.items()}
names = [m.name for m in pkgutil.walk_packages(experiments.__path__, "experiments.")
         if not m.name.startswith("experiments.bench")]  # benchmark scripts, not library
for name in names:
    importlib.import_module(name)
after_cfg = {k: repr(v) for k, v in jax.config.values.items()}
print(json.dumps({"names": names, "env": dict(os.environ) == before_env,
                  "cfg": after_cfg == before_cfg}))
"""


def test_importing_every_experiments_module_leaves_environ_and_jax_config_alone():
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    out = subprocess.run(
        [sys.executable, "-c", _CODE], cwd=REPO, env=env, capture_output=True, text=True,
        check=True,
    )  # fmt: skip
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert "experiments.kernels.native_kernels" in result["names"]
    assert "experiments.train" in result["names"]
    assert result["env"], "an experiments import changed os.environ"
    assert result["cfg"], "an experiments import changed jax.config"

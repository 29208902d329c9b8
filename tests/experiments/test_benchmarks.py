"""Every benchmark script in experiments/bench/ runs in its --quick mode and writes sane JSON.

Each ``experiments/bench/bench_*.py`` is run as a subprocess (its own JAX backend, as
from the command line) with ``--quick --out <tmp>/<name>.json``; the test asserts exit
status 0 and that the JSON holds the figures the script reports, as finite positive
numbers. Scripts listed in ``EXPECTED`` get their figures checked by name; any other
``bench_*.py`` (a new benchmark) must at least run and write a JSON object. The
selected scripts start together, ``max(2, cpu_count)`` at a time (most of a quick run
is Python imports and XLA compilation, single-threaded), so the whole file takes
about as long as its slowest few scripts.

``bench_torch.py`` needs PyTorch, an optional benchmark-only dependency
(``requirements-bench.txt``, which CI installs): without it that test fails, it is
not skipped.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
BENCH = REPO / "experiments" / "bench"
SCRIPTS = sorted(p.stem for p in BENCH.glob("bench_*.py"))


def _positive(value: Any) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value > 0
    )


def _check_all(rows: list[dict[str, Any]], keys: tuple[str, ...], where: str) -> None:
    assert rows, f"{where}: no rows"
    for row in rows:
        bad = {k: row.get(k) for k in keys if not _positive(row.get(k))}
        assert not bad, f"{where}: not finite positive numbers: {bad}"


def _projection(r: dict[str, Any]) -> None:
    assert _positive(r["memory_bandwidth"]["copy_gb_per_s"])
    _check_all(r["results"], ("n", "k", "top_k_over_ours", "sort_over_ours"), "projection")
    for row in r["results"]:
        assert row["masks_identical"] is True
        for method in ("ours", "top_k", "sort", "np.partition"):
            _check_all([row["methods"][method]], ("median_s", "gb_per_s", "sweeps"), method)


def _data_parallel(r: dict[str, Any]) -> None:
    _check_all(r["results"], ("step_ms", "images_per_s", "first_loss"), "data_parallel")


def _wstep(r: dict[str, Any]) -> None:
    assert {row["model"] for row in r["results"]} == {"lenet300_100", "lenet5"}
    _check_all(r["results"], ("plain_step_ms", "wstep_step_ms", "ratio"), "wstep")


def _torch(r: dict[str, Any]) -> None:
    assert r["torch_version"]
    assert {row["model"] for row in r["training"]} == {"lenet300_100", "lenet5"}
    keys = ("ours_step_ms", "torch_step_ms", "ours_epoch_s", "torch_epoch_s", "torch_over_ours")
    _check_all(r["training"], keys, "torch training")
    _check_all(r["projection"], ("n", "topk_over_ours", "kthvalue_over_ours"), "torch proj")


def _wallclock(r: dict[str, Any]) -> None:
    keys = ("measured_epoch_s", "ours_projected_s", "official_projected_s", "ours_recorded_s")
    _check_all([r], keys, "wallclock")
    assert r["official"]["images"] == 190_000 * 50


def _epoch(r: dict[str, Any]) -> None:
    assert list(r["results"]) == ["lenet5"]  # --quick: one model
    for model, rows in r["results"].items():
        _check_all(list(rows.values()), ("ms_per_step", "epoch_seconds"), f"epoch {model}")


def _admm_transform(r: dict[str, Any]) -> None:
    assert [row["model"] for row in r["results"]] == ["lenet300_100"]  # --quick: one model
    keys = ("plain_step_ms", "penalty_step_ms", "admm_step_ms", "ratio", "penalty_ratio")
    _check_all(r["results"], keys, "admm_transform")
    keys = ("entries", "stacked_ms", "unstacked_ms", "stacked_over_unstacked")
    _check_all(r["stacked_projection"], keys, "stacked projection")


def _alexnet(r: dict[str, Any]) -> None:
    assert r, "alexnet: empty result"


def _oneshot(r: dict[str, Any]) -> None:
    assert r["results"], "oneshot: no results"
    for row in r["results"]:
        methods = row["methods"]
        assert set(methods) == {"magnitude", "wanda", "sparsegpt", "layerwise_admm"}
        _check_all(list(methods.values()), ("median_s", "relative_error", "nonzeros"), "oneshot")
        keys = ("iterations", "z_step_s", "z_step_share", "w_step_s", "refit_s", "refit_iterations")
        _check_all([row["layerwise_admm"]], keys, "oneshot admm")
        assert methods["layerwise_admm"]["relative_error"] <= methods["sparsegpt"]["relative_error"]
        exact = row["layerwise_admm"]["exact_refit"]  # the PCG refit is as good as exact
        assert abs(exact["relative_error_gap"]) < 1e-3, exact


def _shrink(r: dict[str, Any]) -> None:
    assert {row["model"] for row in r["results"]} == {"resnet18", "lm1b_decoder"}
    keys = ("params_reduction", "macs_reduction", "full_ms", "shrunk_ms", "time_reduction")
    _check_all(r["results"], keys, "shrink")
    for row in r["results"]:
        assert row["params_shrunk"] < row["params_full"] and row["macs_shrunk"] < row["macs_full"]
        assert row["max_abs_output_diff"] < 1e-3, row


EXPECTED: dict[str, Callable[[dict[str, Any]], None]] = {
    "bench_projection": _projection,
    "bench_data_parallel": _data_parallel,
    "bench_wstep": _wstep,
    "bench_torch": _torch,
    "bench_wallclock": _wallclock,
    "bench_epoch": _epoch,
    "bench_alexnet": _alexnet,
    "bench_oneshot": _oneshot,
    "bench_admm_transform": _admm_transform,
    "bench_shrink": _shrink,
}


def _env(mnist_dir: str) -> dict[str, str]:
    env = dict(os.environ, TFDS_DATA_DIR=mnist_dir, JAX_PLATFORMS="cpu")
    # The scripts choose their own CPU kernel flags: of the tests' XLA_FLAGS keep only
    # conftest's optimisation level (--quick figures are smoke output, not measurements).
    flags = env.pop("XLA_FLAGS", "").split()
    kept = [f for f in flags if f.startswith("--xla_backend_optimization_level")]
    if kept:
        env["XLA_FLAGS"] = " ".join(kept)
    return env


def test_bench_scripts_found():
    for name in ("bench_projection", "bench_data_parallel", "bench_wstep", "bench_torch"):
        assert name in SCRIPTS
    assert "bench_wallclock" in SCRIPTS


@pytest.mark.torch
def test_torch_is_installed():
    """The PyTorch peer benchmark is part of CI: a missing torch is a failure."""
    try:
        import torch  # noqa: F401
    except ImportError:
        pytest.fail(
            "PyTorch is missing: bench_torch.py needs it. Install the optional benchmark "
            "dependency: .venv/bin/pip install -r requirements-bench.txt"
        )


def _run(script: str, out: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(BENCH / f"{script}.py"), "--quick", "--out", str(out)]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def quick_runs(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, mnist_dir: str
) -> Iterator[dict[str, tuple[Future, Path]]]:
    """Starts the ``--quick`` run of every selected script at once; script -> (run, JSON)."""
    selected = [
        item.callspec.params["script"]
        for item in request.session.items
        if item.originalname == "test_bench_quick" and hasattr(item, "callspec")
    ]
    out_dir = tmp_path_factory.mktemp("bench")
    env = _env(mnist_dir)
    with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 1)) as pool:
        runs = {}
        for script in dict.fromkeys(selected):
            out = out_dir / f"{script}.json"
            runs[script] = (pool.submit(_run, script, out, env), out)
        yield runs


@pytest.mark.slow
@pytest.mark.parametrize(
    "script",
    [pytest.param(s, marks=pytest.mark.torch) if s == "bench_torch" else s for s in SCRIPTS],
)
def test_bench_quick(script: str, quick_runs: dict[str, tuple[Future, Path]]):
    future, out = quick_runs[script]
    proc = future.result()
    assert proc.returncode == 0, (
        f"{' '.join(proc.args)} exited {proc.returncode}:\n{proc.stdout[-2000:]}\n"
        f"{proc.stderr[-4000:]}"
    )
    result = json.loads(out.read_text())
    assert isinstance(result, dict) and result
    EXPECTED.get(script, lambda r: None)(result)

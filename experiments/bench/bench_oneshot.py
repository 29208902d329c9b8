"""Times the one-shot layer-wise pruners on one layer, and the Z-step's share of ADMM's.

One random layer (default 512 x 2048, Flax ``(in, out)`` layout) with calibration
inputs of ``--tokens`` rows (Gaussian, features mixed by a random matrix so H is not
diagonal) is pruned by ``admmjax.magnitude_prune``, ``wanda_prune``,
``sparsegpt_prune`` and ``layerwise_admm_prune`` (defaults: dampening 1% of mean
diag H, SparseGPT block 128, ALPS's rho schedule, PCG refit) for each target.
Every solver is jitted with its target static, warmed up (compiled) once, then timed
(median of ``--repeats`` calls), all in one process, so their ratios share the load
of the moment. For layer-wise ADMM the script also reports:

* ``iterations``, ``final_rho``, ``refit_iterations``, ``refit_residual``
  (``return_info``: ADMM iterations, CG steps of the refit, its largest relative
  residual);
* ``z_step_s``: one jitted Z-step alone (admmjax's exact projection of an (in, out)
  array onto the target, the call ADMM makes every iteration), median of the repeats;
  ``z_step_share``: ``iterations x z_step_s / admm_s``;
* ``w_step_s`` / ``w_step_share``: likewise one ``(in, in) @ (in, out)`` product, the
  W-step's cost per iteration (one product where ``in < 3 out``, two otherwise);
* ``refit_s`` / ``refit_share``: the PCG refit, timed as the whole call minus the
  whole call with ``refit=None`` (the same ADMM iterations run);
* ``exact_refit``: the whole call with ``refit="exact"`` (the direct per-column
  Cholesky solve): one timed call after the compile call, its error and its
  ``relative_error_gap`` = (PCG error - exact error) / exact error; ``--no-exact``
  skips it (it takes minutes at 512 x 2048).

``relative_error`` is ``||X W - X W'||^2 / ||X W||^2`` of each result (the layer-wise
objective, undampened). ::

    python experiments/bench/bench_oneshot.py              # 512 x 2048, 70% and 2:4
    python experiments/bench/bench_oneshot.py --shape 128 512 --targets 0.5 0.9 2:4
    python experiments/bench/bench_oneshot.py --quick      # CI smoke run

Results go to ``experiments/results/bench/oneshot_<platform>.json`` (``--quick``:
``oneshot_<platform>_quick.json``) and a markdown table is printed. Not a test.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # run as a script: make `admmjax` importable
    sys.path.insert(0, str(REPO))

import jax  # noqa: E402
import numpy as np  # noqa: E402

import admmjax  # noqa: E402
from experiments.bench.bench_projection import timed  # noqa: E402
from experiments.environment import environment  # noqa: E402


def parse_target(text: str) -> Any:
    """``0.7`` -> a sparsity fraction, ``2:4`` -> ``admmjax.NM(2, 4)``."""
    if ":" in text:
        n, m = text.split(":")
        return admmjax.NM(int(n), int(m))
    return float(text)


def make_layer(n_in: int, n_out: int, tokens: int, seed: int) -> tuple[np.ndarray, ...]:
    """A random kernel, its calibration inputs' Gram matrix and input norms."""
    rng = np.random.default_rng(seed)
    mix = np.eye(n_in) + 0.3 * rng.standard_normal((n_in, n_in)) / np.sqrt(n_in)
    x = (rng.standard_normal((tokens, n_in)) @ mix).astype(np.float32)
    w = (rng.standard_normal((n_in, n_out)) / np.sqrt(n_in)).astype(np.float32)
    gram = np.asarray(admmjax.gram_matrix(x))
    return w, gram, np.asarray(admmjax.input_norms(x))


def bench_target(
    target: Any,
    w: np.ndarray,
    gram: np.ndarray,
    norms: np.ndarray,
    repeats: int,
    exact: bool = True,
    rho: float | None = None,
) -> dict[str, Any]:
    """Times of every solver on one target, with the ADMM breakdown (``rho``: ADMM's
    initial rho, ``None`` for the library's default)."""
    admm = functools.partial(
        admmjax.layerwise_admm_prune, target=target, **({} if rho is None else {"rho": rho})
    )
    dense = float(admmjax.layer_error(w, 0 * w, gram))
    solvers = {
        "magnitude": jax.jit(lambda w, h, n: admmjax.magnitude_prune(w, target)),
        "wanda": jax.jit(lambda w, h, n: admmjax.wanda_prune(w, n, target)),
        "sparsegpt": jax.jit(lambda w, h, n: admmjax.sparsegpt_prune(w, h, target)),
        "layerwise_admm": jax.jit(lambda w, h, n: admm(w, h, return_info=True)),
    }
    row: dict[str, Any] = {"target": str(target), "methods": {}}
    for name, fn in solvers.items():
        t0 = time.perf_counter()
        jax.block_until_ready(fn(w, gram, norms))
        compile_s = time.perf_counter() - t0
        median, times, out = timed(lambda fn=fn: fn(w, gram, norms), repeats)
        if name == "layerwise_admm":
            out, info = out
        row["methods"][name] = {
            "median_s": median,
            "times_s": times,
            "first_call_s": compile_s,
            "relative_error": float(admmjax.layer_error(w, out, gram)) / dense,
            "nonzeros": int(np.count_nonzero(np.asarray(out))),
        }
        print(f"{target} {name}: {median:.3f} s", file=sys.stderr)

    # The PCG refit's cost: the same ADMM run without it (the same iterations run).
    no_refit = jax.jit(lambda w, h: admm(w, h, refit=None))
    admm_s = row["methods"]["layerwise_admm"]["median_s"]
    refit_s = admm_s - timed(lambda: no_refit(w, gram), repeats)[0]
    z_step = jax.jit(lambda v: admmjax.project(v, target))
    z_step_s, _, _ = timed(lambda: z_step(w), max(repeats, 5))
    w_step = jax.jit(lambda h, v: h @ v)
    w_step_s, _, _ = timed(lambda: w_step(gram, w), max(repeats, 5))
    iterations = int(info.iterations)
    row["layerwise_admm"] = {
        "iterations": iterations,
        "final_rho": float(info.rho),
        "refit_iterations": int(info.refit_iterations),
        "refit_residual": float(info.refit_residual),
        "z_step_s": z_step_s,
        "z_step_share": iterations * z_step_s / admm_s,
        "w_step_s": w_step_s,
        "w_step_share": iterations * w_step_s / admm_s,
        "refit_s": max(refit_s, 1e-9),
        "refit_share": max(refit_s, 1e-9) / admm_s,
    }
    if exact:
        exact_fn = jax.jit(lambda w, h: admm(w, h, refit="exact"))
        t0 = time.perf_counter()
        jax.block_until_ready(exact_fn(w, gram))
        first_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        out = jax.block_until_ready(exact_fn(w, gram))
        exact_error = float(admmjax.layer_error(w, out, gram)) / dense
        pcg_error = row["methods"]["layerwise_admm"]["relative_error"]
        exact_s = time.perf_counter() - t0
        row["layerwise_admm"]["exact_refit"] = {
            "s": exact_s,
            "first_call_s": first_s,
            "relative_error": exact_error,
            "relative_error_gap": (pcg_error - exact_error) / exact_error,
            "nonzeros": int(np.count_nonzero(np.asarray(out))),
        }
        print(
            f"{target} layerwise_admm exact refit: {exact_s:.3f} s",
            file=sys.stderr,
        )
    sparsegpt_s = row["methods"]["sparsegpt"]["median_s"]
    row["admm_over_sparsegpt_time"] = admm_s / sparsegpt_s
    return row


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| target | method | median s | relative error | nonzeros |",
        "|---|---|---|---|---|",
    ]
    for row in rows:
        for name, m in row["methods"].items():
            lines.append(
                f"| {row['target']} | {name} | {m['median_s']:.4f} | "
                f"{m['relative_error']:.4f} | {m['nonzeros']} |"
            )
    lines.append("")
    lines.append(
        "| target | ADMM iterations | Z-step share | W-step share | PCG refit s (steps) "
        "| exact refit s | error gap PCG vs exact | ADMM / SparseGPT |"
    )
    lines.append("|---|---|---|---|---|---|---|---|")
    for row in rows:
        a = row["layerwise_admm"]
        exact = a.get("exact_refit")
        lines.append(
            f"| {row['target']} | {a['iterations']} | {a['z_step_share']:.1%} | "
            f"{a['w_step_share']:.1%} | {a['refit_s']:.3f} ({a['refit_iterations']}) | "
            + (f"{exact['s']:.1f} | {exact['relative_error_gap']:+.1e} | " if exact else "- | - | ")
            + f"{row['admm_over_sparsegpt_time']:.2f}x |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", type=int, nargs=2, default=[512, 2048], metavar=("IN", "OUT"))
    parser.add_argument("--tokens", type=int, default=4096, help="calibration tokens")
    parser.add_argument("--targets", nargs="+", default=["0.7", "2:4"], help="e.g. 0.7 2:4")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="a small layer, one repeat")
    parser.add_argument(
        "--admm-rho",
        type=float,
        default=None,
        help="layer-wise ADMM's initial rho [default: the library's, ALPS's 0.1]",
    )
    parser.add_argument(
        "--no-exact",
        dest="exact",
        action="store_false",
        help="skip layer-wise ADMM with the exact (direct) refit, which takes minutes",
    )
    parser.add_argument("--out", type=Path, default=None, help="JSON path")
    args = parser.parse_args(argv)
    if args.quick:
        args.shape, args.tokens, args.targets, args.repeats = [64, 256], 512, ["0.7"], 1
    targets = [parse_target(t) for t in args.targets]
    plat = jax.devices()[0].platform
    name = f"oneshot_{plat}_quick.json" if args.quick else f"oneshot_{plat}.json"
    out = args.out or REPO / "experiments" / "results" / "bench" / name

    w, gram, norms = make_layer(*args.shape, args.tokens, args.seed)
    result = {
        "benchmark": "one-shot layer-wise pruners on one (in, out) layer",
        **environment(),
        "shape": args.shape,
        "tokens": args.tokens,
        "repeats": args.repeats,
        "seed": args.seed,
        "admm_rho": args.admm_rho,
        "statistic": "median of timed calls after one warm-up (compile) call",
        "results": [],
    }
    rows = result["results"]
    out.parent.mkdir(parents=True, exist_ok=True)
    for target in targets:  # written after each target: a long run keeps what it measured
        rows.append(bench_target(target, w, gram, norms, args.repeats, args.exact, args.admm_rho))
        out.write_text(json.dumps(result, indent=2) + "\n")
    print(markdown(rows))
    print(f"\n{plat}, jax {jax.__version__}; wrote {out}")
    return result


if __name__ == "__main__":
    from experiments.kernels import configure_cpu

    configure_cpu()  # what the CLIs run with (a no-op where XLA_FLAGS names the option)
    main()

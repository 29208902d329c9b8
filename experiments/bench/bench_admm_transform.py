"""Cost of ``admmjax.admm`` on steps without a Z/U update, and of the per-slice projection.

1. Per-step cost. For each model (the LeNets of ``experiments/configs/paper/``, batch
   128 of real MNIST; the byte-level GPT of ``experiments/configs/beyond/gpt_kjv.py``,
   32 windows of 128 bytes of the KJV, its 24 attention and MLP kernels pruned), with
   the pipeline's ``loss_fn`` and ``make_train_step`` with params and optimizer state
   donated, as ``run_stage`` runs it, three transforms side by side:

   * plain: the config's pretraining optimizer (Adam, with L2 for the LeNets);
   * penalty: ``optax.chain(admmjax.penalty(cfg.rho), <the same optimizer>)`` with the
     ADMM state passed to the step (the functional W-step, as ``run_stage`` runs it):
     what the penalty's arithmetic and its extra read of ``Z - U`` cost by themselves;
   * admm: ``admmjax.admm(<the same optimizer>, targets, rho=cfg.rho, every=10**9)``:
     the penalty, the optimizer, the step counter and the loop whose Z/U update is
     never run in the timed steps.

   Timed in alternation (A B C, C B A, ...) for ``--repeats`` rounds of ``--steps``
   steps; the figures are the medians of the per-round ratios over plain. Target:
   admm / plain <= 1.05.

2. Per-slice projection. ``admmjax.project`` of one stacked leaf ``(L, *slice)``
   with ``Stacked(0.75)`` (one budget per slice, a ``vmap`` of the exact projection)
   against the unstacked target ``0.75`` on the same leaf (one budget over all its
   entries), both jitted, median of ``--repeats`` calls.

    python experiments/bench/bench_admm_transform.py          # both parts, full sizes
    python experiments/bench/bench_admm_transform.py --quick  # CI smoke run, seconds

Results go to ``experiments/results/bench/admm_transform_<platform>.json``
(``--quick``: ``admm_transform_<platform>_quick.json``).
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # run as a script: make `admmjax`, `experiments` importable
    sys.path.insert(0, str(REPO))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import optax  # noqa: E402

import admmjax  # noqa: E402
from experiments.bench.common import (  # noqa: E402
    CONFIGS,
    LM_CONFIGS,
    add_model_options,
    chosen_models,
    default_data_dir,
    device_batches,
    donating_step,
    interleaved,
    make_pipeline,
    ratio_stats,
    run_steps,
)
from experiments.environment import environment  # noqa: E402

TARGET = 1.05
NEVER = 10**9  # every: no Z/U update inside the timed steps
MODELS = {**CONFIGS, **LM_CONFIGS}
# Rounds of 1-5 s: steady ratios (the GPT's step is ~0.45 s on 2 CPU cores).
DEFAULT_STEPS = {"lenet300_100": 2000, "lenet5": 200, "gpt_kjv": 10}
STACKED_SHAPES = ((4, 256, 1024), (12, 768, 768))
QUICK_SHAPES = ((4, 64, 64),)


def bench_step(model: str, steps: int, repeats: int, data_dir: str) -> dict[str, Any]:
    """Plain optimizer step vs ``admm(optimizer)`` step of ``model``, interleaved."""
    pipe = make_pipeline(model, data_dir)
    plain_tx = pipe.transform("pretrain")
    txs = {
        "plain": plain_tx,
        "penalty": optax.chain(admmjax.penalty(pipe.cfg.rho), plain_tx),
        "admm": admmjax.admm(plain_tx, pipe.targets, rho=pipe.cfg.rho, every=NEVER),
    }
    steps_fn, states = {}, {}
    for name, tx in txs.items():
        steps_fn[name], states[name] = donating_step(pipe, tx)
    admm_states = {"penalty": admmjax.init(pipe.init_params, pipe.targets)}
    batches = device_batches(pipe, min(steps, 64))
    key = jax.random.key(0)
    feeds = {name: itertools.cycle(batches) for name in states}

    def run(name: str, count: int) -> float:
        return run_steps(
            steps_fn[name], states[name], feeds[name], count, key, admm_states.get(name)
        )

    for name in states:  # compile and warm up
        run(name, 2)
    times = interleaved({name: partial(run, name, steps) for name in states}, repeats)
    assert int(admmjax.admm_state(states["admm"][1]).admm.count) == 0  # no Z/U update ran
    ratios = ratio_stats(times["admm"], times["plain"])
    penalty = ratio_stats(times["penalty"], times["plain"])
    return {
        "model": model,
        "batch_size": pipe.cfg.batch_size,
        "steps": steps,
        "repeats": repeats,
        **{f"{name}_times_s": times[name] for name in states},
        **{f"{name}_step_ms": 1e3 * statistics.median(times[name]) / steps for name in states},
        **ratios,
        "ratio": ratios["median_paired_ratio"],
        "penalty_ratio": penalty["median_paired_ratio"],
        "within_target": ratios["median_paired_ratio"] <= TARGET,
    }


def _median_call_s(fn: Any, x: jax.Array, repeats: int) -> float:
    jax.block_until_ready(fn(x))  # compile
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(x))
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def bench_stacked(shape: tuple[int, ...], repeats: int) -> dict[str, Any]:
    """``project`` with ``Stacked(0.75)`` vs the unstacked ``0.75`` on one leaf of ``shape``."""
    x = jax.random.normal(jax.random.key(0), shape)
    fns = {
        name: jax.jit(lambda v, t=target: admmjax.project({"w": v}, {"w": t})["w"])
        for name, target in (("stacked", admmjax.Stacked(0.75)), ("unstacked", 0.75))
    }
    times = {name: _median_call_s(fn, x, repeats) for name, fn in fns.items()}
    kept = jnp.count_nonzero(fns["stacked"](x).reshape(shape[0], -1), axis=1)
    per_slice = x.size // shape[0]
    assert all(int(k) == per_slice - int(0.75 * per_slice) for k in kept)
    return {
        "shape": list(shape),
        "entries": int(x.size),
        "repeats": repeats,
        "stacked_ms": 1e3 * times["stacked"],
        "unstacked_ms": 1e3 * times["unstacked"],
        "stacked_over_unstacked": times["stacked"] / times["unstacked"],
    }


def markdown(steps: list[dict[str, Any]], stacked: list[dict[str, Any]]) -> str:
    lines = [
        "| model | plain step ms | penalty step ms | admm step ms | penalty / plain "
        "| admm / plain (median of rounds) | range | <= 1.05 |",
        "|---|---:|---:|---:|---:|---:|---|---|",
    ]
    for r in steps:
        lines.append(
            f"| {r['model']} | {r['plain_step_ms']:.3f} | {r['penalty_step_ms']:.3f} "
            f"| {r['admm_step_ms']:.3f} | {r['penalty_ratio']:.3f} "
            f"| {r['ratio']:.3f} | {r['min_paired_ratio']:.3f}-{r['max_paired_ratio']:.3f} "
            f"| {'yes' if r['within_target'] else 'no'} |"
        )
    lines += ["", "| leaf shape | Stacked(0.75) ms | 0.75 ms | stacked / unstacked |"]
    lines.append("|---|---:|---:|---:|")
    for r in stacked:
        lines.append(
            f"| {'x'.join(map(str, r['shape']))} | {r['stacked_ms']:.2f} "
            f"| {r['unstacked_ms']:.2f} | {r['stacked_over_unstacked']:.2f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Parses the options, runs both parts, writes the JSON and prints the tables."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_model_options(parser, "to time", MODELS)
    parser.add_argument(
        "--steps",
        type=int,
        default=0,
        help="steps per timed round (0: 2000 for LeNet-300-100, 200 for LeNet-5, 10 for the "
        "GPT) [default: 0]",
    )
    parser.add_argument("--repeats", type=int, default=9, help="timed rounds [default: 9]")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="CI smoke run: 2 steps, 2 rounds, one small leaf, LeNet-300-100 unless --models",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="JSON output path [default: "
        "experiments/results/bench/admm_transform_<platform>[_quick].json]",
    )
    args = parser.parse_args(argv)
    models = chosen_models(parser, args.models, MODELS)
    if args.steps < 0 or args.repeats < 1:
        parser.error(f"--steps must be >= 0 and --repeats >= 1, got {args.steps}, {args.repeats}")
    shapes = STACKED_SHAPES
    if args.quick:
        args.steps, args.repeats, shapes = 2, 2, QUICK_SHAPES
        if args.models == parser.get_default("models"):  # one model unless asked for more
            models = models[:1]
    data_dir = args.data_dir or default_data_dir()

    step_rows = []
    for model in models:
        step_rows.append(
            bench_step(model, args.steps or DEFAULT_STEPS[model], args.repeats, data_dir)
        )
        r = step_rows[-1]
        print(f"{model}: {r['plain_step_ms']:.3f} vs {r['admm_step_ms']:.3f} ms, "
              f"ratio {r['ratio']:.3f} (penalty alone {r['penalty_ratio']:.3f})",
              file=sys.stderr, flush=True)  # fmt: skip
    stacked_rows = [bench_stacked(shape, args.repeats) for shape in shapes]

    device = jax.devices()[0]
    plat = device.platform
    name = f"admm_transform_{plat}_quick.json" if args.quick else f"admm_transform_{plat}.json"
    out = args.out or REPO / "experiments" / "results" / "bench" / name
    result = {
        "benchmark": "admmjax.admm(optimizer) per step without a Z/U update vs the plain "
        "optimizer; per-slice (Stacked) projection vs the unstacked projection",
        **environment(),
        "target_ratio": TARGET,
        "statistic": "ratio = median over rounds of (admm round time / plain round time), "
        "rounds interleaved A B, B A, ...; projections: median call time",
        "results": step_rows,
        "stacked_projection": stacked_rows,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(markdown(step_rows, stacked_rows))
    print(f"\n{plat} ({device.device_kind}), jax {jax.__version__}; wrote {out}")
    return result


if __name__ == "__main__":
    from experiments.kernels import configure_cpu

    configure_cpu()  # what the CLIs run with (a no-op where XLA_FLAGS names the option)
    main()

"""Overhead of the ADMM W-step over a plain training step, for both LeNets.

Both steps are the pipeline's own (``experiments.train.Pipeline`` built from
``experiments/configs/paper/<model>.py``, batch 128): the same ``loss_fn`` (``to_float`` on
device, the config's random translations, cross-entropy), run through
``admmjax.make_train_step`` as ``run_stage`` does (params and optimizer state
donated, a fresh ``fold_in`` key per step), on the same real MNIST batches:

* plain: the pretraining transform, ``adam_with_l2`` (``add_decayed_weights`` then
  Adam, cosine learning rate);
* W-step: the ADMM transform, ``optax.chain(admmjax.penalty(rho_schedule),
  adam_with_l2)``, with an ``admm_state`` from ``admmjax.init`` (Z = P(W), U = 0).

Both variants are compiled, then timed in alternation (A B, B A, ...) for
``--repeats`` rounds of ``--steps`` consecutive steps each, so load drifts of a
shared CPU hit both alike. The figure is the ratio W-step / plain: the median of the
per-round ratios (and the ratio of the medians). Target: at most 1.05. Each model
is measured with the config's augmentation and without it (``augment_shift=0``:
the stricter ratio, since augmentation costs both variants the same).

    python experiments/bench/bench_wstep.py                  # both LeNets, 7 rounds of 20/200 steps
    python experiments/bench/bench_wstep.py --models lenet5 --repeats 11
    python experiments/bench/bench_wstep.py --quick          # CI smoke run, seconds

Results go to ``experiments/results/bench/wstep_<platform>.json`` (``--quick``:
``wstep_<platform>_quick.json``).
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # run as a script: make `admmjax`, `experiments` importable
    sys.path.insert(0, str(REPO))

import jax  # noqa: E402

import admmjax  # noqa: E402
from experiments.bench.common import (  # noqa: E402
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
DEFAULT_STEPS = {"lenet300_100": 200, "lenet5": 20}


def bench_model(
    model: str, augment: bool, steps: int, repeats: int, data_dir: str
) -> dict[str, Any]:
    """Plain step vs W-step of ``model``, interleaved; returns times and ratios."""
    overrides = {} if augment else {"augment_shift": 0}
    pipe = make_pipeline(model, data_dir, **overrides)
    params = pipe.init_params
    plain_tx = pipe.transform("pretrain")
    admm_tx = pipe.transform("admm")
    plain, plain_state = donating_step(pipe, plain_tx)
    wstep, wstep_state = donating_step(pipe, admm_tx)
    admm_state = pipe.replicate(admmjax.init(params, pipe.targets))
    batches = device_batches(pipe, min(steps, 64))
    key = jax.random.key(0)

    states = {"plain": plain_state, "wstep": wstep_state}
    feeds = {name: itertools.cycle(batches) for name in states}
    # Compile and warm up both (one step each, then a few untimed ones).
    run_steps(plain, states["plain"], feeds["plain"], 2, key)
    run_steps(wstep, states["wstep"], feeds["wstep"], 2, key, admm_state)

    runs = {
        "plain": lambda: run_steps(plain, states["plain"], feeds["plain"], steps, key),
        "wstep": lambda: run_steps(wstep, states["wstep"], feeds["wstep"], steps, key, admm_state),
    }
    times = interleaved(runs, repeats)
    ratios = ratio_stats(times["wstep"], times["plain"])
    cfg = pipe.cfg
    return {
        "model": model,
        "augment_shift": cfg.augment_shift,
        "batch_size": cfg.batch_size,
        "rho": cfg.rho,
        "rho_growth": cfg.rho_growth,
        "weight_decay": cfg.weight_decay,
        "admm_schedule": cfg.admm_schedule,
        "steps": steps,
        "repeats": repeats,
        "plain_times_s": times["plain"],
        "wstep_times_s": times["wstep"],
        "plain_step_ms": 1e3 * statistics.median(times["plain"]) / steps,
        "wstep_step_ms": 1e3 * statistics.median(times["wstep"]) / steps,
        **ratios,
        "ratio": ratios["median_paired_ratio"],
        "within_target": ratios["median_paired_ratio"] <= TARGET,
    }


def markdown(rows: list[dict[str, Any]]) -> str:
    """One line per (model, augmentation)."""
    lines = [
        "| model | shift px | plain step ms | W-step ms | W-step / plain (median of rounds) "
        "| ratio of medians | range | <= 1.05 |",
        "|---|---:|---:|---:|---:|---:|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['augment_shift']} | {r['plain_step_ms']:.2f} "
            f"| {r['wstep_step_ms']:.2f} | {r['ratio']:.3f} | {r['ratio_of_medians']:.3f} "
            f"| {r['min_paired_ratio']:.3f}-{r['max_paired_ratio']:.3f} "
            f"| {'yes' if r['within_target'] else 'no'} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Parses the options, measures every model, writes the JSON and prints the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_model_options(parser, "with a config in experiments/configs/")
    parser.add_argument(
        "--steps",
        type=int,
        default=0,
        help="consecutive steps per timed round (0: 200 for LeNet-300-100, 20 for "
        "LeNet-5) [default: 0]",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=7,
        help="timed rounds per variant, alternating plain and W-step [default: 7]",
    )
    parser.add_argument(
        "--augment",
        choices=("both", "config", "none"),
        default="both",
        help="measure with the config's random translations, without them "
        "(augment_shift=0), or both [default: both]",
    )
    parser.add_argument(
        "--quick", action="store_true", help="CI smoke run: 2 steps, 2 rounds, config only"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="JSON output path [default: experiments/results/bench/wstep_<platform>[_quick].json]",
    )
    args = parser.parse_args(argv)
    models = chosen_models(parser, args.models)
    if args.quick:
        args.steps, args.repeats, args.augment = 2, 2, "config"
    augments = {"both": (True, False), "config": (True,), "none": (False,)}[args.augment]
    data_dir = args.data_dir or default_data_dir()

    rows = []
    for model in models:
        for augment in augments:
            steps = args.steps or DEFAULT_STEPS[model]
            rows.append(bench_model(model, augment, steps, args.repeats, data_dir))
            r = rows[-1]
            print(
                f"{model} shift {r['augment_shift']}: {r['plain_step_ms']:.2f} vs "
                f"{r['wstep_step_ms']:.2f} ms, ratio {r['ratio']:.3f}",
                file=sys.stderr,
                flush=True,
            )

    device = jax.devices()[0]
    plat = device.platform
    name = f"wstep_{plat}_quick.json" if args.quick else f"wstep_{plat}.json"
    out = args.out or REPO / "experiments" / "results" / "bench" / name
    result = {
        "benchmark": "ADMM W-step (penalty + L2 + Adam) over a plain training step "
        "(L2 + Adam), pipeline loss and batches",
        **environment(),
        "target_ratio": TARGET,
        "statistic": "ratio = median over rounds of (W-step round time / plain round time), "
        "rounds interleaved A B, B A, ...; ratio_of_medians given too",
        "results": rows,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(markdown(rows))
    print(f"\n{plat} ({device.device_kind}), jax {jax.__version__}; wrote {out}")
    return result


if __name__ == "__main__":
    from experiments.kernels import configure_cpu

    configure_cpu()  # what the CLIs run with (a no-op where XLA_FLAGS names the option)
    main()

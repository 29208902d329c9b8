"""What ``admmjax.shrink`` saves: parameters, MACs and measured inference time.

Two re-typed Flax models (``tests/integration/_flax_models.py``), each pruned with
coupled ``Structured`` groups at ``--sparsity`` and then shrunk to dense smaller shapes:

* ResNet18 (flax ``examples/imagenet``, narrow, 32x32 inputs, random BatchNorm
  parameters and statistics): in every block the first conv's filters, its BatchNorm
  scale, bias, mean and var, and the second conv's input channels (group
  ``<block>/mid``);
* the lm1b_nnx decoder stack (scanned layers): the heads of q/k/v and the out
  projection, one selection per layer.

For each model: parameter counts (all params leaves), MACs per example
(``experiments.macs.count_macs``: every ``dot_general`` and convolution in the traced
forward pass, attention scores included), a check that the shrunk model gives the
pruned model's outputs (max abs difference), and the forward time of the jitted
full (pruned) and shrunk models on the same batch: both compiled first, then timed
in alternation for ``--repeats`` rounds of ``--iters`` calls each; the figure is the
median round time per call and the median of the per-round ratios.

    python experiments/bench/bench_shrink.py              # default sizes
    python experiments/bench/bench_shrink.py --quick      # CI smoke run, seconds

Results go to ``experiments/results/bench/shrink_<platform>.json`` (``--quick``:
``shrink_<platform>_quick.json``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # run as a script: make `admmjax`, `experiments`, `tests` importable
    sys.path.insert(0, str(REPO))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402

import admmjax  # noqa: E402
from experiments.analysis.macs import count_macs  # noqa: E402
from experiments.bench.common import interleaved, ratio_stats  # noqa: E402
from experiments.environment import environment  # noqa: E402
from tests.integration._coupling import (  # noqa: E402
    head_targets,
    randomize_batchnorm,
    resnet_mid_targets,
    resnet_mid_widths,
)
from tests.integration._flax_models import DecoderStack, resnet18  # noqa: E402

SIZES = {
    "default": {
        "resnet": {"num_filters": 32, "batch": 64, "image": 32},
        "decoder": {"embed": 256, "heads": 8, "mlp": 1024, "layers": 4, "batch": 16, "seq": 128},
    },
    "quick": {
        "resnet": {"num_filters": 8, "batch": 2, "image": 32},
        "decoder": {"embed": 32, "heads": 4, "mlp": 64, "layers": 2, "batch": 2, "seq": 8},
    },
}


def _param_count(tree: Any) -> int:
    return int(sum(np.size(a) for a in jax.tree.leaves(tree)))


def _macs(apply_fn: Callable[[Any, jax.Array], Any], params: Any, shape, dtype) -> int:
    per_leaf, unattributed = count_macs(apply_fn, params, shape, dtype)
    return int(sum(per_leaf.values()) + unattributed)


def _timer(fn: Callable[[Any, jax.Array], Any], params: Any, x: jax.Array, iters: int):
    def run() -> float:
        start = time.perf_counter()
        for _ in range(iters):
            out = fn(params, x)
        jax.block_until_ready(out)
        return (time.perf_counter() - start) / iters

    jax.block_until_ready(fn(params, x))  # compile outside the timed rounds
    return run


def _measure(
    name: str, full: tuple, small: tuple, x: jax.Array, repeats: int, iters: int
) -> dict[str, Any]:
    """``full``/``small``: (apply_fn, params, count_params_tree); the row of figures."""
    (full_fn, full_params, full_counted), (small_fn, small_params, small_counted) = full, small
    jit_full, jit_small = jax.jit(full_fn), jax.jit(small_fn)
    diff = float(jnp.max(jnp.abs(jit_full(full_params, x) - jit_small(small_params, x))))
    shape, dtype = x.shape[1:], x.dtype
    macs_full = _macs(full_fn, full_params, shape, dtype)
    macs_small = _macs(small_fn, small_params, shape, dtype)
    times = interleaved(
        {
            "full": _timer(jit_full, full_params, x, iters),
            "small": _timer(jit_small, small_params, x, iters),
        },
        repeats,
    )
    n_full, n_small = _param_count(full_counted), _param_count(small_counted)
    return {
        "model": name,
        "batch": int(x.shape[0]),
        "params_full": n_full,
        "params_shrunk": n_small,
        "params_reduction": n_full / n_small,
        "macs_full": macs_full,
        "macs_shrunk": macs_small,
        "macs_reduction": macs_full / macs_small,
        "max_abs_output_diff": diff,
        "full_ms": 1e3 * statistics.median(times["full"]),
        "shrunk_ms": 1e3 * statistics.median(times["small"]),
        "time_reduction": ratio_stats(times["full"], times["small"])["median_paired_ratio"],
        "rounds": repeats,
        "iters_per_round": iters,
    }


def bench_resnet(sizes: dict[str, int], sparsity: float, repeats: int, iters: int) -> dict:
    model = resnet18(num_classes=10, num_filters=sizes["num_filters"])
    x = jax.random.normal(jax.random.key(0), (sizes["batch"], sizes["image"], sizes["image"], 3))
    variables = randomize_batchnorm(
        model.init(jax.random.key(1), x[:1], train=False), jax.random.key(3)
    )
    params, stats = variables["params"], variables["batch_stats"]
    targets, stats_targets = resnet_mid_targets(params, stats, sparsity)
    pruned, _ = admmjax.prune(params, targets)
    small, small_stats = admmjax.shrink(pruned, targets, extra=stats, extra_targets=stats_targets)
    small_model = resnet18(
        num_classes=10, num_filters=sizes["num_filters"], mid_filters=resnet_mid_widths(small)
    )

    def apply(m):
        return lambda v, x: m.apply(v, x, train=False)

    full_vars = {"params": pruned, "batch_stats": stats}
    small_vars = {"params": small, "batch_stats": small_stats}
    return _measure(
        "resnet18", (apply(model), full_vars, pruned), (apply(small_model), small_vars, small),
        x, repeats, iters,
    )  # fmt: skip


def bench_decoder(sizes: dict[str, int], sparsity: float, repeats: int, iters: int) -> dict:
    dims = {k: sizes[k] for k in ("embed", "mlp", "layers")}
    model = DecoderStack(vocab=256, heads=sizes["heads"], **dims, rngs=nnx.Rngs(0))
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    targets = head_targets(params, sparsity)
    pruned, _ = admmjax.prune(params, targets)
    small = admmjax.shrink(pruned, targets)
    kept = int(small["blocks"]["attention"]["query"]["kernel"].shape[2])
    head_dim = sizes["embed"] // sizes["heads"]
    small_model = DecoderStack(vocab=256, heads=kept, qkv=kept * head_dim, **dims, rngs=nnx.Rngs(1))
    small_graphdef, _, small_rest = nnx.split(small_model, nnx.Param, ...)
    tokens = jax.random.randint(jax.random.key(2), (sizes["batch"], sizes["seq"]), 0, 256)

    def apply(g, r):
        return lambda p, t: nnx.merge(g, p, r)(t)

    return _measure(
        "lm1b_decoder", (apply(graphdef, rest), pruned, pruned),
        (apply(small_graphdef, small_rest), small, small), tokens, repeats, iters,
    )  # fmt: skip


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| model | params full | params shrunk | MACs full | MACs shrunk | full ms | shrunk ms "
        "| time reduction | max abs diff |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['params_full']:,} | {r['params_shrunk']:,} "
            f"({r['params_reduction']:.2f}x) | {r['macs_full']:,} | {r['macs_shrunk']:,} "
            f"({r['macs_reduction']:.2f}x) | {r['full_ms']:.3f} | {r['shrunk_ms']:.3f} "
            f"| {r['time_reduction']:.2f}x | {r['max_abs_output_diff']:.1e} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Parses the options, measures both models, writes the JSON and prints the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sparsity", type=float, default=0.5, help="fraction of slices pruned")
    parser.add_argument("--repeats", type=int, default=7, help="timed rounds per variant")
    parser.add_argument("--iters", type=int, default=20, help="forward calls per timed round")
    parser.add_argument("--quick", action="store_true", help="CI smoke run: tiny models")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="JSON output path [default: experiments/results/bench/shrink_<platform>[_quick].json]",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats, args.iters = 2, 2
    sizes = SIZES["quick" if args.quick else "default"]
    rows = [
        bench_resnet(sizes["resnet"], args.sparsity, args.repeats, args.iters),
        bench_decoder(sizes["decoder"], args.sparsity, args.repeats, args.iters),
    ]
    device = jax.devices()[0]
    plat = device.platform
    name = f"shrink_{plat}_quick.json" if args.quick else f"shrink_{plat}.json"
    out = args.out or REPO / "experiments" / "results" / "bench" / name
    result = {
        "benchmark": "admmjax.shrink: coupled Structured pruning, then pruned slices removed; "
        "full (pruned, dense shapes) vs shrunk forward pass",
        **environment(),
        "sparsity": args.sparsity,
        "sizes": sizes,
        "statistic": "ms = median over rounds of the mean forward time per call; "
        "time_reduction = median over rounds of full / shrunk, rounds interleaved",
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

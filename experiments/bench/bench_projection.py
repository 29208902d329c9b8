"""Micro-benchmark of the Z-step selection: keep the k largest |x| of one leaf.

Methods, all exact (``k`` entries, ties to the lowest index), timed on one float32 leaf:

* ``radix``: ``admmjax.keep_mask`` jitted with ``k`` traced: two O(n) histogram passes.
* ``top_k``: ``admmjax.keep_mask_top_k`` (``lax.top_k``, static ``k``; sorts on CPU).
* ``sort``: ``jnp.sort`` of the magnitudes for the threshold, then the same index
  tie-break as ``radix``.
* ``np.partition``: NumPy on the host, ``np.partition`` for the threshold plus the
  tie-break; the threshold-only time is reported too (``np.partition`` alone).

Each method is warmed up (compiled) once, then timed ``--repeats`` times; the table
gives the median. Methods slower than a second per call get at most 3 repeats.
All masks are checked to hold exactly ``k`` entries and to be identical.

    python experiments/bench/bench_projection.py                 # 400k and 10M
    python experiments/bench/bench_projection.py --sizes 1e6 3e7
    python experiments/bench/bench_projection.py --quick         # CI smoke run, seconds

Results go to ``experiments/results/bench/projection_<platform>.json`` (``--quick``:
``projection_<platform>_quick.json``) and a markdown table is printed. This is not
a test: it asserts only that the methods agree.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # run as a script: make `admmjax` importable
    sys.path.insert(0, str(REPO))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import admmjax  # noqa: E402
from experiments.bench.env import environment  # noqa: E402

METHODS = ("radix", "top_k", "sort", "np.partition")


@jax.jit
def keep_mask_sort(x: jax.Array, k: jax.Array) -> jax.Array:
    """Exact selection with a full ``jnp.sort`` for the threshold."""
    mag = jnp.abs(jnp.ravel(x).astype(jnp.float32))
    n = mag.shape[0]
    k = jnp.clip(k, 1, n)
    threshold = jnp.sort(mag)[n - k]
    greater = mag > threshold
    tied = mag == threshold
    need = k - jnp.sum(greater)
    return (greater | (tied & (jnp.cumsum(tied) <= need))).reshape(x.shape)


def numpy_threshold(x: np.ndarray, k: int) -> np.float32:
    mag = np.abs(x.ravel())
    return np.partition(mag, mag.size - k)[mag.size - k]


def keep_mask_numpy(x: np.ndarray, k: int) -> np.ndarray:
    """Exact selection on the host: ``np.partition`` threshold and index tie-break."""
    mag = np.abs(x.ravel())
    threshold = np.partition(mag, mag.size - k)[mag.size - k]
    greater = mag > threshold
    tied = mag == threshold
    need = k - np.count_nonzero(greater)
    return (greater | (tied & (np.cumsum(tied) <= need))).reshape(x.shape)


def _timed(fn, repeats: int) -> tuple[float, list[float], object]:
    """Warm-up (compile) call, then timed calls; returns (median s, times, last output).

    A method slower than a second per call gets at most 3 timed calls.
    """
    out = jax.block_until_ready(fn())
    times: list[float] = []
    while len(times) < (repeats if not times or times[0] < 1.0 else min(repeats, 3)):
        t0 = time.perf_counter()
        out = jax.block_until_ready(fn())
        times.append(time.perf_counter() - t0)
    return statistics.median(times), times, out


def bench_size(n: int, sparsity: float, repeats: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    x_host = rng.standard_normal(n, dtype=np.float32)
    x = jax.device_put(x_host)
    k = n - math.floor(sparsity * n)
    k_dev = jnp.int32(k)
    radix = jax.jit(admmjax.keep_mask)
    top_k = jax.jit(admmjax.keep_mask_top_k, static_argnums=1)

    fns = {
        "radix": lambda: radix(x, k_dev),
        "top_k": lambda: top_k(x, k),
        "sort": lambda: keep_mask_sort(x, k_dev),
        "np.partition": lambda: keep_mask_numpy(x_host, k),
    }
    row: dict = {"n": n, "k": k, "bytes": 4 * n, "methods": {}}
    masks = {}
    for name, fn in fns.items():
        med, times, out = _timed(fn, repeats)
        masks[name] = np.asarray(out)
        row["methods"][name] = {
            "median_s": med,
            "min_s": min(times),
            "times_s": times,
            "gb_per_s": 4 * n / med / 1e9,
            "kept": int(masks[name].sum()),
        }
    med, times, _ = _timed(lambda: numpy_threshold(x_host, k), repeats)
    row["np_partition_threshold_only_s"] = med

    for name, mask in masks.items():
        if int(mask.sum()) != k:
            raise AssertionError(f"{name} kept {int(mask.sum())} entries at n={n}, want {k}")
        if not np.array_equal(mask, masks["radix"]):
            raise AssertionError(f"{name} and radix keep different entries at n={n}")
    row["masks_identical"] = True
    row["top_k_over_radix"] = (
        row["methods"]["top_k"]["median_s"] / row["methods"]["radix"]["median_s"]
    )
    row["top_k_over_radix_min"] = (
        row["methods"]["top_k"]["min_s"] / row["methods"]["radix"]["min_s"]
    )
    return row


def _ms(s: float) -> str:
    return f"{1e3 * s:,.2f}"


def markdown(rows: list[dict]) -> str:
    lines = [
        "| n | k | radix (ours) ms | lax.top_k ms | jnp.sort ms | np.partition ms "
        "(threshold only) | top_k / ours | ours GB/s | top_k GB/s |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        m = r["methods"]
        lines.append(
            f"| {r['n']:,} | {r['k']:,} | {_ms(m['radix']['median_s'])} "
            f"| {_ms(m['top_k']['median_s'])} | {_ms(m['sort']['median_s'])} "
            f"| {_ms(m['np.partition']['median_s'])} ({_ms(r['np_partition_threshold_only_s'])}) "
            f"| {r['top_k_over_radix']:.1f}x | {m['radix']['gb_per_s']:.2f} "
            f"| {m['top_k']['gb_per_s']:.3f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--sizes",
        type=float,
        nargs="+",
        default=[4e5, 1e7],
        help="leaf sizes (entries; 1e7 notation accepted), default 400k and 10M",
    )
    parser.add_argument("--sparsity", type=float, default=0.9, help="fraction pruned")
    parser.add_argument("--repeats", type=int, default=7, help="timed calls per method")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="small sizes, 3 repeats (CI)")
    parser.add_argument("--out", type=Path, default=None, help="JSON output path")
    args = parser.parse_args(argv)
    if args.quick:
        args.sizes, args.repeats = [1e4, 1e5], 3
    sizes = [int(s) for s in args.sizes]

    device = jax.devices()[0]
    plat = device.platform
    name = f"projection_{plat}_quick.json" if args.quick else f"projection_{plat}.json"
    out = args.out or REPO / "experiments" / "results" / "bench" / name
    rows = []
    for n in sizes:
        rows.append(bench_size(n, args.sparsity, args.repeats, args.seed))
        print(f"n={n:,}: done", file=sys.stderr, flush=True)

    result = {
        "benchmark": "keep the k largest |x| of one float32 leaf (exact, index tie-break)",
        **environment(),
        "sparsity": args.sparsity,
        "repeats": args.repeats,
        "seed": args.seed,
        "statistic": "median of timed calls after one warm-up (compile) call",
        "results": rows,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(markdown(rows))
    print(f"\n{plat} ({device.device_kind}), jax {jax.__version__}; wrote {out}")
    return result


if __name__ == "__main__":
    main()

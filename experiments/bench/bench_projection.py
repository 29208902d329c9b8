"""Micro-benchmark of the Z-step selection: keep the k largest |x| of one leaf.

Methods, all exact (``k`` entries, ties to the lowest index), timed on one float32 leaf:

* ``ours``: ``admmjax.keep_mask`` jitted with ``k`` traced, its default
  ``method="auto"``: the radix select (two O(n) histogram passes) on CPU, a sort of
  the uint32 magnitude keys on GPU/TPU (the histograms' scatter-adds are slow there).
* ``radix`` (not on CPU, where it is ``ours``): ``keep_mask(method="radix")``, the
  CPU method forced, to show why the GPU/TPU default differs.
* ``top_k``: ``admmjax.keep_mask_top_k`` (``lax.top_k``, static ``k``; sorts on CPU).
* ``sort``: ``jnp.sort`` of the magnitudes for the threshold, then the same index
  tie-break as ``ours``.
* ``np.partition``: NumPy on the host, ``np.partition`` for the threshold plus the
  tie-break; the threshold-only time is reported too (``np.partition`` alone).

Sizes default to 100k, 400k, 1M, 4M, 10M and 37,748,736 entries (9216 x 4096:
AlexNet's fc6 kernel, the largest leaf the paper prunes). Each method is warmed up
(compiled) once, then timed up to ``--repeats`` times; the table gives the median.
Slow methods get fewer timed calls: calls stop once a method has spent ``--budget``
seconds (default 20 s) and at least one call was timed, so ``lax.top_k`` and
``jnp.sort`` at 37.7M entries get 1 to 3 calls (each row records its own count).
All masks are checked to hold exactly ``k`` entries and to be identical.

Effective bandwidth. ``gb_per_s`` is ``4 n`` bytes (one read of the float32 leaf,
the least any exact method must move) over the median time; it is a rate, not the
traffic each method really does. Next to it the script measures the memory bandwidth
of the device the leaf lives on. On a GPU/TPU: jitted ``2 x`` (copy: 8 bytes per
entry) and ``sum(x)`` (read: 4 bytes) on the device. On CPU, with NumPy
(single-threaded, STREAM-like, on arrays of the largest size, at least 64 MiB so
caches do not help): *copy* ``b[:] = a`` (STREAM counts 2
arrays: 8 bytes per entry), *scale* ``b = 2 a`` (8 bytes), *triad* ``c = a + 2 b`` as
two in-place NumPy ops (``c = 2 b; c += a``: STREAM counts 3 arrays, 12 bytes per
entry, though the two passes really move 20), and *read* ``a.sum()`` (4 bytes). The
column ``sweeps`` is ``median time x copy GB/s / 4 n``: how many single reads of the
leaf at the measured bandwidth the method's time would pay for. The radix select
(``ours`` on CPU) reads the leaf about 4 times (keys, two histograms, the mask; a
fifth pass with the prefix sum when ties straddle the threshold), so ``sweeps`` near
4 would mean it runs at memory speed; above that, its scatter-add histograms are the
bound.

    python experiments/bench/bench_projection.py                 # 100k ... 37.7M
    python experiments/bench/bench_projection.py --sizes 1e6 3e7
    python experiments/bench/bench_projection.py --quick         # CI smoke run, seconds

Results go to ``experiments/results/bench/projection_<platform>.json`` (``--quick``:
``projection_<platform>_quick.json``) and a markdown table is printed. This is not
a test: it asserts only that the methods agree.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # run as a script: make `admmjax` importable
    sys.path.insert(0, str(REPO))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import admmjax  # noqa: E402
from experiments.environment import environment  # noqa: E402

BASELINES = ("top_k", "sort", "np.partition")
FC6 = 9216 * 4096  # AlexNet's fc6 kernel: 37,748,736 entries
DEFAULT_SIZES = [1e5, 4e5, 1e6, 4e6, 1e7, FC6]


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
    """The ``k``-th largest ``|x|`` with ``np.partition`` (no mask, no tie-break)."""
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


def timed(
    fn: Callable[[], Any], repeats: int, budget_s: float = 20.0
) -> tuple[float, list[float], Any]:
    """Warm-up (compile) call, then timed calls; returns (median s, times, last output).

    Timed calls stop after ``repeats`` calls, or earlier once they have taken
    ``budget_s`` seconds in all (at least one call is always timed).
    """
    out = jax.block_until_ready(fn())
    times: list[float] = []
    while len(times) < repeats and (not times or sum(times) < budget_s):
        t0 = time.perf_counter()
        out = jax.block_until_ready(fn())
        times.append(time.perf_counter() - t0)
    return statistics.median(times), times, out


def memory_bandwidth(n: int, repeats: int = 5) -> dict[str, Any]:
    """STREAM-like NumPy kernels on float32 arrays of ``n`` entries: best GB/s of each.

    Single-threaded (NumPy); bytes are counted the STREAM way (copy 2 arrays, scale 2,
    triad 3) plus a pure read (``a.sum()``, 1 array). The best of ``repeats`` calls is
    reported, as STREAM does.
    """
    rng = np.random.default_rng(1)
    a = rng.standard_normal(n, dtype=np.float32)
    b = rng.standard_normal(n, dtype=np.float32)
    c = np.empty_like(a)

    def triad() -> None:
        np.multiply(b, np.float32(2.0), out=c)
        np.add(c, a, out=c)

    kernels: dict[str, tuple[Callable[[], Any], int]] = {
        "copy": (lambda: np.copyto(c, a), 8),
        "scale": (lambda: np.multiply(a, np.float32(2.0), out=c), 8),
        "triad": (triad, 12),
        "read": (lambda: a.sum(), 4),
    }
    out: dict[str, Any] = {"n": n, "threads": 1, "repeats": repeats}
    for name, (fn, bytes_per_entry) in kernels.items():
        fn()  # first touch of the output pages
        best = min(_once(fn) for _ in range(repeats))
        out[f"{name}_gb_per_s"] = bytes_per_entry * n / best / 1e9
    return out


def device_bandwidth(n: int, repeats: int = 5) -> dict[str, Any]:
    """Jitted kernels on the default device, float32 arrays of ``n`` entries: best GB/s.

    *copy* is ``2 x`` into a new array (read and write: 8 bytes per entry), *read* is
    ``sum(x)`` (4 bytes). For accelerators, where NumPy would measure the host.
    """
    x = jax.device_put(np.random.default_rng(1).standard_normal(n, dtype=np.float32))
    kernels = {"copy": (jax.jit(lambda a: 2 * a), 8), "read": (jax.jit(jnp.sum), 4)}
    out: dict[str, Any] = {"n": n, "device": str(jax.devices()[0]), "repeats": repeats}
    for name, (fn, bytes_per_entry) in kernels.items():
        jax.block_until_ready(fn(x))  # compile
        run = functools.partial(lambda f: jax.block_until_ready(f(x)), fn)
        best = min(_once(run) for _ in range(repeats))
        out[f"{name}_gb_per_s"] = bytes_per_entry * n / best / 1e9
    return out


def _once(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def bench_size(
    n: int, sparsity: float, repeats: int, seed: int, budget_s: float, copy_gb_s: float
) -> dict[str, Any]:
    """Every method on one standard-normal leaf of ``n`` entries; checks they agree."""
    rng = np.random.default_rng(seed)
    x_host = rng.standard_normal(n, dtype=np.float32)
    x = jax.device_put(x_host)
    k = n - math.floor(sparsity * n)
    k_dev = jnp.int32(k)
    ours = jax.jit(admmjax.keep_mask)
    radix = jax.jit(functools.partial(admmjax.keep_mask, method="radix"))
    top_k = jax.jit(admmjax.keep_mask_top_k, static_argnums=1)

    fns = {"ours": lambda: ours(x, k_dev)}
    if jax.default_backend() != "cpu":  # on CPU "ours" is the radix select
        fns["radix"] = lambda: radix(x, k_dev)
    fns |= {
        "top_k": lambda: top_k(x, k),
        "sort": lambda: keep_mask_sort(x, k_dev),
        "np.partition": lambda: keep_mask_numpy(x_host, k),
    }
    row: dict[str, Any] = {"n": n, "k": k, "bytes": 4 * n, "methods": {}}
    masks = {}
    for name, fn in fns.items():
        med, times, out = timed(fn, repeats, budget_s)
        masks[name] = np.asarray(out)
        row["methods"][name] = {
            "median_s": med,
            "min_s": min(times),
            "times_s": times,
            "timed_calls": len(times),
            "gb_per_s": 4 * n / med / 1e9,
            "sweeps": med * copy_gb_s * 1e9 / (4 * n),
            "kept": int(masks[name].sum()),
        }
        print(f"  n={n:,} {name}: {1e3 * med:,.2f} ms", file=sys.stderr, flush=True)
    med, _, _ = timed(lambda: numpy_threshold(x_host, k), repeats, budget_s)
    row["np_partition_threshold_only_s"] = med

    for name, mask in masks.items():
        if int(mask.sum()) != k:
            raise AssertionError(f"{name} kept {int(mask.sum())} entries at n={n}, want {k}")
        if not np.array_equal(mask, masks["ours"]):
            raise AssertionError(f"{name} and ours keep different entries at n={n}")
    row["masks_identical"] = True
    m = row["methods"]
    for other in m:
        if other != "ours":
            key = other.replace("np.", "np_")
            row[f"{key}_over_ours"] = m[other]["median_s"] / m["ours"]["median_s"]
    row["top_k_over_ours_min"] = m["top_k"]["min_s"] / m["ours"]["min_s"]
    return row


def _ms(s: float) -> str:
    return f"{1e3 * s:,.2f}"


def markdown(rows: list[dict[str, Any]], bandwidth: dict[str, Any]) -> str:
    """The results table; times in ms, rates in GB/s of ``4 n`` bytes."""
    has_radix = "radix" in rows[0]["methods"]
    names = ["ours", *(["radix"] if has_radix else []), *BASELINES]
    radix_head = " radix ms |" if has_radix else ""
    radix_ratio_head = " radix / ours |" if has_radix else ""
    lines = [
        f"| n | ours ms |{radix_head} lax.top_k ms | jnp.sort ms | np.partition ms "
        f"(threshold only) |{radix_ratio_head} top_k / ours | sort / ours | np / ours "
        f"| GB/s {' / '.join(names)} | ours sweeps |",
        "|---:" * (8 + 2 * has_radix) + "|---|---:|",
    ]
    for r in rows:
        m = r["methods"]
        rates = " / ".join(f"{m[k]['gb_per_s']:.3g}" for k in names)
        radix = f" {_ms(m['radix']['median_s'])} |" if has_radix else ""
        radix_ratio = f" {r['radix_over_ours']:.1f}x |" if has_radix else ""
        lines.append(
            f"| {r['n']:,} | {_ms(m['ours']['median_s'])} |{radix}"
            f" {_ms(m['top_k']['median_s'])} | {_ms(m['sort']['median_s'])} "
            f"| {_ms(m['np.partition']['median_s'])} ({_ms(r['np_partition_threshold_only_s'])}) "
            f"|{radix_ratio} {r['top_k_over_ours']:.1f}x | {r['sort_over_ours']:.1f}x "
            f"| {r['np_partition_over_ours']:.2f}x | {rates} | {m['ours']['sweeps']:.1f} |"
        )
    bw = bandwidth
    if "threads" in bw:
        measured = (
            f"NumPy, 1 thread, {bw['n']:,} float32 entries, best of {bw['repeats']}): copy "
            f"{bw['copy_gb_per_s']:.1f} GB/s, scale {bw['scale_gb_per_s']:.1f}, triad "
            f"{bw['triad_gb_per_s']:.1f}, read {bw['read_gb_per_s']:.1f}"
        )
    else:
        measured = (
            f"jitted on {bw['device']}, {bw['n']:,} float32 entries, best of "
            f"{bw['repeats']}): copy {bw['copy_gb_per_s']:.1f} GB/s, read "
            f"{bw['read_gb_per_s']:.1f}"
        )
    lines.append(
        f"\nMemory bandwidth ({measured}. GB/s above = 4 n bytes / median time; sweeps = "
        "median time x copy bandwidth / 4 n."
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Parses the options, runs every size, writes the JSON and prints the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--sizes",
        type=float,
        nargs="+",
        default=DEFAULT_SIZES,
        help="leaf sizes in entries (1e7 notation accepted) [default: 100k, 400k, 1M, 4M, "
        "10M and 37,748,736 (AlexNet fc6)]",
    )
    parser.add_argument(
        "--sparsity", type=float, default=0.9, help="fraction pruned, in [0, 1) [default: 0.9]"
    )
    parser.add_argument(
        "--repeats", type=int, default=7, help="timed calls per method, at most [default: 7]"
    )
    parser.add_argument(
        "--budget",
        type=float,
        default=20.0,
        help="seconds of timed calls per method and size after which no further call "
        "starts (at least one is timed) [default: 20]",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of the random leaves [default: 0]"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="CI smoke run: sizes 10k and 100k, 1 timed call, small bandwidth arrays",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="JSON output path [default: experiments/results/bench/projection_<platform>"
        "[_quick].json]",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.sizes, args.repeats = [1e4, 1e5], 1
    sizes = [int(s) for s in args.sizes]

    device = jax.devices()[0]
    plat = device.platform
    name = f"projection_{plat}_quick.json" if args.quick else f"projection_{plat}.json"
    out = args.out or REPO / "experiments" / "results" / "bench" / name
    bw_n = 1 << 20 if args.quick else max(max(sizes), 1 << 24)
    bw_repeats = 2 if args.quick else 5
    if plat == "cpu":
        bandwidth = memory_bandwidth(bw_n, repeats=bw_repeats)
    else:
        bandwidth = device_bandwidth(bw_n, repeats=bw_repeats)
    print(f"memory copy bandwidth {bandwidth['copy_gb_per_s']:.1f} GB/s", file=sys.stderr)
    rows = []
    for n in sizes:
        rows.append(
            bench_size(
                n, args.sparsity, args.repeats, args.seed, args.budget, bandwidth["copy_gb_per_s"]
            )
        )

    result = {
        "benchmark": "keep the k largest |x| of one float32 leaf (exact, index tie-break)",
        **environment(),
        "sparsity": args.sparsity,
        "repeats": args.repeats,
        "budget_s": args.budget,
        "seed": args.seed,
        "statistic": "median of timed calls after one warm-up (compile) call; calls stop "
        "after --repeats or once --budget seconds are spent (timed_calls per method)",
        "gb_per_s_convention": "4 n bytes (one read of the float32 leaf) / median time",
        "sweeps_convention": "median time x memory copy GB/s / (4 n bytes)",
        "memory_bandwidth": bandwidth,
        "results": rows,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(markdown(rows, bandwidth))
    print(f"\n{plat} ({device.device_kind}), jax {jax.__version__}; wrote {out}")
    return result


if __name__ == "__main__":
    from experiments.kernels import configure_cpu

    configure_cpu()  # what the CLIs run with (a no-op where XLA_FLAGS names the option)
    main()

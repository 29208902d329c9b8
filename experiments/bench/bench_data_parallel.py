"""Throughput of the data-parallel ADMM W-step against the number of devices.

One W-step is ``admmjax.make_train_step`` with ``optax.chain(admmjax.penalty(rho),
optax.adam(lr))``: cross-entropy gradient, ADMM penalty gradient, Adam, update. For
each model (LeNet-300-100, LeNet-5 from ``experiments.models``) and each device
count ``N`` in ``--devices``, the mesh is ``admmjax.parallel.data_mesh(N)``; params,
Adam state and ADMM state (``Z``, ``U``) are replicated, and a fixed global batch
(``--batch-size``, synthetic NHWC images) is split over the ``N`` devices with
``parallel.shard_batch``. After one warm-up (compile) step, ``--steps`` consecutive
steps are timed ``--repeats`` times; the table gives images/s of the median.

    python experiments/bench/bench_data_parallel.py                   # 1, 2, 4 devices, batch 512
    python experiments/bench/bench_data_parallel.py --devices 1,2 --batch-size 256
    python experiments/bench/bench_data_parallel.py --quick           # CI smoke run, seconds

On CPU the devices are forced (``jax_num_cpu_devices``, set before the backend
starts): they are threads of one process sharing the same cores, so N "devices"
split the same arithmetic N ways and add collectives. The CPU numbers measure the
overhead of the data-parallel layout (and whether one device's program already keeps
every core busy: XLA's CPU convolutions may not, so LeNet-5 can look faster on 4
forced devices), not a speedup; real speedups need real accelerators. The first
step's loss is printed per row: the same global batch gives the same loss up to
float reduction order. Results go to ``experiments/results/bench/data_parallel_<platform>.json``
(``--quick``: ``data_parallel_<platform>_quick.json``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # run as a script: make `admmjax`, `experiments` importable
    sys.path.insert(0, str(REPO))

import jax  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

import admmjax  # noqa: E402
from admmjax import parallel  # noqa: E402
from experiments.environment import environment  # noqa: E402
from experiments.models import count_params, create_model, functional  # noqa: E402

MODELS = ("lenet300_100", "lenet5")
CPU_NOTE = (
    "Forced CPU devices share the same {cores} core(s) of one process: the ratios show "
    "the cost of splitting the batch (smaller per-device ops, gradient all-reduce) and "
    "how well one device's program keeps the cores busy, not multi-device speedup."
)


def force_cpu_devices(n: int) -> None:
    """``jax_num_cpu_devices = n`` if the backend has not started yet (else unchanged)."""
    try:
        jax.config.update("jax_num_cpu_devices", n)
    except RuntimeError as err:  # backend already initialised (e.g. called from a test)
        print(f"note: could not force {n} CPU devices: {err}", file=sys.stderr)


def make_step(name: str, rho: float, lr: float, sparsity: float):
    """Model, initial params/targets/ADMM state and the jitted W-step for ``name``."""
    model = create_model(name, seed=0)
    _, params, apply_fn = functional(model)
    targets = admmjax.uniform_sparsity(params, sparsity)
    admm_state = admmjax.init(params, targets)
    tx = optax.chain(admmjax.penalty(rho), optax.adam(lr))

    def loss_fn(params, x, y):
        logits = apply_fn(params, x, False, None)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    step = admmjax.make_train_step(loss_fn, tx)  # params and opt state donated
    return params, admm_state, tx, step


def bench_one(name: str, num_devices: int, args: argparse.Namespace) -> dict:
    mesh = parallel.data_mesh(num_devices)
    params, admm_state, tx, step = make_step(name, args.rho, args.lr, args.sparsity)
    n_params = count_params(params)
    params = parallel.replicate(params, mesh)
    opt_state = parallel.replicate(tx.init(params), mesh)
    admm_state = parallel.replicate(admm_state, mesh)

    rng = np.random.default_rng(args.seed)
    b = args.batch_size
    batches = [
        parallel.shard_batch(
            (
                rng.random((b, 28, 28, 1), dtype=np.float32),
                rng.integers(0, 10, b).astype(np.int32),
            ),
            mesh,
        )
        for _ in range(2)
    ]

    t0 = time.perf_counter()
    params, opt_state, loss = step(params, opt_state, *batches[0], admm_state=admm_state)
    first_loss = float(loss)
    compile_s = time.perf_counter() - t0

    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        for i in range(args.steps):
            params, opt_state, loss = step(
                params, opt_state, *batches[i % 2], admm_state=admm_state
            )
        jax.block_until_ready((params, loss))
        times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    return {
        "model": name,
        "params": n_params,
        "devices": num_devices,
        "global_batch": b,
        "per_device_batch": b // num_devices,
        "steps": args.steps,
        "repeats_s": times,
        "median_s": med,
        "step_ms": 1e3 * med / args.steps,
        "images_per_s": args.steps * b / med,
        "first_step_s": compile_s,
        "first_loss": first_loss,
        "last_loss": float(loss),
    }


def markdown(rows: list[dict]) -> str:
    lines = [
        "| model | devices | global batch | per device | step ms | images/s | vs 1 device "
        "| first loss |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    base = {r["model"]: r["images_per_s"] for r in rows if r["devices"] == 1}
    for r in rows:
        rel = f"{r['images_per_s'] / base[r['model']]:.2f}x" if r["model"] in base else "-"
        lines.append(
            f"| {r['model']} | {r['devices']} | {r['global_batch']} | {r['per_device_batch']} "
            f"| {r['step_ms']:,.1f} | {r['images_per_s']:,.0f} | {rel} | {r['first_loss']:.6f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", default="1,2,4", help="device counts, e.g. 1,2,4")
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated")
    parser.add_argument("--batch-size", type=int, default=512, help="global batch (fixed)")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per repeat")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rho", type=float, default=1e-3)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--sparsity", type=float, default=0.9)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="batch 64, 2 steps, 1 repeat")
    parser.add_argument("--out", type=Path, default=None, help="JSON output path")
    args = parser.parse_args(argv)
    if args.quick:
        args.batch_size, args.steps, args.repeats = 64, 2, 1
    counts = sorted({int(c) for c in args.devices.split(",")})
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    for c in counts:
        if c < 1 or args.batch_size % c:
            parser.error(f"--batch-size {args.batch_size} must split over {c} device(s)")

    # Before anything starts the backend: one process, max(counts) CPU devices. It
    # only affects the CPU client, so on an accelerator the real devices are used.
    force_cpu_devices(max(counts))
    device = jax.devices()[0]
    plat = device.platform
    available = jax.local_device_count()
    skipped = [c for c in counts if c > available]
    counts = [c for c in counts if c <= available]
    if skipped:
        print(f"note: skipping {skipped} devices ({available} available)", file=sys.stderr)

    rows = []
    for name in models:
        for c in counts:
            rows.append(bench_one(name, c, args))
            print(f"{name} x{c}: {rows[-1]['images_per_s']:,.0f} img/s", file=sys.stderr)

    note = CPU_NOTE.format(cores=os.cpu_count()) if plat == "cpu" else ""
    name = f"data_parallel_{plat}_quick.json" if args.quick else f"data_parallel_{plat}.json"
    out = args.out or REPO / "experiments" / "results" / "bench" / name
    result = {
        "benchmark": "ADMM W-step (penalty + adam) throughput, batch sharded, params replicated",
        **environment(),
        "devices_skipped": skipped,
        "batch_size": args.batch_size,
        "steps": args.steps,
        "repeats": args.repeats,
        "rho": args.rho,
        "lr": args.lr,
        "sparsity": args.sparsity,
        "statistic": "median over repeats of --steps consecutive steps, after a warm-up step",
        "note": note,
        "results": rows,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(markdown(rows))
    if note:
        print(f"\n{note}")
    print(f"\n{plat} ({device.device_kind}), jax {jax.__version__}; wrote {out}")
    return result


if __name__ == "__main__":
    from experiments.kernels import configure_cpu

    configure_cpu()  # what the CLIs run with (a no-op where XLA_FLAGS names the option)
    main()

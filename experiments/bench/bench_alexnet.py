"""AlexNet (BVLC, 61M parameters): images/s of the ADMM W-step and the time of one Z/U update.

* W-step: the pipeline's ADMM step (``experiments.train``): cross-entropy of AlexNet
  in training mode (dropout 0.5) on uint8 227x227x3 images scaled on device, gradient,
  then ``admmjax.penalty(rho) -> add_decayed_weights -> adam``, applied by
  ``admmjax.make_train_step`` (params and optimizer state donated). The global batch
  is split over all local devices (``--devices``), params/Adam/Z/U replicated, as
  the pipeline does. After one warm-up (compile) step, ``--steps`` steps are timed
  ``--repeats`` times; images/s is of the median.
* Z/U update: one jitted ``admmjax.update`` (Z = P(W + U) on every pruned kernel with
  the paper's weight-focused ratios, U += W - Z, residuals) over the 61M parameters;
  the median of ``--repeats`` timed calls after a warm-up.

Synthetic data (random images and labels) and random weights: speed does not depend
on the values. Parameters are filled with NumPy (JAX's eager initialisation of 61M
parameters is slow on CPU and irrelevant here).

    python experiments/bench/bench_alexnet.py                  # batch 256, 10 steps x 3
    python experiments/bench/bench_alexnet.py --batch-size 512 --devices 8
    python experiments/bench/bench_alexnet.py --quick          # batch 4, 1 step: a CPU smoke run

Results go to ``experiments/results/bench/alexnet_<platform>.json`` (``--quick``:
``alexnet_<platform>_quick.json``) with the device's name (``device_kind``, e.g.
``NVIDIA H100 80GB HBM3``) from ``experiments/environment.py``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # run as a script: make `admmjax`, `experiments` importable
    sys.path.insert(0, str(REPO))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

import admmjax  # noqa: E402
from admmjax import parallel  # noqa: E402
from experiments import models  # noqa: E402
from experiments.data import mnist as data_lib  # noqa: E402
from experiments.environment import environment  # noqa: E402

# The paper's weight-focused ratios (experiments/configs/paper/alexnet.py:weights).
SPARSITY = {
    "conv1/kernel": 0.19, "conv2/kernel": 0.80, "conv3/kernel": 0.81, "conv4/kernel": 0.80,
    "conv5/kernel": 0.80, "fc6/kernel": 0.972, "fc7/kernel": 0.941, "fc8/kernel": 0.907,
}  # fmt: skip


def random_params(seed: int = 0):
    """AlexNet's apply_fn and params filled with scaled Gaussians by NumPy."""
    _, abstract, apply_fn = models.abstract_functional("alexnet")
    rng = np.random.default_rng(seed)

    def fill(leaf):
        fan_in = int(np.prod(leaf.shape[:-1])) if len(leaf.shape) > 1 else 1
        scale = 1.0 / np.sqrt(fan_in) if len(leaf.shape) > 1 else 0.0
        return jnp.asarray((scale * rng.standard_normal(leaf.shape)).astype(np.float32))

    return apply_fn, jax.tree.map(fill, abstract)


def timed(fn, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t0)
    return times


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-size", type=int, default=256, help="global batch, in images")
    parser.add_argument("--devices", type=int, default=0, help="local devices (0: all)")
    parser.add_argument("--steps", type=int, default=10, help="timed W-steps per repeat")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rho", type=float, default=1.5e-3)
    parser.add_argument("--lr", type=float, default=1e-5)
    parser.add_argument("--weight-decay", type=float, default=5e-4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="batch 4, 1 step, 1 repeat")
    parser.add_argument("--out", type=Path, default=None, help="JSON output path")
    args = parser.parse_args(argv)
    if args.quick:
        args.batch_size, args.steps, args.repeats = 4, 1, 1
    mesh = parallel.data_mesh(args.devices or None)
    n_dev = mesh.devices.size
    if args.batch_size % n_dev:
        parser.error(f"--batch-size {args.batch_size} must split over {n_dev} device(s)")

    apply_fn, params = random_params(args.seed)
    targets = admmjax.sparsity_by_path(params, SPARSITY)
    admm_state = jax.jit(lambda p: admmjax.init(p, targets))(params)  # eager: slow on CPU
    tx = optax.chain(
        admmjax.penalty(args.rho),
        optax.add_decayed_weights(args.weight_decay),
        optax.adam(args.lr),
    )

    def loss_fn(params, x, y, rng):
        logits = apply_fn(params, data_lib.to_float(x), True, rng)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    step = admmjax.make_train_step(loss_fn, tx)
    params = parallel.replicate(params, mesh)
    opt_state = parallel.replicate(tx.init(params), mesh)
    admm_state = parallel.replicate(admm_state, mesh)
    rng = np.random.default_rng(args.seed)
    b = args.batch_size
    batches = [
        parallel.shard_batch(
            (
                rng.integers(0, 256, (b, 227, 227, 3), dtype=np.uint8),
                rng.integers(0, 1000, b).astype(np.int32),
            ),
            mesh,
        )
        for _ in range(2)
    ]
    key = jax.random.key(args.seed)

    state = {"params": params, "opt": opt_state, "i": 0}

    def run_steps(n: int):
        for _ in range(n):
            i = state["i"]
            state["params"], state["opt"], loss = step(
                state["params"], state["opt"], *batches[i % 2], jax.random.fold_in(key, i),
                admm_state=admm_state,
            )  # fmt: skip
            state["i"] += 1
        return state["params"], loss

    t0 = time.perf_counter()
    _, loss = run_steps(1)
    first_loss = float(loss)
    wstep_compile_s = time.perf_counter() - t0
    wstep_times = timed(lambda: run_steps(args.steps), args.repeats)
    wstep_s = statistics.median(wstep_times) / args.steps

    update = jax.jit(lambda s, p: admmjax.update(s, p, targets))
    t0 = time.perf_counter()
    jax.block_until_ready(update(admm_state, state["params"]))
    zu_compile_s = time.perf_counter() - t0
    zu_times = timed(lambda: update(admm_state, state["params"]), args.repeats)

    env = environment()
    result = {
        "benchmark": "AlexNet ADMM W-step throughput and one Z/U update (admmjax.update)",
        **env,
        "devices_used": n_dev,
        "params": models.count_params(params),
        "global_batch": b,
        "steps": args.steps,
        "repeats": args.repeats,
        "rho": args.rho,
        "sparsity": SPARSITY,
        "wstep_repeats_s": wstep_times,
        "wstep_ms": 1e3 * wstep_s,
        "wstep_images_per_s": b / wstep_s,
        "wstep_first_step_s": wstep_compile_s,
        "first_loss": first_loss,
        "zu_update_repeats_s": zu_times,
        "zu_update_ms": 1e3 * statistics.median(zu_times),
        "zu_update_first_call_s": zu_compile_s,
    }
    print(
        f"{env['device_kind']} x{n_dev} ({env['platform']}): W-step batch {b}: "
        f"{result['wstep_ms']:,.1f} ms, {result['wstep_images_per_s']:,.1f} images/s; "
        f"one Z/U update: {result['zu_update_ms']:,.1f} ms"
    )
    plat = env["platform"]
    name = f"alexnet_{plat}_quick.json" if args.quick else f"alexnet_{plat}.json"
    out = args.out or REPO / "experiments" / "results" / "bench" / name
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    return result


if __name__ == "__main__":
    from experiments.kernels import configure_cpu

    configure_cpu()  # what the CLIs run with (a no-op where XLA_FLAGS names the option)
    main()

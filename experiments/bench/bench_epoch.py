"""Training epoch time of the real pipeline under XLA flags, device layouts and batch sizes.

Each configuration (XLA flags, forced CPU devices, batch size, LeNet-5's max
pooling: the reshape + max of ``experiments.models`` or ``nnx.max_pool``'s
``reduce_window``, and the convolutions' gradients: ``experiments.kernels.native_kernels``'s
AVX-512 kernels, ``experiments.kernels.conv``'s banded input gradient, or XLA's own) runs
in its own process (XLA flags and the CPU device count are fixed when JAX's backend
starts) and times the real training loop of
``experiments.train``: ``Pipeline.batches`` (host-side shuffling, slicing and
device transfer) feeding the jitted ``admmjax.make_train_step`` with the pretrain
transform (L2 + Adam) on real MNIST. After ``--warmup`` steps (compilation), ``--steps``
steps are timed; the epoch time is that per-step time times the steps of one epoch
(60,000 / batch). The same process also times the parts of one step on a fixed batch
(forward pass; loss and gradient; the whole step) to show what limits it.

Configurations are measured round-robin (``--rounds`` times each, median reported) so
a change in the machine's load hits all of them alike; ratios are against the first
configuration (XLA's default kernels, one device, batch 128).

    python experiments/bench/bench_epoch.py            # LeNet-5 and LeNet-300-100, all configs
    python experiments/bench/bench_epoch.py --quick    # CI smoke run: LeNet-5, a few steps each

Writes ``experiments/results/bench/epoch_<platform>.json`` (``--quick``:
``epoch_<platform>_quick.json``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # run as a script: make `admmjax`, `experiments` importable
    sys.path.insert(0, str(REPO))

from experiments.kernels import native_kernels  # noqa: E402
from experiments.kernels.cpu_kernels import OPT_OUT, YNN_FLAG, YNN_OPTION  # noqa: E402
from experiments.kernels.cpu_kernels import YNN_FLAG_WITHOUT_NATIVE as YNN_ELTWISE  # noqa: E402

ONEDNN_FLAG = "--xla_cpu_use_onednn=true"
# name -> (XLA_FLAGS, CPU devices, global batch, max pooling, gradients of the
# convolutions: "native" = experiments.kernels.native_kernels's kernels (the models' default where
# they build), "banded" = experiments.kernels.conv's pure-JAX ones, "xla" = XLA's own)
CONFIGS: dict[str, tuple[str, int, int, str, str]] = {
    "default": ("", 1, 128, "reshape", "xla"),
    "default, reduce_window pool": ("", 1, 128, "reduce_window", "xla"),
    "default, 2 devices": ("", 2, 128, "reshape", "xla"),
    "oneDNN": (ONEDNN_FLAG, 1, 128, "reshape", "xla"),
    "YNNPACK": (YNN_ELTWISE, 1, 128, "reshape", "xla"),
    "YNNPACK + banded input gradient": (YNN_ELTWISE, 1, 128, "reshape", "banded"),
    "YNNPACK + banded, 2 devices": (YNN_ELTWISE, 2, 128, "reshape", "banded"),
    "YNNPACK + banded, batch 256": (YNN_ELTWISE, 1, 256, "reshape", "banded"),
    "native kernels + YNNPACK dot,reduce (ours)": (YNN_FLAG, 1, 128, "reshape", "native"),
    "native, batch 256": (YNN_FLAG, 1, 256, "reshape", "native"),
    "native, YNNPACK dot,eltwise,reduce": (YNN_ELTWISE, 1, 128, "reshape", "native"),
    "native, YNNPACK dot": (f"{YNN_OPTION}=dot", 1, 128, "reshape", "native"),
    "native, XLA default flags": ("", 1, 128, "reshape", "native"),
}
OURS = "native kernels + YNNPACK dot,reduce (ours)"
# Where the native kernels do not build (no AVX-512 or compiler), --quick times the
# banded gradients instead.
QUICK_CONFIGS = ("default", OURS)
QUICK_FALLBACK = "YNNPACK + banded input gradient"


def _time(fn, n: int) -> float:
    """Seconds per call of ``fn`` (which returns something to block on), over ``n`` calls."""
    import jax

    jax.block_until_ready(fn())
    start = time.perf_counter()
    for _ in range(n):
        out = fn()
    jax.block_until_ready(out)
    return (time.perf_counter() - start) / n


def worker(model: str, steps: int, warmup: int) -> dict:
    """Runs in the child process: times the pipeline loop and the parts of a step."""
    import jax

    import admmjax
    from experiments import train
    from experiments.bench.common import donating_step
    from experiments.data import mnist as data_lib

    devices = int(os.environ["BENCH_DEVICES"])
    batch = int(os.environ["BENCH_BATCH"])
    jax.config.update("jax_num_cpu_devices", devices)
    if os.environ["BENCH_POOL"] == "reduce_window":  # the pooling LeNet-5 had before
        from flax import nnx

        from experiments import kernels

        kernels.max_pool_2x2 = lambda x: nnx.max_pool(x, (2, 2), strides=(2, 2))
    if os.environ["BENCH_CONV"] == "xla":  # XLA's own input gradient (experiments.kernels.conv off)
        from experiments import kernels

        kernels.conv_general_dilated = jax.lax.conv_general_dilated
    if os.environ["BENCH_CONV"] == "native" and not native_kernels.available():
        raise RuntimeError(f"native kernels unavailable: {native_kernels.unavailable_reason()}")
    cfg = train.Config(
        model=model, batch_size=batch, devices=devices, sparsity={"fc1/kernel": 0.9},
        progress=False,
    )  # fmt: skip
    pipe = train.Pipeline(cfg, tempfile.gettempdir(), log=lambda s: None)  # writes nothing
    tx = pipe.transform("pretrain")
    step_fn, (params, opt_state) = donating_step(pipe, tx)
    key = jax.random.key(0)
    batches = pipe.batches("pretrain", 0)
    start = None
    for i, (step, x, y) in enumerate(batches):
        if i == warmup:
            jax.block_until_ready(params)
            start = time.perf_counter()
        if i == warmup + steps:
            break
        params, opt_state, loss = step_fn(params, opt_state, x, y, train.step_key(key, step))
    jax.block_until_ready(params)
    per_step = (time.perf_counter() - start) / steps

    # Parts of one step on one fixed batch: forward, loss + gradient, the whole step.
    _, x, y = next(pipe.batches("pretrain", 0))
    rng = jax.random.key(1)
    apply = pipe.apply_fn
    forward = jax.jit(lambda p, x: apply(p, data_lib.to_float(x), True, rng))
    grad = jax.jit(jax.grad(pipe.loss_fn))
    fixed_step = admmjax.make_train_step(pipe.loss_fn, tx, donate=False)
    n = max(3, steps // 2)
    parts = {
        "forward_ms": 1e3 * _time(lambda: forward(params, x), n),
        "loss_and_grad_ms": 1e3 * _time(lambda: grad(params, x, y, rng), n),
        # The same inputs each call, so this step keeps (does not donate) them.
        "whole_step_ms": 1e3 * _time(lambda: fixed_step(params, opt_state, x, y, rng)[2], n),
    }
    if model == "lenet5":
        parts.update(conv_layouts(batch, n))
    return {
        "ms_per_step": 1e3 * per_step,
        "epoch_seconds": per_step * data_lib.steps_per_epoch(60000, batch),
        "final_loss": float(loss),
        "devices": jax.device_count(),
        **parts,
    }


def conv_layouts(batch: int, n: int) -> dict[str, float]:
    """LeNet-5's conv2 (20 -> 50 channels, 5x5, on 12x12) forward + both gradients, in
    NHWC/HWIO (the models' layout) and NCHW/OIHW with XLA's gradients, and NHWC through
    ``experiments.kernels.conv.conv2d_valid`` (``ours_``: this process's gradients, native or
    banded), in milliseconds."""
    import jax
    import jax.numpy as jnp

    from experiments.kernels import conv

    out = {}
    rng = np.random.default_rng(0)
    variants = (("NHWC", "HWIO", ""), ("NCHW", "OIHW", ""), ("NHWC", "HWIO", "ours_"))
    for lhs, rhs, tag in variants:
        x_shape = (batch, 12, 12, 20) if lhs == "NHWC" else (batch, 20, 12, 12)
        w_shape = (5, 5, 20, 50) if rhs == "HWIO" else (50, 20, 5, 5)
        x = jnp.asarray(rng.standard_normal(x_shape, np.float32))
        w = jnp.asarray(rng.standard_normal(w_shape, np.float32))
        dn = (lhs, rhs, lhs)

        def loss(x, w, dn=dn, ours=bool(tag)):
            if ours:
                y = conv.conv2d_valid(x, w)
            else:
                y = jax.lax.conv_general_dilated(x, w, (1, 1), "VALID", dimension_numbers=dn)
            return jnp.sum(y * y)

        both = jax.jit(jax.grad(loss, argnums=(0, 1)))
        out[f"conv2_{lhs}_{tag}fwd_bwd_ms"] = 1e3 * _time(lambda f=both, x=x, w=w: f(x, w), n)
    return out


def measure(name: str, model: str, steps: int, warmup: int) -> dict:
    flags, devices, batch, pool, conv = CONFIGS[name]
    env = dict(os.environ, XLA_FLAGS=flags, BENCH_DEVICES=str(devices), BENCH_BATCH=str(batch))
    env["BENCH_POOL"], env["BENCH_CONV"] = pool, conv
    env[OPT_OUT] = "0"  # the flags above are the whole story for this process
    env[native_kernels.OPT_OUT] = "1" if conv == "native" else "0"
    cmd = [sys.executable, __file__, "--worker", model, "--steps", str(steps)]
    cmd += ["--warmup", str(warmup)]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(
            f"{name} / {model} failed (exit {out.returncode}):\n{out.stderr[-3000:]}"
        )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="lenet5,lenet300_100", help="comma-separated models")
    parser.add_argument(
        "--configs", default=";".join(CONFIGS), help="semicolon-separated config names"
    )
    parser.add_argument("--steps", type=int, default=120, help="timed steps per measurement")
    parser.add_argument("--warmup", type=int, default=10, help="untimed steps (compilation)")
    parser.add_argument("--rounds", type=int, default=3, help="round-robin repetitions")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="CI smoke run: 2 configs, 8 steps, LeNet-5 (the model of the native kernels) "
        "unless --models",
    )
    parser.add_argument("--out", default=None, help="JSON path (default: results/bench/)")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker, args.steps, args.warmup)))
        return {}
    configs = [c.strip() for c in args.configs.split(";") if c.strip()]
    if args.quick:
        configs, args.steps, args.warmup, args.rounds = list(QUICK_CONFIGS), 8, 2, 1
        if args.models == parser.get_default("models"):  # one model unless asked for more
            args.models = "lenet5"
        if not native_kernels.available():
            print(f"native kernels unavailable ({native_kernels.unavailable_reason()})")
            configs = [QUICK_FALLBACK if c == OURS else c for c in configs]
    unknown = [c for c in configs if c not in CONFIGS]
    if unknown:
        parser.error(f"unknown configs {unknown}; choose from {list(CONFIGS)}")
    models = [m.strip() for m in args.models.split(",") if m.strip()]

    from experiments.environment import environment

    runs: dict[str, dict[str, list[dict]]] = {m: {c: [] for c in configs} for m in models}
    for r in range(args.rounds):
        for model in models:
            for name in configs:
                res = measure(name, model, args.steps, args.warmup)
                runs[model][name].append(res)
                print(
                    f"round {r + 1} {model:13s} {name:22s} {res['ms_per_step']:7.1f} ms/step "
                    f"{res['epoch_seconds']:6.1f} s/epoch", flush=True,
                )  # fmt: skip
    table = {}
    for model in models:
        base = statistics.median(x["ms_per_step"] for x in runs[model][configs[0]])
        table[model] = {}
        for name in configs:
            keys = [k for k, v in runs[model][name][0].items() if k.endswith(("_ms", "seconds"))]
            keys.append("ms_per_step")
            med = {k: statistics.median(x[k] for x in runs[model][name]) for k in keys}
            flags, devices, batch, pool, conv = CONFIGS[name]
            med.update(
                xla_flags=flags, devices=devices, batch=batch, pooling=pool, input_gradient=conv,
                speedup_vs_first=base / med["ms_per_step"],
            )  # fmt: skip
            table[model][name] = med
    print(f"\nmedian of {args.rounds} round(s), {args.steps} steps each:")
    print("| model | config | ms/step | s/epoch | speed-up | fwd ms | fwd+bwd ms | step ms |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for model, rows in table.items():
        for name, t in rows.items():
            print(
                f"| {model} | {name} | {t['ms_per_step']:.1f} | {t['epoch_seconds']:.1f} | "
                f"{t['speedup_vs_first']:.2f}x | {t['forward_ms']:.1f} | "
                f"{t['loss_and_grad_ms']:.1f} | {t['whole_step_ms']:.1f} |"
            )
    for model, rows in table.items():
        for name, t in rows.items():
            if "conv2_NHWC_fwd_bwd_ms" in t:
                print(
                    f"{model} {name}: conv2 forward + gradients NHWC "
                    f"{t['conv2_NHWC_fwd_bwd_ms']:.1f} ms, NCHW {t['conv2_NCHW_fwd_bwd_ms']:.1f} "
                    f"ms, NHWC through conv2d_valid ({t['input_gradient']}) "
                    f"{t['conv2_NHWC_ours_fwd_bwd_ms']:.1f} ms"
                )
    env = environment()
    result = {
        "environment": env,
        "settings": {"steps": args.steps, "warmup": args.warmup, "rounds": args.rounds},
        "results": table,
        "runs": runs,
    }
    suffix = "_quick" if args.quick else ""
    default = REPO / "experiments/results/bench" / f"epoch_{env['platform']}{suffix}.json"
    out = Path(args.out or default)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")
    return result


if __name__ == "__main__":
    from experiments.kernels import configure_cpu

    configure_cpu()  # what the CLIs run with (a no-op where XLA_FLAGS names the option)
    main()

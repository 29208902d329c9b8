"""The peer a user would pick instead: the same training and projection in PyTorch.

Training. LeNet-300-100 (784-300-100-10, ReLU) and LeNet-5 (Caffe layout: conv
20@5x5, max-pool 2, conv 50@5x5, max-pool 2, no activation on the convolutions, fc
800-500 + ReLU, fc 500-10) on the same real MNIST images in the same order (the
pipeline's ``data.iterate_batches`` permutation), batch 128, Adam lr 1e-3 with an L2
weight decay of 5e-5 added to the gradient (``torch.optim.Adam(weight_decay=5e-5)``,
the same coupled L2 as ``train.adam_with_l2``), cross-entropy, no augmentation or
dropout on either side. Ours is the pipeline's pretraining step: an
``experiments.train.Pipeline`` from ``experiments/configs/paper/<model>.py`` with
``augment_shift=0``, its ``batches`` (host-side gather of uint8 batches, placement on
the mesh) and its jitted ``admmjax.make_train_step`` driven as ``run_stage`` does.
PyTorch gets the uint8 batches as tensors, scaled to float / 255 per step, and
``torch.set_num_threads(os.cpu_count())``. For LeNet-5 both memory formats are tried
on a short probe (contiguous NCHW and ``channels_last``) and the faster is timed.

The two run in the same process, in alternation (ours, torch, torch, ours, ...),
``--repeats`` rounds of one full epoch each (``--steps``: a fixed number of steps
instead); the figure is ``torch time / our time`` per round, median over rounds
(above 1: we are faster).

Projection. The Z-step's selection (keep the ``k`` largest ``|x|``, 10% kept) on
float32 leaves of 100k to 37.7M entries: ours (``admmjax.keep_mask``, jitted radix
select) against ``torch.topk`` (indices scattered into a mask) and ``torch.kthvalue``
(threshold, then the same lowest-index tie-break as ours). All keep exactly ``k``.

    python experiments/bench/bench_torch.py                   # epochs of both LeNets + projection
    python experiments/bench/bench_torch.py --models lenet5 --steps 100 --skip-projection
    python experiments/bench/bench_torch.py --quick           # CI smoke run, seconds

PyTorch is an optional, benchmark-only dependency: ``pip install -r
requirements-bench.txt`` (the CPU build ``torch==2.13.0+cpu``). Results go to
``experiments/results/bench/torch_<platform>.json`` (``--quick``:
``torch_<platform>_quick.json``).
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # run as a script: make `admmjax`, `experiments` importable
    sys.path.insert(0, str(REPO))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

try:
    import torch
    from torch import nn
except ImportError as err:  # pragma: no cover - exercised only without torch
    raise SystemExit(
        "bench_torch needs PyTorch, an optional benchmark-only dependency: "
        f".venv/bin/pip install -r requirements-bench.txt ({err})"
    ) from None

import admmjax  # noqa: E402
from experiments import train  # noqa: E402
from experiments.bench.bench_projection import DEFAULT_SIZES, timed  # noqa: E402
from experiments.bench.common import (  # noqa: E402
    add_model_options,
    chosen_models,
    default_data_dir,
    donating_step,
    interleaved,
    make_pipeline,
    ratio_stats,
    run_steps,
)
from experiments.data import mnist as data_lib  # noqa: E402
from experiments.environment import environment  # noqa: E402

LR = 1e-3
WEIGHT_DECAY = 5e-5


# --------------------------------------------------------------------------- models


def torch_model(name: str) -> nn.Module:
    """The PyTorch twin of ``experiments.models``' ``name`` (NCHW input)."""
    if name == "lenet300_100":
        return nn.Sequential(
            nn.Flatten(),
            nn.Linear(784, 300),
            nn.ReLU(),
            nn.Linear(300, 100),
            nn.ReLU(),
            nn.Linear(100, 10),
        )
    if name == "lenet5":
        return nn.Sequential(
            nn.Conv2d(1, 20, 5),
            nn.MaxPool2d(2),
            nn.Conv2d(20, 50, 5),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(800, 500),
            nn.ReLU(),
            nn.Linear(500, 10),
        )
    raise ValueError(f"no PyTorch model {name!r}")


class TorchTrainer:
    """PyTorch training on the pipeline's uint8 arrays, in the pipeline's batch order."""

    def __init__(self, name: str, pipe: train.Pipeline, channels_last: bool, seed: int = 0):
        torch.manual_seed(seed)
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.model = torch_model(name).to(memory_format=self.memory_format)
        self.opt = torch.optim.Adam(self.model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
        self.loss_fn = nn.CrossEntropyLoss()
        self.pipe = pipe
        self.batches = self._batches()
        self.last_loss = float("nan")

    def _batches(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        pipe = self.pipe
        seed = pipe.cfg.seed * 1000 + train.STAGES.index("pretrain")  # Pipeline.batches' seed
        for epoch in itertools.count():
            yield from data_lib.iterate_batches(
                pipe.train_x, pipe.train_y, pipe.cfg.batch_size, seed=seed, epoch=epoch
            )

    def run(self, steps: int) -> float:
        """``steps`` training steps; returns the wall seconds."""
        model, opt, loss_fn = self.model, self.opt, self.loss_fn
        model.train()
        t0 = time.perf_counter()
        loss = None
        for _ in range(steps):
            x, y = next(self.batches)
            # (N, 28, 28, 1) uint8 is (N, 1, 28, 28) in memory: a view, no copy.
            xb = torch.from_numpy(x).view(-1, 1, 28, 28).float().div_(255.0)
            xb = xb.contiguous(memory_format=self.memory_format)
            yb = torch.from_numpy(y).long()
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(xb), yb)
            loss.backward()
            opt.step()
        elapsed = time.perf_counter() - t0
        self.last_loss = float(loss.detach()) if loss is not None else float("nan")
        return elapsed


class JaxTrainer:
    """The pipeline's pretraining loop: its batches and its jitted step."""

    def __init__(self, pipe: train.Pipeline):
        tx = pipe.transform("pretrain")
        self.step_fn, self.state = donating_step(pipe, tx)
        self.batches = pipe.batches("pretrain", 0)
        self.key = jax.random.fold_in(pipe.key, train.STAGES.index("pretrain"))

    def run(self, steps: int) -> float:
        """``steps`` steps of the real loop (batch gather, placement, step); wall seconds."""
        return run_steps(self.step_fn, self.state, self.batches, steps, self.key)


def bench_training(
    name: str, steps: int, repeats: int, probe_steps: int, data_dir: str
) -> dict[str, Any]:
    """Ours vs PyTorch on ``name``, interleaved rounds of ``steps`` steps."""
    pipe = make_pipeline(name, data_dir, augment_shift=0, dropout=0.0)
    spe = pipe.steps_per_epoch
    ours = JaxTrainer(pipe)
    ours.run(2)  # compile

    probe: dict[str, float] = {}
    formats = (False, True) if name == "lenet5" else (False,)
    trainers = {cl: TorchTrainer(name, pipe, cl) for cl in formats}
    for t in trainers.values():
        t.run(2)  # warm up (allocator, oneDNN primitives)
    if len(formats) > 1:
        times = interleaved(
            {str(cl): (lambda t=t: t.run(probe_steps)) for cl, t in trainers.items()}, 2
        )
        probe = {
            ("channels_last" if cl == "True" else "contiguous"): 1e3
            * statistics.median(v)
            / probe_steps
            for cl, v in times.items()
        }
        best = min(formats, key=lambda cl: statistics.median(times[str(cl)]))
    else:
        best = formats[0]
    peer = trainers[best]

    times = interleaved(
        {"ours": lambda: ours.run(steps), "torch": lambda: peer.run(steps)}, repeats
    )
    ratios = ratio_stats(times["torch"], times["ours"])
    ours_ms = 1e3 * statistics.median(times["ours"]) / steps
    torch_ms = 1e3 * statistics.median(times["torch"]) / steps
    return {
        "model": name,
        "batch_size": pipe.cfg.batch_size,
        "steps_per_epoch": spe,
        "steps": steps,
        "full_epoch": steps == spe,
        "repeats": repeats,
        "torch_memory_format": "channels_last" if best else "contiguous",
        "torch_probe_step_ms": probe,
        "ours_times_s": times["ours"],
        "torch_times_s": times["torch"],
        "ours_step_ms": ours_ms,
        "torch_step_ms": torch_ms,
        "ours_epoch_s": ours_ms * spe / 1e3,
        "torch_epoch_s": torch_ms * spe / 1e3,
        **ratios,
        "torch_over_ours": ratios["median_paired_ratio"],
        "ours_last_loss": float(jax.device_get(pipe.loss_fn(ours.state[0], *_one(pipe)))),
        "torch_last_loss": peer.last_loss,
    }


def _one(pipe: train.Pipeline) -> tuple[Any, Any, Any]:
    """A training batch and key, to report our model's loss after the timed steps."""
    x, y = next(data_lib.iterate_batches(pipe.train_x, pipe.train_y, 128, seed=0, epoch=0))
    return jnp.asarray(x), jnp.asarray(y), jax.random.key(0)


# --------------------------------------------------------------------------- projection


def torch_topk_mask(x: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the ``k`` largest ``|x|`` with ``torch.topk`` (order of ties unspecified)."""
    mask = torch.zeros(x.numel(), dtype=torch.bool)
    mask[torch.topk(x.abs().ravel(), k, sorted=False).indices] = True
    return mask


def torch_kthvalue_mask(x: torch.Tensor, k: int) -> torch.Tensor:
    """``torch.kthvalue`` threshold, then ties kept lowest index first (exactly ``k``)."""
    mag = x.abs().ravel()
    threshold = torch.kthvalue(mag, mag.numel() - k + 1).values
    greater = mag > threshold
    tied = mag == threshold
    need = k - int(greater.sum())
    return greater | (tied & (torch.cumsum(tied, 0) <= need))


def bench_projection_size(
    n: int, sparsity: float, repeats: int, budget_s: float, seed: int
) -> dict[str, Any]:
    """Ours vs ``torch.topk`` and ``torch.kthvalue`` on one leaf of ``n`` entries."""
    x_host = np.random.default_rng(seed).standard_normal(n, dtype=np.float32)
    x_jax = jax.device_put(x_host)
    x_torch = torch.from_numpy(x_host)
    k = n - math.floor(sparsity * n)
    k_dev = jnp.int32(k)
    radix = jax.jit(admmjax.keep_mask)
    fns: dict[str, Callable[[], Any]] = {
        "ours": lambda: radix(x_jax, k_dev),
        "torch.topk": lambda: torch_topk_mask(x_torch, k),
        "torch.kthvalue": lambda: torch_kthvalue_mask(x_torch, k),
    }
    row: dict[str, Any] = {"n": n, "k": k, "methods": {}}
    masks = {}
    for name, fn in fns.items():
        med, times, out = timed(fn, repeats, budget_s)
        masks[name] = np.asarray(out)
        row["methods"][name] = {
            "median_s": med,
            "times_s": times,
            "timed_calls": len(times),
            "gb_per_s": 4 * n / med / 1e9,
            "kept": int(masks[name].sum()),
        }
    for name, mask in masks.items():
        if int(mask.sum()) != k:
            raise AssertionError(f"{name} kept {int(mask.sum())} entries at n={n}, want {k}")
    row["kthvalue_identical_to_ours"] = bool(np.array_equal(masks["torch.kthvalue"], masks["ours"]))
    row["topk_identical_to_ours"] = bool(np.array_equal(masks["torch.topk"], masks["ours"]))
    ours = row["methods"]["ours"]["median_s"]
    row["topk_over_ours"] = row["methods"]["torch.topk"]["median_s"] / ours
    row["kthvalue_over_ours"] = row["methods"]["torch.kthvalue"]["median_s"] / ours
    print(
        f"  projection n={n:,}: ours {1e3 * ours:.2f} ms, topk x{row['topk_over_ours']:.2f}, "
        f"kthvalue x{row['kthvalue_over_ours']:.2f}",
        file=sys.stderr,
        flush=True,
    )
    return row


# --------------------------------------------------------------------------- output


def markdown(train_rows: list[dict[str, Any]], proj_rows: list[dict[str, Any]]) -> str:
    """Training and projection tables."""
    lines = [
        "| model | steps timed | ours ms/step | torch ms/step | ours s/epoch | torch s/epoch "
        "| torch / ours | torch format |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in train_rows:
        lines.append(
            f"| {r['model']} | {r['steps']} x {r['repeats']} | {r['ours_step_ms']:.2f} "
            f"| {r['torch_step_ms']:.2f} | {r['ours_epoch_s']:.2f} | {r['torch_epoch_s']:.2f} "
            f"| {r['torch_over_ours']:.2f}x | {r['torch_memory_format']} |"
        )
    if proj_rows:
        lines += [
            "",
            "| n | ours ms | torch.topk ms | torch.kthvalue ms | topk / ours | kthvalue / ours |",
            "|---:|---:|---:|---:|---:|---:|",
        ]
        for r in proj_rows:
            m = r["methods"]
            lines.append(
                f"| {r['n']:,} | {1e3 * m['ours']['median_s']:,.2f} "
                f"| {1e3 * m['torch.topk']['median_s']:,.2f} "
                f"| {1e3 * m['torch.kthvalue']['median_s']:,.2f} "
                f"| {r['topk_over_ours']:.2f}x | {r['kthvalue_over_ours']:.2f}x |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Parses the options, runs both comparisons, writes the JSON and prints tables."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_model_options(parser, "to train")
    parser.add_argument(
        "--steps",
        type=int,
        default=0,
        help="training steps per timed round (0: one full epoch, 468 at batch 128) [default: 0]",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=2,
        help="timed rounds per framework, alternating ours and torch [default: 2]",
    )
    parser.add_argument(
        "--probe-steps",
        type=int,
        default=40,
        help="steps per format when choosing LeNet-5's torch memory format [default: 40]",
    )
    parser.add_argument(
        "--sizes",
        type=float,
        nargs="+",
        default=DEFAULT_SIZES,
        help="projection leaf sizes in entries [default: 100k, 400k, 1M, 4M, 10M, 37.7M]",
    )
    parser.add_argument(
        "--proj-repeats",
        type=int,
        default=5,
        help="timed calls per projection method, at most [default: 5]",
    )
    parser.add_argument(
        "--budget",
        type=float,
        default=15.0,
        help="seconds of timed projection calls per method and size after which no "
        "further call starts [default: 15]",
    )
    parser.add_argument(
        "--torch-threads",
        type=int,
        default=0,
        help="torch.set_num_threads value (0: os.cpu_count()) [default: 0]",
    )
    parser.add_argument(
        "--skip-training", action="store_true", help="only the projection comparison"
    )
    parser.add_argument(
        "--skip-projection", action="store_true", help="only the training comparison"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="CI smoke run: 3 steps, 1 round, 2 probe steps, projection at 10k and 100k",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="JSON output path [default: experiments/results/bench/torch_<platform>[_quick].json]",
    )
    args = parser.parse_args(argv)
    models = chosen_models(parser, args.models)
    if args.quick:
        args.steps, args.repeats, args.probe_steps = 3, 1, 2
        args.sizes, args.proj_repeats = [1e4, 1e5], 1
    torch.set_num_threads(args.torch_threads or os.cpu_count() or 1)
    data_dir = args.data_dir or default_data_dir()

    train_rows = []
    if not args.skip_training:
        for name in models:
            steps = args.steps or data_lib.steps_per_epoch(60_000, 128)
            train_rows.append(bench_training(name, steps, args.repeats, args.probe_steps, data_dir))
            r = train_rows[-1]
            print(
                f"{name}: ours {r['ours_step_ms']:.2f} ms/step, torch {r['torch_step_ms']:.2f} "
                f"ms/step ({r['torch_memory_format']}): torch/ours {r['torch_over_ours']:.2f}",
                file=sys.stderr,
                flush=True,
            )
    proj_rows = []
    if not args.skip_projection:
        for n in (int(s) for s in args.sizes):
            proj_rows.append(bench_projection_size(n, 0.9, args.proj_repeats, args.budget, seed=0))

    device = jax.devices()[0]
    plat = device.platform
    name = f"torch_{plat}_quick.json" if args.quick else f"torch_{plat}.json"
    out = args.out or REPO / "experiments" / "results" / "bench" / name
    result = {
        "benchmark": "ours (JAX pipeline) vs PyTorch: training steps of both LeNets and the "
        "magnitude projection, same process, interleaved",
        **environment(),
        "torch_version": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "optimizer": f"Adam lr {LR}, L2 {WEIGHT_DECAY} added to the gradient; cross-entropy; "
        "batch 128; no augmentation, no dropout",
        "statistic": "torch_over_ours = median over interleaved rounds of torch round time / "
        "our round time (> 1: ours faster)",
        "training": train_rows,
        "projection": proj_rows,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(markdown(train_rows, proj_rows))
    print(
        f"\n{plat} ({device.device_kind}), jax {jax.__version__}, torch {torch.__version__}; "
        f"wrote {out}"
    )
    return result


if __name__ == "__main__":
    from experiments.kernels import configure_cpu

    configure_cpu()  # what the CLIs run with (a no-op where XLA_FLAGS names the option)
    main()

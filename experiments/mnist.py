"""Command line: prune LeNet-300-100 or LeNet-5 on MNIST-like data with ADMM.

    python -m experiments.mnist --config experiments/configs/lenet300_100.py \\
        --workdir workdirs/lenet300_100

Every option overrides the config file (or the defaults of ``train.Config``). The
run resumes from ``WORKDIR/checkpoints`` when restarted with the same command.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import runpy
import sys
from typing import Any

import jax

from admmjax import parallel
from experiments import models as models_lib
from experiments import train

DEFAULTS = train.Config()

# name -> (type, help); defaults are read from train.Config so they never drift.
OPTIONS: dict[str, tuple[type, str]] = {
    "dataset": (
        str,
        "TFDS name of a 28x28 grayscale 10-class dataset (mnist, fashion_mnist, kmnist)",
    ),
    "data_dir": (str, "TFDS data dir holding the prepared dataset (default: $TFDS_DATA_DIR)"),
    "seed": (int, "seed of initialisation, data order and dropout"),
    "devices": (int, "local devices per process to split each batch over (0: all)"),
    "shard_min_size": (int, "split params/state leaves of >= N entries over devices (0: none)"),
    "batch_size": (int, "global training batch size, in images"),
    "eval_batch_size": (int, "evaluation batch size, in images"),
    "train_subset": (int, "train on the first N training images only (0: all)"),
    "dropout": (float, "dropout rate before LeNet-5's last layer, in [0, 1)"),
    "augment_shift": (int, "random translations of up to N pixels during training (0: none)"),
    "weight_decay": (float, "L2 coefficient added to the gradient in pretrain and ADMM"),
    "pretrained": (str, "skip pretraining: load dense params from this workdir or checkpoint"),
    "pretrain_epochs": (float, "pretraining budget, in epochs"),
    "pretrain_steps": (int, "pretraining budget, in steps (overrides epochs when > 0)"),
    "pretrain_lr": (float, "Adam learning rate of pretraining"),
    "pretrain_schedule": (str, "learning-rate schedule of pretraining: constant or cosine"),
    "admm_iterations": (int, "number of ADMM iterations (Z/U updates)"),
    "admm_epochs": (float, "W-step length per ADMM iteration, in epochs"),
    "admm_steps": (int, "W-step length per ADMM iteration, in steps (overrides epochs)"),
    "admm_lr": (float, "Adam learning rate of the W-steps"),
    "admm_schedule": (str, "W-step schedule: constant, or cosine reset every iteration"),
    "rho": (float, "ADMM penalty rho (penalty rho/2 ||W - Z + U||^2)"),
    "rho_growth": (float, "rho is multiplied by this after every ADMM iteration"),
    "eps": (float, "residual tolerance reported as 'converged'"),
    "retrain_epochs": (float, "masked retraining budget, in epochs"),
    "retrain_steps": (int, "masked retraining budget, in steps (overrides epochs)"),
    "retrain_lr": (float, "Adam learning rate of retraining"),
    "retrain_schedule": (str, "learning-rate schedule of retraining: constant or cosine"),
    "checkpoint_every": (int, "steps between checkpoints (0: once per epoch)"),
    "log_every": (int, "steps per point of the loss history"),
}


def parse_sparsity(text: str) -> dict[str, float]:
    """``'0.9'`` (every kernel) or ``'fc1/kernel=0.96,fc2/kernel=0.91'``."""
    out: dict[str, float] = {}
    try:
        if "=" not in text:
            return {"*kernel": float(text)}
        for item in text.split(","):
            pattern, value = item.split("=")
            out[pattern.strip()] = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"bad --sparsity {text!r}: expected a fraction like 0.9 or "
            "'fc1/kernel=0.96,fc2/kernel=0.91'"
        ) from None
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m experiments.mnist",
        description="ADMM weight pruning (Zhang et al. 2018) of LeNets on MNIST-like data: "
        "pretrain -> ADMM -> hard prune -> masked retrain -> evaluate. Resumable.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--workdir", required=True, help="output and checkpoint directory")
    p.add_argument("--config", help="a config file from experiments/configs (Python, get_config())")
    p.add_argument(
        "--model", choices=sorted(models_lib.MODELS), help="model (required without --config)"
    )
    p.add_argument(
        "--sparsity", type=parse_sparsity,
        help="fraction pruned: one number for every kernel, or 'pattern=fraction,...'",
    )  # fmt: skip
    for name, (typ, text) in OPTIONS.items():
        default = getattr(DEFAULTS, name)
        p.add_argument(
            "--" + name.replace("_", "-"),
            type=typ,
            default=None,
            help=f"{text} [default: {default}]",
        )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument(
        "--coordinator", help="multi-host: coordinator host:port (or $ADMMJAX_COORDINATOR)"
    )
    p.add_argument("--num-processes", type=int, help="multi-host: number of processes")
    p.add_argument("--process-id", type=int, help="multi-host: this process's index")
    return p


def load_config_file(path: str) -> dict[str, Any]:
    if not os.path.isfile(path):
        raise SystemExit(f"error: --config {path!r} is not a file")
    values = runpy.run_path(path)["get_config"]()
    unknown = set(values) - {f.name for f in dataclasses.fields(train.Config)}
    if unknown:
        raise SystemExit(f"error: config {path} sets unknown fields {sorted(unknown)}")
    return values


def config_from_args(args: argparse.Namespace) -> train.Config:
    values = load_config_file(args.config) if args.config else {}
    if args.model:
        values["model"] = args.model
    if "model" not in values:
        raise SystemExit("error: give --model or --config")
    if args.sparsity:
        values["sparsity"] = args.sparsity
    for name in OPTIONS:
        value = getattr(args, name)
        if value is not None:
            values[name] = value
    if args.no_progress:
        values["progress"] = False
    return train.Config(**values)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = build_parser().parse_args(argv)
    # Before any JAX computation: joins the other hosts (a no-op for one process).
    parallel.initialize(args.coordinator, args.num_processes, args.process_id)
    cfg = config_from_args(args)
    try:
        cfg.validate()
    except ValueError as err:
        raise SystemExit(f"error: {err}") from None
    summary = train.run(cfg, args.workdir)
    if jax.process_index() == 0:
        with open(os.path.join(args.workdir, "table.md")) as f:
            print(f.read())
    return summary


if __name__ == "__main__":
    main(sys.argv[1:])

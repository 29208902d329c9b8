"""Command line: prune LeNet-300-100 or LeNet-5 on MNIST-like data with ADMM.

    python -m experiments.mnist --config experiments/configs/lenet300_100.py \\
        --workdir workdirs/lenet300_100

Every option overrides the config file (or the defaults of ``train.Config``). The
run resumes from ``WORKDIR/checkpoints`` when restarted with the same command.

Every bad value is refused before any work starts (no data loaded, nothing
written): argparse's usage message and exit status 2 for options, config files,
dataset names and paths. A ``--workdir`` that holds a checkpoint of a different run
raises :class:`WorkdirError` from :func:`main` (a ``ValueError``); the command line
prints it the same way.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import math
import os
import runpy
import sys
import textwrap
from collections.abc import Callable
from typing import Any

import jax

from admmjax import parallel
from experiments import models as models_lib
from experiments import train
from experiments.kernels import configure_cpu

DEFAULTS = train.Config()

SCHEDULES = ("constant", "cosine")

# name -> (type, rule on the value, help). The help gives the unit; the default is
# read from train.Config (so it never drifts) unless DEFAULT_TEXT overrides it.
# Rules: ">=0" and ">0" (finite numbers), "[0,1)" (a fraction), "schedule", None.
OPTIONS: dict[str, tuple[type, str | None, str]] = {
    "dataset": (
        str,
        None,
        "TFDS name of an MNIST-like dataset (28x28x1 uint8 images, 10 classes): "
        "mnist, fashion_mnist, kmnist, emnist/mnist...",
    ),
    "data_dir": (
        str,
        None,
        "TFDS data dir, an existing directory holding DATASET/VERSION/ prepared by TFDS",
    ),
    "seed": (int, ">=0", "seed of initialisation, data order and dropout, an integer >= 0"),
    "devices": (int, ">=0", "local devices per process to split each batch over, a count (0: all)"),
    "shard_min_size": (
        int,
        ">=0",
        "split params/optimizer/ADMM-state leaves of >= N entries over the devices, "
        "in entries (0: replicate every leaf)",
    ),
    "batch_size": (
        int,
        ">0",
        "global training batch, in images (a multiple of the number of devices)",
    ),
    "eval_batch_size": (int, ">0", "evaluation batch, in images"),
    "train_subset": (
        int,
        ">=0",
        "train on the first N training images only, in images (0: all)",
    ),
    "validation_size": (
        int,
        ">=0",
        "hold out the last N training images as a validation split, in images (0: none)",
    ),
    "dropout": (
        float,
        "[0,1)",
        "dropout rate on LeNet-5's fc1 activations, a fraction in [0, 1) "
        "(LeNet-300-100 has no dropout)",
    ),
    "augment_shift": (
        int,
        ">=0",
        "random translations of up to N pixels while training, in pixels (0: none)",
    ),
    "weight_decay": (
        float,
        ">=0",
        "L2 coefficient: weight_decay * W is added to the gradient in pretraining and ADMM "
        "(dimensionless, >= 0)",
    ),
    "pretrained": (
        str,
        None,
        "skip pretraining: load the dense params from this workdir (its dense/) or "
        "params checkpoint directory",
    ),
    "allocation": (
        str,
        None,
        "per_layer (each pattern's fraction is its layer's budget) or global (the fractions "
        "fix only the total; each Z-step and the hard prune split it by magnitude)",
    ),
    "carry_masks": (
        bool,
        None,
        "with --pretrained: weights that are exactly zero there stay zero (progressive "
        "ADMM, each stage starting from the last one's pruned model), true or false",
    ),
    "fold_idle": (
        bool,
        None,
        "with --pretrained, LeNet-5 only: first zero the weights that cannot change the "
        "outputs, folding those on constant units into biases (same function), true or false",
    ),
    "pretrain_epochs": (float, ">=0", "pretraining budget, in epochs (fractions allowed)"),
    "pretrain_steps": (
        int,
        ">=0",
        "pretraining budget, in optimizer steps; overrides --pretrain-epochs when > 0",
    ),
    "pretrain_lr": (float, ">0", "Adam learning rate of pretraining (peak of the schedule), > 0"),
    "pretrain_schedule": (
        str,
        "schedule",
        "learning-rate schedule of pretraining: constant, or cosine decay to 0 over the stage",
    ),
    "admm_iterations": (int, ">=0", "number of ADMM iterations (Z/U updates), a count"),
    "admm_epochs": (float, ">=0", "W-step length per ADMM iteration, in epochs"),
    "admm_steps": (
        int,
        ">=0",
        "W-step length per ADMM iteration, in optimizer steps; overrides --admm-epochs when > 0",
    ),
    "admm_lr": (float, ">0", "Adam learning rate of the W-steps, > 0"),
    "admm_schedule": (
        str,
        "schedule",
        "W-step learning-rate schedule: constant, or cosine decay restarted every iteration",
    ),
    "rho": (
        float,
        ">=0",
        "ADMM penalty coefficient in rho/2 ||W - Z + U||_F^2 (dimensionless, >= 0)",
    ),
    "rho_growth": (
        float,
        ">0",
        "factor rho is multiplied by after every ADMM iteration (1: constant rho), > 0",
    ),
    "eps": (
        float,
        ">=0",
        "tolerance on every layer's primal and dual residual (Frobenius norms, in weight "
        "units) for reporting 'converged'; it does not stop the run",
    ),
    "retrain_epochs": (float, ">=0", "masked retraining budget, in epochs (fractions allowed)"),
    "retrain_steps": (
        int,
        ">=0",
        "masked retraining budget, in optimizer steps; overrides --retrain-epochs when > 0",
    ),
    "retrain_lr": (float, ">0", "Adam learning rate of retraining (peak of the schedule), > 0"),
    "retrain_schedule": (
        str,
        "schedule",
        "learning-rate schedule of retraining: constant, or cosine decay to 0 over the stage",
    ),
    "teacher": (
        str,
        None,
        "distil from this model during ADMM and retraining: a workdir (its dense/) or params "
        "checkpoint directory",
    ),
    "distill_weight": (
        float,
        None,
        "weight w of the distillation term: (1 - w) CE + w T^2 KL (dimensionless, in [0, 1])",
    ),
    "distill_temperature": (
        float,
        ">0",
        "softmax temperature T of the distillation term (dimensionless, > 0)",
    ),
    "checkpoint_every": (
        int,
        ">=0",
        "checkpoint interval, in optimizer steps (0: once per epoch)",
    ),
    "log_every": (int, ">0", "loss-history interval, in optimizer steps (one mean per point)"),
}

DEFAULT_TEXT = {
    "data_dir": "$TFDS_DATA_DIR, else ~/tensorflow_datasets",
    "pretrained": "none: pretrain from scratch",
    "teacher": "none: no distillation",
}

OUTPUTS = (
    "summary.json, table.md, history.json, weights_histograms.png, residuals_loss.png, "
    "dense/ and pruned/ (orbax params), checkpoints/"
)


class WorkdirError(ValueError):
    """``--workdir`` holds a checkpoint of a different run."""


# --------------------------------------------------------------------------- parsing


def _checked(typ: type, rule: str | None) -> Callable[[str], Any]:
    """An argparse ``type`` converting with ``typ`` and enforcing ``rule``."""

    def parse(text: str) -> Any:
        if typ is bool:
            if text.strip().lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")
            return text.strip().lower() in ("true", "1", "yes")
        value = typ(text)  # ValueError -> argparse's "invalid int/float value"
        if rule is None:
            return value
        finite = math.isfinite(value)
        kind = "an integer" if typ is int else "a finite number"
        if rule == ">=0" and not (finite and value >= 0):
            raise argparse.ArgumentTypeError(f"expected {kind} >= 0, got {text!r}")
        if rule == ">0" and not (finite and value > 0):
            raise argparse.ArgumentTypeError(f"expected {kind} > 0, got {text!r}")
        if rule == "[0,1)" and not (finite and 0 <= value < 1):
            raise argparse.ArgumentTypeError(f"expected a fraction in [0, 1), got {text!r}")
        return value

    parse.__name__ = typ.__name__  # argparse names the type in its "invalid ..." message
    return parse


def parse_sparsity(text: str) -> dict[str, float]:
    """``'0.9'`` (every kernel) or ``'fc1/kernel=0.96,fc2/kernel=0.91'``; fractions in [0, 1)."""
    usage = "expected a fraction like 0.9 or 'fc1/kernel=0.96,fc2/kernel=0.91'"
    out: dict[str, float] = {}
    try:
        items = [("*kernel", text)] if "=" not in text else [i.split("=") for i in text.split(",")]
        for item in items:
            pattern, value = item  # ValueError unless exactly one '='
            pattern = pattern.strip()
            if not pattern:
                raise ValueError
            if pattern in out:
                raise argparse.ArgumentTypeError(f"pattern {pattern!r} is given twice in {text!r}")
            out[pattern] = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad value {text!r}: {usage}") from None
    for pattern, value in out.items():
        if not (math.isfinite(value) and 0.0 <= value < 1.0):
            raise argparse.ArgumentTypeError(
                f"{value:g} for {pattern!r} is not a fraction in [0, 1): it is the share of "
                "weights pruned (0.9 keeps 10%)"
            )
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m experiments.mnist",
        usage="%(prog)s --workdir DIR (--config FILE | --model NAME --sparsity S) [options]",
        description=textwrap.fill(
            "ADMM weight pruning (Zhang et al. 2018) of LeNets on MNIST-like data: pretrain "
            "-> ADMM -> hard prune -> masked retrain -> evaluate. Resumable: the same command "
            "restarted continues from WORKDIR/checkpoints.",
            80,
        ),
        epilog=epilog(
            "  python -m experiments.mnist --model lenet300_100 --sparsity 0.95 \\\n"
            "      --pretrain-epochs 5 --workdir /tmp/run"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--workdir",
        required=True,
        help="output and checkpoint directory, created if missing; it holds one run (required)",
    )
    p.add_argument(
        "--config",
        help="Python config file defining get_config() -> dict of train.Config fields, "
        "e.g. experiments/configs/lenet300_100.py [default: none]",
    )
    p.add_argument(
        "--model",
        choices=sorted(models_lib.MODELS),
        help="model to prune [default: the config's; required without --config]",
    )
    p.add_argument(
        "--sparsity",
        type=parse_sparsity,
        help="fraction of weights pruned, in [0, 1): one number for every kernel, or "
        "'pattern=fraction,...' over parameter paths (glob patterns such as fc1/kernel, "
        "conv*/kernel); biases stay dense [default: the config's; required without --config]",
    )
    add_run_options(p)
    return p


def epilog(example: str) -> str:
    """The ``--help`` epilog of a pruning CLI: where values come from, the outputs, and
    ``example`` (indented command lines)."""
    return (
        "Values come from train.Config's defaults (shown), overridden by --config,\n"
        "overridden by the options given; every value is checked before any work starts.\n"
        "Outputs in WORKDIR (the final table, table.md, is also printed):\n"
        + textwrap.fill(OUTPUTS, 78, initial_indent="  ", subsequent_indent="  ")
        + "\n\nexample:\n"
        + example
    )


def add_run_options(
    p: argparse.ArgumentParser,
    help_text: dict[str, str] | None = None,
    default_text: dict[str, str] = DEFAULT_TEXT,
) -> None:
    """One option per :data:`OPTIONS` entry (``help_text`` overrides some helps,
    ``default_text`` some shown defaults), then progress and multi-host options."""
    for name, (typ, rule, text) in OPTIONS.items():
        default = default_text.get(name, getattr(DEFAULTS, name))
        kwargs: dict[str, Any] = {"type": _checked(typ, rule)}
        if rule == "schedule":
            kwargs = {"choices": SCHEDULES}
        p.add_argument(
            "--" + name.replace("_", "-"),
            default=None,
            help=f"{(help_text or {}).get(name, text)} [default: {default}]",
            **kwargs,
        )
    p.add_argument(
        "--no-progress",
        action="store_true",
        help="no progress bars [default: bars when stderr is a terminal]",
    )
    p.add_argument(
        "--coordinator",
        help="multi-host: host:port of process 0's coordinator [default: $ADMMJAX_COORDINATOR]",
    )
    p.add_argument(
        "--num-processes",
        type=_checked(int, ">0"),
        help="multi-host: number of processes, a count [default: $ADMMJAX_NUM_PROCESSES, else 1]",
    )
    p.add_argument(
        "--process-id",
        type=_checked(int, ">=0"),
        help="multi-host: this process's index in [0, NUM_PROCESSES) "
        "[default: $ADMMJAX_PROCESS_ID]",
    )


# --------------------------------------------------------------------------- checks


def load_config_file(path: str) -> dict[str, Any]:
    """The dict of ``get_config()`` in ``path``, fields of ``train.Config`` only;
    ValueError naming what is wrong."""
    values = read_config_file(path)
    unknown = set(values) - {f.name for f in dataclasses.fields(train.Config)}
    if unknown:
        raise ValueError(f"config {path} sets unknown fields {sorted(unknown)}")
    return values


def read_config_file(path: str) -> dict[str, Any]:
    """The dict ``get_config()`` in the Python file ``path`` returns (any keys: the
    progressive and search drivers read theirs too); ValueError naming what is wrong."""
    if not os.path.isfile(path):
        raise ValueError(f"--config {path!r} is not a file")
    try:
        namespace = runpy.run_path(path)
    except Exception as err:
        raise ValueError(
            f"--config {path}: running it failed: {type(err).__name__}: {err}"
        ) from None
    if not callable(namespace.get("get_config")):
        raise ValueError(f"--config {path} defines no get_config() function")
    values = namespace["get_config"]()
    if not isinstance(values, dict):
        raise ValueError(
            f"--config {path}: get_config() returned {type(values).__name__}, not a dict"
        )
    return values


def config_from_args(args: argparse.Namespace) -> train.Config:
    """The run's Config: train.Config's defaults < the config file < the options."""
    values = load_config_file(args.config) if args.config else {}
    if args.model:
        values["model"] = args.model
    if "model" not in values:
        raise ValueError("give --model or --config")
    if args.sparsity:
        values["sparsity"] = args.sparsity
    if not values.get("sparsity"):
        raise ValueError(
            "give --sparsity (e.g. 0.9, or 'fc1/kernel=0.96,fc2/kernel=0.93') or a --config "
            "that sets it"
        )
    if not isinstance(values["sparsity"], dict):
        raise ValueError(
            f"sparsity must be a dict of path pattern -> fraction, got {values['sparsity']!r}"
        )
    for name in OPTIONS:
        value = getattr(args, name)
        if value is not None:
            values[name] = value
    if args.no_progress:
        values["progress"] = False
    return train.Config(**values)


def check_dataset(name: str, data_dir: str | None) -> None:
    """An existing TFDS builder with MNIST-like features; reads metadata only, no data."""
    import tensorflow_datasets as tfds

    from experiments.data import mnist as data_lib

    try:
        builder = tfds.builder(name, data_dir=os.fspath(data_lib.tfds_data_dir(data_dir)))
    except tfds.core.DatasetNotFoundError:
        base = name.split(":")[0].split("/")[0]
        close = difflib.get_close_matches(
            base, tfds.list_builders(with_community_datasets=False), n=3
        )
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise ValueError(
            f"unknown dataset {name!r}: TFDS has no builder of that name{hint}; "
            f"MNIST-like ones include {', '.join(data_lib.IDX_DATASETS)}"
        ) from None
    except Exception as err:  # e.g. a version or config that does not exist
        raise ValueError(f"dataset {name!r}: {type(err).__name__}: {err}") from None
    data_lib.check_features(builder.info.features, name)


def check_paths(cfg: train.Config, workdir: str) -> None:
    """Paths the options name: the workdir must be a directory (or not exist yet); the data
    dir and the pretrained params, when given, must exist."""
    if os.path.exists(workdir) and not os.path.isdir(workdir):
        raise ValueError(f"--workdir {workdir!r} exists and is not a directory")
    if cfg.data_dir is not None and not os.path.isdir(os.path.expanduser(cfg.data_dir)):
        raise ValueError(f"data_dir {cfg.data_dir!r} is not a directory")
    if cfg.pretrained is not None and not os.path.isdir(cfg.pretrained):
        raise ValueError(
            f"pretrained {cfg.pretrained!r} is not a directory (a workdir or a params checkpoint)"
        )


def check_config(cfg: train.Config) -> None:
    """What train.Config.validate leaves to later stages, checked up front."""
    if cfg.seed < 0:
        raise ValueError(f"seed must be an integer >= 0, got {cfg.seed}")
    if not (math.isfinite(cfg.eps) and cfg.eps >= 0):
        raise ValueError(f"eps must be a finite number >= 0, got {cfg.eps}")
    if 0 < cfg.train_subset < cfg.batch_size:
        raise ValueError(
            f"train_subset {cfg.train_subset} is smaller than one batch ({cfg.batch_size} images)"
        )
    # Sparsity patterns must match parameters of the model (shapes only: no compute).
    kwargs = {"dropout": cfg.dropout} if cfg.dropout else {}
    abstract = models_lib.abstract_functional(cfg.model, **kwargs)[1]
    train.sparsity_targets(abstract, cfg.sparsity)


def check_workdir(cfg: train.Config, workdir: str) -> None:
    """Refuses a workdir holding a checkpoint of another run (model, data or recipe)."""
    try:
        train.saved_run(cfg, workdir)
    except ValueError as err:
        raise WorkdirError(str(err)) from None


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> dict[str, Any]:
    configure_cpu()  # before JAX starts its backend: XLA reads XLA_FLAGS then
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        cfg = config_from_args(args)
        check_paths(cfg, args.workdir)
        check_dataset(cfg.dataset, cfg.data_dir)
        # Before any JAX computation: joins the other hosts (a no-op for one process).
        parallel.initialize(args.coordinator, args.num_processes, args.process_id)
        cfg.validate()
        check_config(cfg)
    except ValueError as err:
        parser.error(str(err))
    return run_and_report(cfg, args.workdir)


def run_and_report(cfg: train.Config, workdir: str) -> dict[str, Any]:
    """Refuses another run's workdir, runs (or resumes) ``cfg``, prints its table."""
    check_workdir(cfg, workdir)
    summary = train.run(cfg, workdir)
    if jax.process_index() == 0:
        with open(os.path.join(workdir, "table.md")) as f:
            print(f.read().rstrip())
        print(f"\nOutputs in {os.path.abspath(workdir)}: {OUTPUTS}.")
    return summary


def _cli(argv: list[str]) -> None:
    try:
        main(argv)
    except WorkdirError as err:
        build_parser().error(str(err))


if __name__ == "__main__":
    _cli(sys.argv[1:])

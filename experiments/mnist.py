"""Command line: prune LeNet-300-100 or LeNet-5 on MNIST-like data with ADMM.

    python -m experiments.mnist --config experiments/configs/paper/lenet300_100.py \\
        --workdir workdirs/lenet300_100

Every option overrides the config file (or the defaults of ``train.Config``); the
options and their rules come from the one schema, :mod:`experiments.config`. The
run resumes from ``WORKDIR/checkpoints`` when restarted with the same command.

Every bad value is refused before any work starts (no data loaded, no workdir
created): argparse's usage message and exit status 2 for options, config values
(types included), dataset names and preparation, paths, ``--pretrained`` /
``--teacher`` params of another shape and multi-host options. The checks raise
:class:`~experiments.schema.ConfigError` (a ``ValueError``); only :func:`main` turns
them into exit status 2. A ``--workdir`` that holds a different run (or its outputs),
or that another process is using, raises :class:`WorkdirError` from :func:`main` (a
``ValueError``, see :mod:`experiments.workdir`); the command line prints it the same
way. A finished workdir of the same run is reported as done, its table printed again.
"""

from __future__ import annotations

import argparse
import difflib
import os
import sys
import textwrap
from typing import Any

from experiments import config
from experiments.command_line import (
    check_params_source,
    check_paths,
    cli,
    config_from_args,
    epilog,
    join_hosts,
    run_and_report,
)
from experiments.kernels import configure_cpu
from experiments.schema import ConfigError

MODELS = ("lenet300_100", "lenet5")  # the models of 28x28x1 images (AlexNet: imagenet.py)


# --------------------------------------------------------------------------- parsing


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
            "      --pretrain-epochs 5 --workdir workdirs/run"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    config.add_options(
        p,
        config_example="experiments/configs/paper/lenet5.py:paper_split",
        choices={"model": MODELS},
    )
    return p


# --------------------------------------------------------------------------- checks


def check_dataset(name: str, data_dir: str | None) -> int | None:
    """An existing TFDS builder with MNIST-like features, prepared in ``data_dir`` when
    one is given; reads metadata only, no data. Returns the training split's size when
    known (``None``: not prepared; it is then built from the IDX files)."""
    import tensorflow_datasets as tfds

    from experiments.data import mnist as data_lib

    if data_dir is not None and not os.path.isdir(os.path.expanduser(data_dir)):
        raise ConfigError(f"data_dir {data_dir!r} is not a directory")
    try:
        builder = tfds.builder(name, data_dir=os.fspath(data_lib.tfds_data_dir(data_dir)))
    except tfds.core.DatasetNotFoundError:
        base = name.split(":")[0].split("/")[0]
        close = difflib.get_close_matches(
            base, tfds.list_builders(with_community_datasets=False), n=3
        )
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise ConfigError(
            f"unknown dataset {name!r}: TFDS has no builder of that name{hint}; "
            f"MNIST-like ones include {', '.join(data_lib.IDX_DATASETS)}"
        ) from None
    except Exception as err:  # e.g. a version or config that does not exist
        raise ConfigError(f"dataset {name!r}: {type(err).__name__}: {err}") from None
    data_lib.check_features(builder.info.features, name)
    if builder.is_prepared():
        return builder.info.splits["train"].num_examples
    # Without a data dir the IDX files serve mnist, fashion_mnist and kmnist (downloaded
    # once into the cache); a data dir given must hold the prepared dataset.
    if data_dir is not None or name not in data_lib.IDX_DATASETS:
        raise ConfigError(
            f"dataset {name!r} is not prepared in data_dir {data_dir!r} (no "
            f"{builder.data_dir}/dataset_info.json): point --data-dir at the TFDS data dir "
            f"holding {name}/VERSION/"
            + ("" if data_dir is not None else f"; admmjax prepares only {data_lib.IDX_DATASETS}")
        )
    return None


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> dict[str, Any]:
    configure_cpu()  # before JAX starts its backend: XLA reads XLA_FLAGS then
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        cfg = config_from_args(args)
        if cfg.model not in MODELS:
            raise ConfigError(
                f"model {cfg.model!r} does not take MNIST's 28x28x1 images (models: "
                f"{', '.join(MODELS)}); AlexNet runs with python -m experiments.imagenet"
            )
        check_paths(args.workdir)
        available = check_dataset(cfg.dataset, cfg.data_dir)
        # Before any JAX computation: joins the other hosts (a no-op for one process).
        join_hosts(args)
        cfg.validate()
        if available is not None:
            config.check_training_size(cfg, available)
        for name in ("pretrained", "teacher"):
            check_params_source(cfg, name)
    except ValueError as err:
        parser.error(str(err))
    return run_and_report(cfg, args.workdir)


if __name__ == "__main__":
    cli(main, build_parser, sys.argv[1:])

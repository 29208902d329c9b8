"""Command line: prune BVLC AlexNet on ImageNet ILSVRC-2012 with ADMM.

    python -m experiments.imagenet --config experiments/configs/paper/alexnet.py:weights \\
        --workdir workdirs/alexnet_weights --pretrained bvlc_alexnet.npz

The same pipeline, options, outputs and resumption as ``python -m experiments.mnist``
(every option of train.Config; ``--help`` lists them), with ImageNet defaults: the
dataset is ``imagenet2012`` (prepared in the TFDS data dir: see
:mod:`experiments.data.imagenet`), the model ``alexnet``, and ``--pretrained`` also
takes converted weights as an ``.npz`` file (see :mod:`experiments.models.alexnet`). The
summary adds top-5 accuracy and the multiply-accumulates per layer before and after
pruning. Runs data-parallel over all local devices (``--devices``) and on several
hosts (``--coordinator``...), as the MNIST pipeline.

Every bad value is refused before any work starts (argparse's usage message, exit
status 2), including an unprepared dataset and pretrained weights of the wrong
layout.
"""

from __future__ import annotations

import argparse
import os
import sys
import textwrap
from typing import Any

from experiments import command_line, config, train
from experiments import models as models_lib
from experiments.data import imagenet as imagenet_data
from experiments.kernels import configure_cpu
from experiments.models import alexnet

MODEL = "alexnet"

HELP = {
    "dataset": "TFDS name of ImageNet: imagenet2012 (or imagenet2012:VERSION), prepared in "
    "the data dir (python -m experiments.imagenet_data prepare)",
    "pretrained": "skip pretraining: load the dense params from an .npz of converted "
    "weights keyed by parameter path (python -m experiments.alexnet convert), a workdir "
    "(its dense/) or a params checkpoint directory",
    "augment_shift": "random translations of up to N pixels on device, in pixels (0: none; "
    "ImageNet's random 227x227 crops and flips are always done on the host)",
    "train_subset": "train on the first N training records only, in images (0: all)",
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m experiments.imagenet",
        usage="%(prog)s --workdir DIR (--config FILE | --sparsity S) [options]",
        description=textwrap.fill(
            "ADMM weight pruning (Zhang et al. 2018) of BVLC AlexNet on ImageNet "
            "ILSVRC-2012: (pretrain or load) -> ADMM -> hard prune -> masked retrain -> "
            "evaluate (top-1 and top-5 on the validation split). Resumable: the same "
            "command restarted continues from WORKDIR/checkpoints.",
            80,
        ),
        epilog=command_line.epilog(
            "  python -m experiments.imagenet \\\n"
            "      --config experiments/configs/paper/alexnet.py:weights \\\n"
            "      --workdir workdirs/alexnet_weights --pretrained bvlc_alexnet.npz"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    config.add_options(
        p,
        config_example="experiments/configs/paper/alexnet.py:weights",
        help_text=HELP,
        default_text={"model": MODEL, "dataset": imagenet_data.NAME},
        choices={"model": [MODEL]},
    )
    return p


def check_run(cfg: train.Config, workdir: str) -> None:
    """What must hold before any work: the model and data, the paths, the weights."""
    if cfg.model != MODEL:
        raise ValueError(f"model {cfg.model!r}: experiments.imagenet trains {MODEL!r}")
    if not imagenet_data.is_imagenet(cfg.dataset):
        raise ValueError(
            f"dataset {cfg.dataset!r} is not ImageNet ({imagenet_data.NAME}); "
            "MNIST-like datasets run with python -m experiments.mnist"
        )
    command_line.check_paths(workdir)
    if cfg.data_dir is not None and not os.path.isdir(os.path.expanduser(cfg.data_dir)):
        raise ValueError(f"data_dir {cfg.data_dir!r} is not a directory")
    if cfg.pretrained is not None:
        if os.path.isfile(cfg.pretrained) and cfg.pretrained.endswith((".npz", ".npy")):
            like = models_lib.abstract_params(MODEL)
            alexnet.load_pretrained(cfg.pretrained, like)  # refuses a wrong layout
        elif not os.path.isdir(cfg.pretrained):
            raise ValueError(
                f"pretrained {cfg.pretrained!r} is neither an .npz/.npy file nor a directory "
                "(a workdir or a params checkpoint)"
            )
    # Both splits open (metadata only): a clear message when not prepared.
    source = imagenet_data.ImageNetSource(cfg.dataset, cfg.data_dir, workers=1)
    source.close()
    config.check_training_size(cfg, source.num_train)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    configure_cpu()  # before JAX starts its backend: XLA reads XLA_FLAGS then
    defaults = {"model": MODEL, "dataset": imagenet_data.NAME}
    return command_line.run_checked(build_parser(), argv, defaults, check_run)


if __name__ == "__main__":
    command_line.cli(main, build_parser, sys.argv[1:])

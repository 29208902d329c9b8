"""Command line: prune the byte-level GPT on the King James Bible with ADMM (or gradual
magnitude pruning), through the same pipeline as the LeNets.

    python -m experiments.lm --config experiments/configs/beyond/gpt_kjv.py \\
        --workdir experiments/results/gpt_kjv

The same pipeline, options, outputs and resumption as ``python -m experiments.mnist``
(every option of train.Config; ``--help`` lists them), with language-model defaults:
the model ``gpt`` (:mod:`experiments.models.gpt`, its sizes are options), the dataset
``kjv`` (:mod:`experiments.data.text`: bytes, fixed splits by books; ``--data-dir`` is
the directory holding ``kjv.txt``). Training minimises the next-byte cross-entropy on
random windows of the training split; every score is bits per character on the whole
test (and validation) split, lower is better. Stacked layers get one budget per layer.

Every bad value is refused before any work starts (argparse's usage message, exit
status 2), the text file's size and SHA-256 included.
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from typing import Any

from experiments import command_line, config, train
from experiments.data import text as text_data
from experiments.kernels import configure_cpu
from experiments.schema import ConfigError

MODEL = "gpt"
EXAMPLE = "experiments/configs/beyond/gpt_kjv.py"

HELP = {
    "train_subset": "train on the first N bytes of the training split only, in bytes (0: all)",
    "batch_size": "global training batch, in windows of --context bytes (a multiple of the "
    "number of devices)",
    "eval_batch_size": "evaluation batch, in windows of --context bytes",
    "eval_subset": "evaluate on the first N target bytes of the test and validation splits "
    "only, in bytes (0: all): quick runs and tests, whose bits per character are then of "
    "those N",
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m experiments.lm",
        usage="%(prog)s --workdir DIR (--config FILE | --sparsity S) [options]",
        description=textwrap.fill(
            "ADMM weight pruning (Zhang et al. 2018) of a byte-level GPT on the King James "
            "Bible: (pretrain or load) -> ADMM or gradual magnitude pruning -> hard prune -> "
            "masked retrain -> evaluate (bits per character). Resumable: the same command "
            "restarted continues from WORKDIR/checkpoints.",
            80,
        ),
        epilog=command_line.epilog(
            f"  python -m experiments.lm --config {EXAMPLE}:admm_70 \\\n"
            "      --workdir experiments/results/gpt_kjv_admm_70"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    config.add_options(
        p,
        config_example=f"{EXAMPLE}:admm_70",
        help_text=HELP,
        default_text={"model": MODEL, "dataset": text_data.NAME},
        choices={"model": [MODEL]},
    )
    return p


def check_run(cfg: train.Config, workdir: str) -> None:
    """What must hold before any work: a language model, the text (verified), the
    training bytes filling a batch, the paths."""
    if cfg.model != MODEL:
        raise ConfigError(f"model {cfg.model!r}: experiments.lm trains {MODEL!r}")
    command_line.check_paths(workdir)
    config.check_task(cfg)
    splits = text_data.load_splits(cfg.data_dir)  # size and SHA-256 checked
    used = cfg.train_subset or len(splits.train)
    if cfg.train_subset > len(splits.train):
        raise ConfigError(
            f"train_subset {cfg.train_subset} is more than the {len(splits.train)} bytes of "
            "the training split"
        )
    if (used - 1) // cfg.context < cfg.batch_size:
        raise ConfigError(
            f"the {used} training bytes used hold {(used - 1) // cfg.context} windows of "
            f"{cfg.context}, fewer than one batch ({cfg.batch_size} windows)"
        )


def main(argv: list[str] | None = None) -> dict[str, Any]:
    configure_cpu()  # before JAX starts its backend: XLA reads XLA_FLAGS then
    defaults = {"model": MODEL, "dataset": text_data.NAME}
    return command_line.run_checked(build_parser(), argv, defaults, check_run)


if __name__ == "__main__":
    command_line.cli(main, build_parser, sys.argv[1:])

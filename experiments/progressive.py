"""Command line of progressive ADMM (:mod:`experiments.stages`): stages of increasing
sparsity, each warm-started from the last.

    python -m experiments.progressive --config experiments/configs/beyond/lenet5_progressive.py \\
        --workdir workdirs/lenet5_progressive

A config file defines ``get_config()`` returning ``{"base": {...}, "stages": [{...}, ...]}``
(:func:`experiments.stages.stage_configs` says what each holds). The same command
restarted goes on from the last checkpoint of the last stage it reached.
"""

from __future__ import annotations

import argparse
from typing import Any

from experiments import config, stages
from experiments.configs import read as read_config_file
from experiments.kernels import configure_cpu


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    configure_cpu()  # before JAX starts its backend: XLA reads XLA_FLAGS then
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="FILE.py[:VARIANT] (required)")
    parser.add_argument(
        "--workdir",
        required=True,
        type=config.directory_path,
        help="directory of the stages (required)",
    )
    parser.add_argument(
        "--seed",
        type=config.seed_type(),
        default=None,
        help="seed of every stage (data order, translations, dropout), replacing the config's",
    )
    args = parser.parse_args(argv)
    try:
        spec = read_config_file(args.config)
        if args.seed is not None:
            spec = stages.with_seed(spec, args.seed)
        stages.stage_configs(spec)
    except (ValueError, TypeError) as err:
        parser.error(str(err))
    return stages.run(spec, args.workdir)


if __name__ == "__main__":
    main()

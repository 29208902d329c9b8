"""CLI: storage of a finished run's pruned (and quantized) model against 32-bit dense weights.

Writes ``storage.json`` and ``storage.md`` into the run; the accounting is
:mod:`experiments.analysis.storage`.

    python -m experiments.storage experiments/results/lenet5_targets_quantized
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from experiments import config, train
from experiments import workdir as workdir_lib
from experiments.analysis.storage import markdown, storage
from experiments.kernels import configure_cpu


def main(argv: list[str] | None = None) -> dict[str, Any]:
    configure_cpu()  # before JAX starts its backend: XLA reads XLA_FLAGS then
    parser = argparse.ArgumentParser(
        prog="python -m experiments.storage", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("workdir", help="a finished run (its pruned/ and config.json)")
    args = parser.parse_args(argv)
    try:
        cfg, params = workdir_lib.load_params(args.workdir)
    except ValueError as err:
        parser.error(str(err))
    targets = train.sparsity_targets(params, cfg.sparsity, config.stacked_axes(cfg))
    result = storage(params, targets)
    with open(os.path.join(args.workdir, "storage.json"), "w") as f:
        json.dump(result, f, indent=2)
    with open(os.path.join(args.workdir, "storage.md"), "w") as f:
        f.write(markdown(result))
    print(markdown(result))
    return result


if __name__ == "__main__":
    main(sys.argv[1:])

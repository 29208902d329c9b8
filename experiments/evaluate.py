"""Re-load a run's pruned params and evaluate them on the whole test split.

    python -m experiments.evaluate WORKDIR [--data-dir DIR] [--params dense|pruned]

Prints one JSON object: ``test_accuracy`` (fraction; a language model's
``test_bits_per_char``), ``compression`` and ``layers``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

import admmjax
from admmjax.checkpoint import load_pytree
from experiments import train
from experiments.kernels import configure_cpu
from experiments.workdir import load_run, params_path


def evaluate_workdir(
    workdir: str, data_dir: str | None = None, which: str = "pruned"
) -> dict[str, Any]:
    cfg = load_run(workdir, data_dir)
    params_dir = params_path(workdir, which)  # refused before any data is read
    pipe = train.Pipeline(cfg, workdir, log=lambda _: None)
    # The pipeline's own params as the template: restored with its placement on the mesh.
    params = load_pytree(params_dir, pipe.init_params)
    report = admmjax.sparsity_report(params, pipe.targets)
    return {
        "workdir": os.path.abspath(workdir),
        "model": cfg.model,
        "dataset": cfg.dataset,
        "params": which,
        f"test_{pipe.metric}": pipe.evaluate(params),
        "test_examples": pipe.source.num_test,  # images, or the text's predicted bytes
        "compression": report.compression,
        "layers": report.to_dict()["layers"],
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    configure_cpu()  # before JAX starts its backend: XLA reads XLA_FLAGS then
    p = argparse.ArgumentParser(prog="python -m experiments.evaluate", description=__doc__)
    p.add_argument("workdir", help="a workdir written by experiments.mnist")
    p.add_argument("--data-dir", help="TFDS data dir (default: the run's, or $TFDS_DATA_DIR)")
    p.add_argument("--params", choices=("pruned", "dense"), default="pruned")
    args = p.parse_args(argv)
    try:
        out = evaluate_workdir(args.workdir, args.data_dir, args.params)
    except ValueError as err:
        p.error(str(err))
    print(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main(sys.argv[1:])

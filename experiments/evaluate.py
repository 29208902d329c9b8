"""Re-load a run's pruned params and evaluate them on the whole test split.

    python -m experiments.evaluate WORKDIR [--data-dir DIR] [--params dense|pruned]

Prints one JSON object: ``test_accuracy`` (fraction; a language model's
``test_bits_per_char``), ``compression`` and ``layers``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from typing import Any

import admmjax
from admmjax.checkpoint import load_pytree
from experiments import train
from experiments.kernels import configure_cpu


def load_run(workdir: str, data_dir: str | None = None) -> train.Config:
    """The ``Config`` a workdir was made with (from its ``config.json``); ValueError when
    ``workdir`` is not a run's."""
    path = os.path.join(workdir, "config.json")
    if not os.path.isfile(path):
        raise ValueError(f"{workdir} has no config.json; is it an experiments.mnist workdir?")
    with open(path) as f:
        values = json.load(f)
    known = {f.name for f in dataclasses.fields(train.Config)}
    cfg = train.Config(**{k: v for k, v in values.items() if k in known})
    if data_dir is not None:
        cfg.data_dir = data_dir
    return cfg


def load_params(workdir: str, which: str = "pruned") -> tuple[train.Config, Any]:
    """A finished run's config and its ``pruned`` (or ``dense``) params, without data.

    The restore template is the model's abstract params, so no model weights are
    initialised (cheap for AlexNet too).
    """
    from experiments import config

    cfg = load_run(workdir)
    params_dir = os.path.join(workdir, which)
    if not os.path.isdir(params_dir):
        raise ValueError(f"{params_dir} does not exist; has the run finished?")
    like = config.abstract_params(cfg)  # the model as the run built it (the GPT's sizes)
    return cfg, load_pytree(params_dir, like)


def evaluate_workdir(
    workdir: str, data_dir: str | None = None, which: str = "pruned"
) -> dict[str, Any]:
    cfg = load_run(workdir, data_dir)
    pipe = train.Pipeline(cfg, workdir, log=lambda _: None)
    params_dir = os.path.join(workdir, which)
    if not os.path.isdir(params_dir):
        raise ValueError(f"{params_dir} does not exist; has the run finished?")
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

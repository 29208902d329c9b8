"""CLI: multiply-accumulates per layer before and after pruning (the paper's Tables 3-4).

    python -m experiments.macs WORKDIR                  # a finished run: dense vs pruned
    python -m experiments.macs --config experiments/configs/paper/alexnet.py:computation

The second form prints the planned budgets (``k = n - floor(s n)`` kept per layer)
without training. The counting is :mod:`experiments.analysis.macs`.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import admmjax
from experiments import models as models_lib
from experiments import workdir as workdir_lib
from experiments.analysis.macs import MacReport, mac_report, planned_kept
from experiments.configs import load as load_config_file
from experiments.kernels import configure_cpu


def workdir_report(workdir: str, which: str = "pruned") -> MacReport:
    """The MAC table of a run's ``pruned`` (or ``dense``) params checkpoint."""
    cfg, params = workdir_lib.load_params(workdir, which)
    apply_fn = models_lib.abstract_functional(cfg.model)[2]
    return mac_report(apply_fn, params, models_lib.INPUT_SHAPES[cfg.model])


def config_report(path: str) -> MacReport:
    """The planned MAC table of a config file's sparsity (no training, no data)."""
    values = load_config_file(path)
    name = values.get("model")
    if name is None or not values.get("sparsity"):
        raise ValueError(f"config {path} must set model and sparsity")
    _, params, apply_fn = models_lib.abstract_functional(name)  # shapes only
    targets = admmjax.sparsity_by_path(params, values["sparsity"])
    return mac_report(
        apply_fn, params, models_lib.INPUT_SHAPES[name], kept=planned_kept(params, targets)
    )


def main(argv: list[str] | None = None) -> dict[str, Any]:
    configure_cpu()  # before JAX starts its backend: XLA reads XLA_FLAGS then
    p = argparse.ArgumentParser(
        prog="python -m experiments.macs",
        description="Weights and multiply-accumulates per layer before and after pruning "
        "(per example), as the paper's Tables 3-4: of a finished run (WORKDIR) or of a "
        "config's planned per-layer budgets (--config).",
    )
    p.add_argument("workdir", nargs="?", help="a workdir of experiments.mnist/imagenet")
    p.add_argument("--config", help="a config file: report its planned budgets instead")
    p.add_argument("--params", choices=("pruned", "dense"), default="pruned")
    p.add_argument("--json", action="store_true", help="print JSON instead of markdown")
    args = p.parse_args(argv)
    if (args.workdir is None) == (args.config is None):
        p.error("give a WORKDIR or --config FILE (one of them)")
    try:
        report = (
            config_report(args.config) if args.config else workdir_report(args.workdir, args.params)
        )
    except ValueError as err:
        p.error(str(err))
    out = report.to_dict()
    print(json.dumps(out, indent=2) if args.json else report.to_markdown())
    return out


if __name__ == "__main__":
    main(sys.argv[1:])

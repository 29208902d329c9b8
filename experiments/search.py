"""The paper's search for per-layer budgets, judged on a held-out validation split.

The paper fixes the proportions between layers and scales every ``l_i`` by one
factor, looking for the smallest budget (the highest compression) that keeps the
accuracy. Here the proportions are the kept fractions of ``base_sparsity``
(:func:`experiments.config.scaled_sparsity` scales them to a compression ``c``),
and ``c`` is binary-searched in log space between ``low`` (assumed to pass) and
``high``: a probe is a whole ADMM run at ``c``, and it passes when its pruned model's
accuracy on the validation split (``validation_size`` training images held out from
every stage, pretraining included) is at least the dense model's minus
``tolerance``. The test split is evaluated for the report only, never for a choice.

With ``"allocation": "global"`` in ``run``, each probe lets the projection split its
total budget across layers (see ``train.Config.allocation``): the search is then over
the total budget alone.

    python -m experiments.search --config experiments/configs/beyond/lenet300_100_search.py \\
        --workdir workdirs/lenet300_100_search

The config's ``get_config()`` returns ``{"run": {train.Config fields}, "base_sparsity":
{pattern: fraction}, "low": 20, "high": 100, "probes": 4, "tolerance": 0.002}``. The
first probe pretrains the dense model (on the training images minus the validation
split); the others start from its ``dense/``. Each probe is a resumable run in
``WORKDIR/probe_<c>x``, and finished probes are reused, so a killed search restarted
with the same command goes on. ``WORKDIR/search.json`` records every probe.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
from typing import Any

from experiments import config, models, train
from experiments.configs import read as read_config_file
from experiments.kernels import configure_cpu

KEYS = {"run", "base_sparsity", "low", "high", "probes", "tolerance"}


def check_spec(spec: dict[str, Any]) -> train.Config:
    """The probes' base Config; errors name the bad key or value."""
    if not isinstance(spec, dict) or set(spec) != KEYS:
        raise ValueError(f"a search config is a dict with exactly the keys {sorted(KEYS)}")
    if not 1 < spec["low"] < spec["high"]:
        raise ValueError(f"need 1 < low < high, got low={spec['low']} high={spec['high']}")
    if int(spec["probes"]) < 1:
        raise ValueError(f"probes must be >= 1, got {spec['probes']}")
    if not 0 <= spec["tolerance"] < 1:
        raise ValueError(f"tolerance must be a fraction in [0, 1), got {spec['tolerance']}")
    cfg = train.Config(**{**spec["run"], "sparsity": dict(spec["base_sparsity"])})
    cfg.validate()
    if cfg.validation_size <= 0:
        raise ValueError("the search needs run.validation_size > 0 (it never uses the test set)")
    return cfg


def run(spec: dict[str, Any], workdir: str, log=print) -> dict[str, Any]:
    base = check_spec(spec)
    workdir = os.path.abspath(workdir)
    os.makedirs(workdir, exist_ok=True)
    lo, hi = float(spec["low"]), float(spec["high"])
    probes: list[dict[str, Any]] = []
    dense_dir = None
    # Shapes only (no weights, no data): all scaled_sparsity needs.
    shapes = models.abstract_functional(base.model)[1]
    for _ in range(int(spec["probes"])):
        c = round(math.sqrt(lo * hi), 1)
        probe_dir = os.path.join(workdir, f"probe_{c:g}x")
        sparsity = config.scaled_sparsity(shapes, dict(spec["base_sparsity"]), c)
        cfg = dataclasses.replace(base, sparsity=sparsity)
        if dense_dir is not None:
            cfg = dataclasses.replace(cfg, pretrained=dense_dir)
        log(f"probe {len(probes) + 1}: {c:g}x in {probe_dir}")
        summary = train.run(cfg, probe_dir, log=lambda s: None)
        dense_dir = dense_dir or os.path.join(probe_dir, "dense")
        val = summary["validation_accuracy"]
        passed = val["pruned"] >= val["dense"] - spec["tolerance"]
        probes.append(
            {
                "compression": summary["compression"],
                "target": c,
                "validation_dense": val["dense"],
                "validation_pruned": val["pruned"],
                "passed": passed,
                "test_pruned": summary["pruned_accuracy"],  # reported, never used to choose
                "layers": {r["path"]: r["nonzero"] for r in summary["layers"]},
                "workdir": probe_dir,
            }
        )
        log(
            f"probe {c:g}x: validation {100 * val['pruned']:.2f}% vs dense "
            f"{100 * val['dense']:.2f}% -> {'pass' if passed else 'fail'}"
        )
        lo, hi = (c, hi) if passed else (lo, c)
    best = max((p for p in probes if p["passed"]), key=lambda p: p["target"], default=None)
    result = {"probes": probes, "best": best, "spec": spec}
    with open(os.path.join(workdir, "search.json"), "w") as f:
        json.dump(result, f, indent=2)
    return result


def main(argv: list[str] | None = None) -> dict[str, Any]:
    configure_cpu()  # before JAX starts its backend: XLA reads XLA_FLAGS then
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="FILE.py[:VARIANT] (required)")
    parser.add_argument(
        "--workdir",
        required=True,
        type=config.directory_path,
        help="directory of the probes (required)",
    )
    args = parser.parse_args(argv)
    try:
        spec = read_config_file(args.config)
        check_spec(spec)
    except (ValueError, TypeError) as err:
        parser.error(str(err))
    return run(spec, args.workdir)


if __name__ == "__main__":
    main()

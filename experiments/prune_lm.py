"""Command line: one-shot pruning of the byte-level GPT on the KJV, method by method.

    python -m experiments.prune_lm --dense DENSE --out experiments/results/oneshot_lm/gpt.json \\
        --methods magnitude,wanda,sparsegpt,admm --targets 0.5,0.7,0.9,2:4
    python -m experiments.prune_lm --report   # table.md and the plot beside --out

Every (method, target) starts from the same dense model and the same calibration set
(``--calibration-sequences`` windows of the training split, seed ``--seed``), runs
:func:`experiments.oneshot.prune_gpt` and scores the pruned model's bits per character
on the whole validation and test splits. The dense model's scores come first. Each
finished run is written to ``--out`` at once, with the command, the options and the
machine; the same command restarted skips what is done (a file made with other
options is refused). Bad options are refused before any work (exit status 2).

``--report`` writes ``table.md`` and ``sparsity_bpc.png`` beside ``--out``: the one-shot
runs of ``--out`` side by side with the training-loss runs of the recipe family
``experiments/configs/beyond/gpt_kjv.py`` (ADMM and gradual magnitude pruning, each
run's ``summary.json`` where it has finished).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from typing import Any

from flax import nnx

from experiments import config, configs, oneshot
from experiments import workdir as workdir_lib
from experiments.data import text
from experiments.environment import environment
from experiments.kernels import configure_cpu
from experiments.schema import ConfigError

OUT = "experiments/results/oneshot_lm/gpt.json"
# Options that do not change the results (a restart may change them freely).
_NOT_RESULTS = ("methods", "targets", "eval_batch_size", "data_dir")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m experiments.prune_lm",
        description=__doc__.split("\n\n")[0],
        epilog="\n\n".join(__doc__.split("\n\n")[1:]),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    for name, option in oneshot.options().items():
        config.add_option(p, name, option)
    p.add_argument("--out", default=OUT, help=f"results JSON [default: {OUT}]")
    p.add_argument(
        "--report", action="store_true",
        help="write table.md and sparsity_bpc.png beside --out from it and the gpt_kjv "
        "recipes' summaries, then stop (nothing is pruned)",
    )  # fmt: skip
    return p


def parse_config(argv: list[str] | None) -> tuple[oneshot.OneshotConfig, str, argparse.Namespace]:
    parser = build_parser()
    args = parser.parse_args(argv)
    values = {n: getattr(args, n) for n in oneshot.options() if getattr(args, n) is not None}
    cfg = oneshot.OneshotConfig(**values)
    try:
        if not cfg.dense:
            raise ConfigError("--dense is required: the dense GPT's params")
        if not os.path.exists(cfg.dense):
            raise ConfigError(f"dense {cfg.dense!r} does not exist")
        cfg.validate()
    except ConfigError as err:
        parser.error(str(err))
    return cfg, args.out, args


def _settings(cfg: oneshot.OneshotConfig) -> dict[str, Any]:
    return {k: v for k, v in dataclasses.asdict(cfg).items() if k not in _NOT_RESULTS}


def _load(out: str, cfg: oneshot.OneshotConfig) -> dict[str, Any] | None:
    if not os.path.isfile(out):
        return None
    with open(out) as f:
        doc = json.load(f)
    if doc.get("settings") != _settings(cfg):
        raise workdir_lib.WorkdirError(
            f"{out} holds results made with other settings ({doc.get('settings')}); "
            "choose another --out or delete it"
        )
    return doc


def run(cfg: oneshot.OneshotConfig, out: str, log: Any = print) -> dict[str, Any]:
    """The dense scores, then every (method, target) of ``cfg``; the document written."""
    model = oneshot.build_model(cfg)
    like = nnx.state(model, nnx.Param)
    dense = workdir_lib.load_dense_params(cfg.dense, nnx.as_pure(like))
    nnx.update(model, dense)
    splits = text.load_splits(cfg.data_dir)
    length = cfg.calibration_length or cfg.context
    calibration = oneshot.calibration_set(splits, cfg.calibration_sequences, length, seed=cfg.seed)

    def score(m: Any) -> dict[str, float]:
        return {
            f"{split}_bits_per_char": oneshot.bits_per_char_split(
                m, getattr(splits, split), cfg.eval_batch_size
            )
            for split in ("validation", "test")
        }

    doc = _load(out, cfg) or {"settings": _settings(cfg), "runs": {}}

    def save() -> None:
        os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
        workdir_lib.write_json_atomic(out, doc, indent=2)

    if "dense" not in doc:
        doc["dense"] = score(model)
        log(f"dense: {doc['dense']}")
    for method in oneshot.parse_methods(cfg.methods):
        for target in oneshot.parse_targets(cfg.targets):
            key = f"{method}@{oneshot.target_name(target)}"
            if key in doc["runs"]:
                log(f"{key}: done before, skipped")
                continue
            result = oneshot.prune_gpt(
                model, calibration, method, target, dampening=cfg.dampening,
                block_size=cfg.block_size, admm_max_iter=cfg.admm_max_iter,
                wanda_per_output=cfg.wanda_per_output, log=lambda line, k=key: log(f"{k} {line}"),
            )  # fmt: skip
            pruned = nnx.clone(model)
            nnx.update(pruned, result.params)
            t0 = time.perf_counter()
            scores = score(pruned)
            kept = sum(r.kept for r in result.records)
            total = sum(r.total for r in result.records)
            doc["runs"][key] = {
                "method": method,
                "target": oneshot.target_name(target),
                **scores,
                "prune_seconds": result.seconds,
                "eval_seconds": time.perf_counter() - t0,
                "kept": kept,
                "total": total,
                "layers": [
                    {**dataclasses.asdict(r), "shape": list(r.shape)} for r in result.records
                ],
            }
            doc["environment"] = environment()  # the machine and command of the last run
            save()
            log(f"{key}: {scores}, pruned in {result.seconds:.1f} s, kept {kept}/{total}")
    save()
    return doc


def table(doc: dict[str, Any]) -> str:
    """Markdown: test (validation) bits per character and pruning seconds per run."""
    dense = doc["dense"]
    lines = [
        "| method | target | test bpc | validation bpc | prune s |",
        "|---|---|---|---|---|",
        f"| dense | - | {dense['test_bits_per_char']:.4f} | "
        f"{dense['validation_bits_per_char']:.4f} | - |",
    ]
    for row in doc["runs"].values():
        lines.append(
            f"| {row['method']} | {row['target']} | {row['test_bits_per_char']:.4f} | "
            f"{row['validation_bits_per_char']:.4f} | {row['prune_seconds']:.1f} |"
        )
    return "\n".join(lines)


# The table's columns: (heading, one-shot target name, gpt_kjv recipe's target key).
COLUMNS = (("50%", "0.5", "50"), ("70%", "0.7", "70"), ("90%", "0.9", "90"), ("2:4", "2:4", "2of4"))
ONESHOT_NAMES = {"magnitude": "magnitude (one-shot)", "wanda": "Wanda", "sparsegpt": "SparseGPT",
                 "admm": "layer-wise ADMM (ours)"}  # fmt: skip
# The training-loss methods (sparsify option -> row label) and the gpt_kjv recipes'
# budgets (variant suffix -> the config's overrides of the base budget).
TRAINED_METHODS = {"admm": "ADMM on the training loss (ours)", "gradual": "gradual magnitude"}
BUDGETS = {"": None, "_long": "LONG", "_xl": "XL"}
RECIPE = "beyond/gpt_kjv"


def budget_steps() -> dict[str, int]:
    """Optimizer steps after the dense model (W-steps and retraining) of each budget."""
    from experiments.configs.beyond import gpt_kjv

    base = {"admm_iterations": gpt_kjv.ADMM_ITERATIONS, "admm_steps": gpt_kjv.ADMM_STEPS,
            "retrain_steps": gpt_kjv.RETRAIN_STEPS}  # fmt: skip
    steps = {}
    for suffix, overrides in BUDGETS.items():
        b = {**base, **(getattr(gpt_kjv, overrides) if overrides else {})}
        steps[suffix] = b["admm_iterations"] * b["admm_steps"] + b["retrain_steps"]
    return steps


def trained_rows() -> dict[str, tuple[str, str]]:
    """Row label -> (sparsify method, variant suffix): the base budget's rows, then each
    longer budget's ("..., 3.3x budget")."""
    steps = budget_steps()
    return {
        label + (f", {steps[suffix] / steps['']:.1f}x budget" if suffix else ""): (method, suffix)
        for suffix in BUDGETS
        for method, label in TRAINED_METHODS.items()
    }


def _trained_runs(rows: dict[str, tuple[str, str]]) -> dict[str, dict[str, dict[str, Any]]]:
    """``{row label: {target key: summary}}`` of the gpt_kjv recipes that have finished."""
    from experiments.configs.beyond import gpt_kjv

    found: dict[str, dict[str, dict[str, Any]]] = {}
    for label, (method, suffix) in rows.items():
        for key in gpt_kjv.TARGETS:
            name = f"{method}_{key}{suffix}"
            variant_name = "" if name == gpt_kjv.BASE_VARIANT else name
            path = os.path.join(configs.results_dir(RECIPE, variant_name), "summary.json")
            if os.path.isfile(path):
                with open(path) as f:
                    found.setdefault(label, {})[key] = json.load(f)
    return found


def report(out: str) -> str:
    """``table.md`` and ``sparsity_bpc.png`` beside ``out``; returns the table."""
    from experiments.analysis import plots

    with open(out) as f:
        doc = json.load(f)
    labels = trained_rows()
    trained = _trained_runs(labels)
    rows: dict[str, dict[str, float]] = {}
    seconds: dict[str, dict[str, float]] = {}
    for method, label in ONESHOT_NAMES.items():
        for heading, target, _ in COLUMNS:
            run_ = doc["runs"].get(f"{method}@{target}")
            if run_:
                rows.setdefault(label, {})[heading] = run_["test_bits_per_char"]
                seconds.setdefault(label, {})[heading] = run_["prune_seconds"]
    for label in labels:
        for heading, _, key in COLUMNS:
            summary = trained.get(label, {}).get(key)
            if summary:
                rows.setdefault(label, {})[heading] = summary["pruned_bits_per_char"]
                stage = summary["stage_seconds"]
                seconds.setdefault(label, {})[heading] = stage["admm"] + stage["retrain"]
    headings = [c[0] for c in COLUMNS]
    dense = doc["dense"]["test_bits_per_char"]
    steps = budget_steps()
    lines = [
        "Test bits per character (lower is better); in brackets the wall-clock of the "
        "pruning (one-shot: the whole model layer by layer; training: the sparsify and "
        "retraining stages), seconds. Training budgets, in optimizer steps after the dense "
        f"model (W-steps and retraining): {steps['']:,}, and for the longer rows "
        + ", ".join(f"{n:,}" for suffix, n in steps.items() if suffix)
        + ".",
        "",
        "| method | " + " | ".join(headings) + " |",
        "|---|" + "---:|" * len(headings),
        f"| dense | {dense:.4f} |" + " |" * (len(headings) - 1),
    ]
    for label, values in rows.items():
        cells = [
            f"{values[h]:.4f} ({seconds[label][h]:.0f} s)" if h in values else "not run"
            for h in headings
        ]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    table = "\n".join(lines) + "\n"
    folder = os.path.dirname(os.path.abspath(out))
    with open(os.path.join(folder, "table.md"), "w") as f:
        f.write(table)
    plots.method_lines(rows, headings, dense, os.path.join(folder, "sparsity_bpc.png"))
    return table


def main(argv: list[str] | None = None) -> dict[str, Any]:
    configure_cpu()  # before JAX starts its backend: XLA reads XLA_FLAGS then
    if "--report" in (sys.argv[1:] if argv is None else argv):  # no pruning options needed
        args = build_parser().parse_args(argv)
        print(report(args.out))
        return {}
    cfg, out, _ = parse_config(argv)
    try:
        doc = run(cfg, out, log=lambda line: print(line, file=sys.stderr))
    except (workdir_lib.WorkdirError, FileNotFoundError, text.TextDataError) as err:
        build_parser().error(str(err))
    print(table(doc))
    return doc


if __name__ == "__main__":
    main(sys.argv[1:])

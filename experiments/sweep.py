"""Recipes x seeds: rerun progressive configs under several seeds, pick one model on validation.

At very high compression the recipes of one model differ by less than one run's
noise (a 5,000-image validation split has a standard error of about 0.14 points at
99%), so one run per recipe says little. This module reruns each recipe with several
seeds (data order, random translations, dropout; the starting model is the config's)
and picks one model by a rule fixed before any run:

* the run with the highest validation accuracy after retraining wins;
* ties go to the recipe with the higher mean validation accuracy over its seeds,
  then to the recipe named first, then to the lower seed.

The test accuracy is read for every run and reported, never used to choose.

    python -m experiments.sweep --workdir experiments/results/lenet5_val_250x_sweep \\
        --config chain=experiments/configs/beyond/lenet5_val_250x.py:chain \\
        --config fc1=experiments/configs/beyond/lenet5_val_250x.py:fc1 --seeds 1 2 3

Run ``(recipe, seed)`` lives in ``WORKDIR/<recipe>/seed_<seed>``: an ordinary
progressive workdir (``experiments.progressive``), so a killed sweep restarted with
the same command resumes the run it was in and skips the finished ones. Runs go
seed by seed (every recipe's seed 1, then seed 2, ...), so a sweep cut short still
has as many seeds of each recipe. ``--jobs N`` runs N at once in subprocesses
(several small runs on one GPU; on a 2-core CPU one run already uses both cores).
``WORKDIR/sweep.json`` and ``WORKDIR/sweep.md`` are rewritten after every run.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from experiments import config, schema, stages
from experiments.configs import read as read_config_file
from experiments.configs import split_spec
from experiments.kernels import configure_cpu

SELECTION_RULE = (
    "highest validation accuracy after retraining; ties: higher recipe mean validation, "
    "then the recipe named first, then the lower seed; test accuracy never used"
)


def parse_recipe(arg: str) -> tuple[str, str]:
    """``NAME=PATH`` or ``PATH`` (named by its variant, else its stem) -> ``(name, path)``."""
    name, sep, path = arg.partition("=")
    if not sep:
        path = arg
        file, variant = split_spec(arg)
        name = variant or os.path.splitext(os.path.basename(file))[0]
    if not name or not path:
        raise ValueError(f"--config {arg!r}: expected NAME=PATH or PATH")
    if "/" in name or name.startswith("."):
        raise ValueError(f"--config {arg!r}: the recipe name {name!r} must be a plain file name")
    return name, path


def load_recipes(args: Sequence[str]) -> dict[str, tuple[str, dict[str, Any]]]:
    """``{name: (path, spec)}``; every spec checked, and each must hold out validation."""
    recipes: dict[str, tuple[str, dict[str, Any]]] = {}
    for arg in args:
        name, path = parse_recipe(arg)
        if name in recipes:
            raise ValueError(f"two recipes are named {name!r}; name them with NAME=PATH")
        spec = read_config_file(path)
        configs = stages.stage_configs(spec)
        if configs[-1].validation_size <= 0:
            raise ValueError(
                f"recipe {name!r} ({path}) holds out no validation split "
                f"(validation_size = {configs[-1].validation_size}); a sweep chooses on "
                "validation, so set validation_size > 0"
            )
        recipes[name] = (path, spec)
    if not recipes:
        raise ValueError("a sweep needs at least one --config")
    return recipes


def check_seeds(seeds: Sequence[int]) -> list[int]:
    seeds = list(seeds)
    if not seeds:
        raise ValueError("a sweep needs at least one seed")
    for seed in seeds:
        schema.check_value("seed", config.options()["seed"], seed)  # the seed field's rule
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must differ, got {seeds}")
    return seeds


def run_dir(workdir: str, name: str, seed: int) -> str:
    return os.path.join(workdir, name, f"seed_{seed}")


def finished(path: str) -> bool:
    return os.path.isfile(os.path.join(path, "progressive.json"))


def read_run(path: str) -> dict[str, Any] | None:
    """The last stage's figures of a finished run, ``None`` if it has not finished."""
    if not finished(path):
        return None
    with open(os.path.join(path, "progressive.json")) as f:
        rows = json.load(f)["stages"]
    last = rows[-1]
    val = last.get("validation_accuracy") or {}
    return {
        "compression": last["compression"],
        "nonzero": last["nonzero"],
        "validation_hard_prune": val.get("hard_prune"),
        "validation": val.get("pruned"),
        "test_hard_prune": last["hard_prune_accuracy"],
        "test": last["pruned_accuracy"],
        "seconds": sum(row["seconds"] for row in rows),
    }


def _stats(values: list[float]) -> dict[str, float]:
    n = len(values)
    mean = sum(values) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return {"mean": mean, "sd": sd, "min": min(values), "max": max(values)}


def summarise(runs: list[dict[str, Any]], names: list[str]) -> dict[str, Any]:
    """Per-recipe statistics and the chosen run, by :data:`SELECTION_RULE`."""
    done = [r for r in runs if r.get("test") is not None]
    if missing := [r for r in done if r["validation"] is None]:
        where = ", ".join(f"{r['recipe']} seed {r['seed']}" for r in missing)
        raise ValueError(f"runs without validation accuracy cannot be compared: {where}")
    recipes = {}
    for name in names:
        mine = [r for r in done if r["recipe"] == name]
        if mine:
            recipes[name] = {
                "runs": len(mine),
                "validation": _stats([r["validation"] for r in mine]),
                "test": _stats([r["test"] for r in mine]),
            }
    chosen = None
    if done:
        chosen = max(
            done,
            key=lambda r: (
                r["validation"],
                recipes[r["recipe"]]["validation"]["mean"],
                -names.index(r["recipe"]),
                -r["seed"],
            ),
        )
    return {"recipes": recipes, "chosen": chosen}


def write_report(workdir: str, doc: dict[str, Any]) -> None:
    with open(os.path.join(workdir, "sweep.json"), "w") as f:
        json.dump(doc, f, indent=2)
    pct = lambda v: "-" if v is None else f"{100 * v:.2f}%"  # noqa: E731
    lines = [
        f"Command: `{doc['command']}`",
        "",
        f"Selection rule (fixed before the runs): {doc['rule']}.",
        "",
        "| recipe | seed | compression | validation: hard prune | **validation: retrained** "
        "| test: hard prune | test: retrained | seconds |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in doc["runs"]:
        if r.get("test") is None:
            lines.append(f"| {r['recipe']} | {r['seed']} | not finished | | | | | |")
            continue
        mark = " (chosen)" if doc["chosen"] == r else ""
        lines.append(
            f"| {r['recipe']}{mark} | {r['seed']} | {r['compression']:.1f}x | "
            f"{pct(r['validation_hard_prune'])} | {pct(r['validation'])} | "
            f"{pct(r['test_hard_prune'])} | {pct(r['test'])} | {r['seconds']:.0f} |"
        )
    lines += [
        "",
        "| recipe | runs | validation mean (sd) | validation max | test mean (sd) | test range |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for name, s in doc["recipes"].items():
        v, t = s["validation"], s["test"]
        lines.append(
            f"| {name} | {s['runs']} | {100 * v['mean']:.2f}% ({100 * v['sd']:.2f}) | "
            f"{100 * v['max']:.2f}% | {100 * t['mean']:.2f}% ({100 * t['sd']:.2f}) | "
            f"{100 * t['min']:.2f}-{100 * t['max']:.2f}% |"
        )
    if c := doc["chosen"]:
        lines += [
            "",
            f"Chosen on validation: **{c['recipe']}, seed {c['seed']}**: validation "
            f"{pct(c['validation'])}, test **{pct(c['test'])}** at {c['compression']:.1f}x "
            f"({c['nonzero']:,} weights), model in `{c['recipe']}/seed_{c['seed']}`.",
        ]
    with open(os.path.join(workdir, "sweep.md"), "w") as f:
        f.write("\n".join(lines) + "\n")


def _report(workdir, recipes, seeds, command) -> dict[str, Any]:
    names = list(recipes)
    runs = []
    for seed in seeds:
        for name in names:
            figures = read_run(run_dir(workdir, name, seed)) or {}
            runs.append({"recipe": name, "seed": seed, "config": recipes[name][0], **figures})
    doc = {"command": command, "rule": SELECTION_RULE, "seeds": seeds, "runs": runs}
    doc.update(summarise(runs, names))
    write_report(workdir, doc)
    return doc


def run(
    recipes: dict[str, tuple[str, dict[str, Any]]],
    seeds: Sequence[int],
    workdir: str,
    jobs: int = 1,
    command: str = "",
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Runs (or resumes) every ``(recipe, seed)`` not finished yet; returns the report."""
    seeds = check_seeds(seeds)
    if not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"jobs must be an integer >= 1, got {jobs!r}")
    workdir = os.path.abspath(workdir)
    os.makedirs(workdir, exist_ok=True)
    todo = [
        (name, seed)
        for seed in seeds
        for name in recipes
        if not finished(run_dir(workdir, name, seed))
    ]
    report = functools.partial(_report, workdir, recipes, seeds, command)
    report()  # lists the runs still to do
    if jobs == 1:
        for name, seed in todo:
            log(f"sweep: {name} seed {seed}")
            spec = stages.with_seed(recipes[name][1], seed)
            stages.run(spec, run_dir(workdir, name, seed), log=log)
            report()
    else:
        _run_in_subprocesses(recipes, todo, workdir, jobs, log, on_done=report)
    return report()


def _run_in_subprocesses(recipes, todo, workdir, jobs, log, on_done) -> None:
    """At most ``jobs`` runs at once, each ``python -m experiments.progressive --seed``."""
    pending, running, failed = list(todo), [], []
    while pending or running:
        while pending and len(running) < jobs:
            name, seed = pending.pop(0)
            path = run_dir(workdir, name, seed)
            os.makedirs(path, exist_ok=True)
            out = open(os.path.join(path, "log.txt"), "a")
            cmd = [sys.executable, "-m", "experiments.progressive", "--config",
                   recipes[name][0], "--workdir", path, "--seed", str(seed)]  # fmt: skip
            log(f"sweep: {name} seed {seed} -> {path}/log.txt")
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
            running.append((proc, out, name, seed))
        time.sleep(0.5)
        for item in [item for item in running if item[0].poll() is not None]:
            proc, out, name, seed = item
            out.close()
            running.remove(item)
            if proc.returncode:
                failed.append(f"{name} seed {seed} (exit {proc.returncode})")
            else:
                on_done()
    if failed:
        raise RuntimeError(
            f"sweep runs failed: {', '.join(failed)}; see their log.txt, rerun to resume"
        )


def main(argv: list[str] | None = None) -> dict[str, Any]:
    configure_cpu()  # before JAX starts its backend: XLA reads XLA_FLAGS then
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--config",
        action="append",
        required=True,
        metavar="[NAME=]PATH",
        help="a progressive config, one per recipe (required; repeat it)",
    )
    parser.add_argument(
        "--seeds", type=config.seed_type(), nargs="+", required=True, help="seeds (required)"
    )
    parser.add_argument(
        "--workdir",
        required=True,
        type=config.directory_path,
        help="directory of the runs (required)",
    )
    parser.add_argument("--jobs", type=int, default=1, help="runs at once (default 1)")
    parser.add_argument(
        "--report",
        action="store_true",
        help="only rewrite sweep.json/sweep.md from the finished runs (a sweep cut short)",
    )
    args = parser.parse_args(argv)
    try:
        recipes = load_recipes(args.config)
        check_seeds(args.seeds)
        if args.jobs < 1:
            raise ValueError(f"--jobs must be >= 1, got {args.jobs}")
    except (ValueError, TypeError) as err:
        parser.error(str(err))
    command = "python -m experiments.sweep " + " ".join(sys.argv[1:] if argv is None else argv)
    if args.report:
        os.makedirs(args.workdir, exist_ok=True)
        doc = _report(os.path.abspath(args.workdir), recipes, args.seeds, command)
    else:
        doc = run(recipes, args.seeds, args.workdir, jobs=args.jobs, command=command)
    if chosen := doc["chosen"]:
        print(
            f"chosen on validation: {chosen['recipe']} seed {chosen['seed']}, validation "
            f"{100 * chosen['validation']:.2f}%, test {100 * chosen['test']:.2f}%"
        )
    return doc


if __name__ == "__main__":
    main()

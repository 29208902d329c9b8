"""Progressive ADMM: stages of increasing sparsity, each warm-started from the last.

One ADMM pass to a very high compression starts far from its constraint set; the
progressive scheme (Ye et al., 2018, after this paper) reaches it in stages: stage
``k`` runs the whole ADMM pipeline (W/Z/U iterations, hard prune, masked retraining)
from stage ``k-1``'s pruned model, with the weights pruned so far held at exactly
zero (``carry_masks``) and a higher sparsity target. Each stage may change any field
of :class:`experiments.train.Config` (``rho``, ``rho_growth``, the learning rates and
budgets), which is how rho and learning rate are scheduled per stage.

A spec is ``{"base": {...}, "stages": [{...}, ...]}``: ``base`` holds the fields every
stage shares; each stage dict overrides some of them and must give ``sparsity``.
Stage ``k`` lives in ``WORKDIR/stage_<k>`` and is an ordinary resumable run, so a
killed progressive run restarted goes on from its last checkpoint.
``WORKDIR/progressive.json`` and ``WORKDIR/progressive.md`` summarise the stages.

A stage after the first may set ``"teacher": PREVIOUS_STAGE`` (the string
``"previous_stage"``, :data:`experiments.configs.PREVIOUS_STAGE`) to distil its W-steps
and retraining from the model the stage starts from, the previous stage's ``pruned/``
(see ``Config.teacher``). Used by ``python -m experiments.progressive`` and
``experiments.sweep``.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

from experiments import train
from experiments.configs import PREVIOUS_STAGE


def stage_configs(spec: dict[str, Any]) -> list[train.Config]:
    """The :class:`train.Config` of every stage; errors name the stage and the field."""
    if not isinstance(spec, dict) or set(spec) - {"base", "stages"} or "stages" not in spec:
        raise ValueError("a progressive config is {'base': {...}, 'stages': [{...}, ...]}")
    base = dict(spec.get("base", {}))
    stages = spec["stages"]
    if not isinstance(stages, list) or not stages:
        raise ValueError("'stages' must be a non-empty list of dicts of Config fields")
    known = {f.name for f in dataclasses.fields(train.Config)}
    configs = []
    previous: dict[str, float] = {}
    for k, overrides in enumerate(stages, start=1):
        fields = {**base, **overrides}
        if unknown := set(fields) - known:
            raise ValueError(f"stage {k}: unknown Config fields {sorted(unknown)}")
        if "sparsity" not in overrides and k > 1:
            raise ValueError(f"stage {k} gives no 'sparsity' (each stage prunes further)")
        for pattern, s in previous.items():
            now = fields.get("sparsity", {}).get(pattern)
            # Fractions are compared; a change of constraint kind (e.g. "filters:0.9"
            # then 0.998) is allowed, the carried zeros still only grow.
            comparable = all(isinstance(v, (int, float)) for v in (s, now))
            if now is None or (comparable and now < s):
                raise ValueError(
                    f"stage {k}: sparsity of {pattern!r} is {now!r}, below stage {k - 1}'s "
                    f"{s}; progressive stages may only prune more"
                )
        from_previous = fields.get("teacher") == PREVIOUS_STAGE
        if from_previous and k == 1:
            raise ValueError(
                f"stage 1: teacher {PREVIOUS_STAGE!r} needs an earlier stage to distil from"
            )
        cfg = train.Config(**{**fields, "teacher": None} if from_previous else fields)
        cfg.validate()
        if from_previous:
            cfg = dataclasses.replace(cfg, teacher=PREVIOUS_STAGE)
        configs.append(cfg)
        previous = dict(cfg.sparsity)
    return configs


def run(spec: dict[str, Any], workdir: str, log=print) -> list[dict[str, Any]]:
    """Runs (or resumes) every stage; returns their summaries."""
    configs = stage_configs(spec)
    workdir = os.path.abspath(workdir)
    summaries = []
    for k, cfg in enumerate(configs, start=1):
        stage_dir = os.path.join(workdir, f"stage_{k}")
        if k > 1:  # warm start from the last stage's pruned model, its zeros kept
            prev = os.path.join(workdir, f"stage_{k - 1}", "pruned")
            cfg = dataclasses.replace(cfg, pretrained=prev, carry_masks=True)
            if cfg.teacher == PREVIOUS_STAGE:
                cfg = dataclasses.replace(cfg, teacher=prev)
        log(f"progressive stage {k}/{len(configs)} in {stage_dir}")
        summary = train.run(cfg, stage_dir, log=log)
        summaries.append(summary)
        log(
            f"stage {k}: {summary['compression']:.1f}x, test accuracy "
            f"{100 * summary['pruned_accuracy']:.2f}%"
        )
    write_summary(workdir, summaries)
    return summaries


def with_seed(spec: dict[str, Any], seed: int) -> dict[str, Any]:
    """``spec`` with every stage run under ``seed``; how one recipe is rerun with other seeds."""
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
    stages = [{k: v for k, v in stage.items() if k != "seed"} for stage in spec["stages"]]
    return {**spec, "base": {**spec.get("base", {}), "seed": seed}, "stages": stages}


def write_summary(workdir: str, summaries: list[dict[str, Any]]) -> None:
    rows = [
        {
            "stage": k,
            "compression": s["compression"],
            "nonzero": s["nonzero"],
            "hard_prune_accuracy": s["hard_prune_accuracy"],
            "pruned_accuracy": s["pruned_accuracy"],
            "validation_accuracy": s.get("validation_accuracy"),
            "seconds": sum(s["stage_seconds"].values()),
            "epochs": sum(s["stage_epochs"].values()),
        }
        for k, s in enumerate(summaries, start=1)
    ]
    with open(os.path.join(workdir, "progressive.json"), "w") as f:
        json.dump({"stages": rows, "summaries": summaries}, f, indent=2)
    # Validation columns when the stages held out a validation split (Config.validation_size).
    has_val = all(r["validation_accuracy"] for r in rows)
    val_head = " validation: after hard prune | validation: retrained |" if has_val else ""
    lines = [
        "| stage | compression | kept weights | after hard prune | retrained (test) |"
        f"{val_head} epochs |",
        "|---:" * (6 + 2 * has_val) + "|",
    ]
    for r in rows:
        val = r["validation_accuracy"]
        val_cells = (
            f" {100 * val['hard_prune']:.2f}% | {100 * val['pruned']:.2f}% |" if has_val else ""
        )
        lines.append(
            f"| {r['stage']} | {r['compression']:.1f}x | {r['nonzero']:,} | "
            f"{100 * r['hard_prune_accuracy']:.2f}% | {100 * r['pruned_accuracy']:.2f}% |"
            f"{val_cells} {r['epochs']:g} |"
        )
    with open(os.path.join(workdir, "progressive.md"), "w") as f:
        f.write("\n".join(lines) + "\n")

"""ADMM against the magnitude-pruning heuristics, with the same model, data and budget.

Every method starts from the same dense model (a run's ``dense/`` checkpoint) and
then spends the same number of training epochs (``--epochs``) on the same batches,
optimizer (Adam at the config's ``retrain_lr``, cosine-decayed) and augmentation;
only the way the sparsity is reached differs:

* ``admm``: the full ADMM pipeline of :mod:`experiments.train` (penalised W-steps with
  Z/U updates for ``admm_fraction`` of the budget, hard prune, masked retraining for
  the rest), with the rho/lr schedule of the model's config;
* ``one_shot``: prune to the target by magnitude at once, then masked retraining;
* ``iterative`` (Han et al., 2015): ``rounds`` rounds, each pruning by magnitude to a
  geometrically decreasing kept fraction ``keep ** (r / rounds)`` and retraining for
  ``epochs / rounds`` epochs (learning rate restarted each round);
* ``gradual`` (Zhu & Gupta, 2017; TF Model Optimization's and jaxpruner's default):
  the sparsity follows the cubic schedule ``s_t = s_f (1 - (1 - t / T)^3)`` over the
  first ``gradual_fraction`` of the budget (``T`` steps), masks recomputed by
  magnitude every ``gradual_every`` steps, then training with the final masks.

The per-layer split is the same for every method: the kept fractions of the model's
config (``experiments/configs/paper/*.py``) scaled by one factor so the pruned layers reach
the requested compression exactly (a layer never keeps more than all its weights;
:func:`experiments.config.scaled_sparsity`).

    python -m experiments.baselines --model lenet300_100 --compressions 10,20,40,60 --epochs 20
    python -m experiments.baselines --model lenet5 --compressions 25,50,100,200 --epochs 8
    python -m experiments.baselines --table   # table.md, results.json and the plot

Each finished (method, compression) is written to ``OUT/<model>.json`` at once; a
killed sweep restarted with the same command skips what is done (and refuses a file
made with other settings).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from collections.abc import Callable
from typing import Any

import jax
import optax

import admmjax
from experiments import config, train
from experiments import workdir as workdir_lib
from experiments.kernels import configure_cpu
from experiments.schema import (
    POSITIVE,
    Option,
    Range,
    check_value,
    field,
    options_of,
)

METHODS = ("admm", "one_shot", "iterative", "gradual")
CONFIGS = {
    "lenet300_100": "experiments/configs/paper/lenet300_100.py",
    "lenet5": "experiments/configs/paper/lenet5.py",
}
DENSE = {
    "lenet300_100": "experiments/results/lenet300_100/dense",
    "lenet5": "experiments/results/lenet5/dense",
}
OUT = "experiments/results/baselines"


# fmt: off
@dataclasses.dataclass(frozen=True)
class Budget:
    """What every method may spend after the shared dense model (each field's type,
    default, rule and help are its :class:`~experiments.schema.Option`)."""

    epochs: float = field(Option(
        float, 20.0, "training epochs per method and compression", rule=POSITIVE,
    ))
    admm_fraction: float = field(Option(
        float, 0.5, "ADMM: share of the epochs in W-steps (the rest retrains)",
        rule=Range(0, 1, low_open=True, high_open=True),
    ))
    admm_iterations: int = field(Option(
        int, 10, "ADMM: Z/U updates in the W-step share of the budget, a count",
        rule=Range(1),
    ))
    rounds: int = field(Option(
        int, 4, "iterative pruning: prune/retrain rounds, a count", rule=Range(1),
    ))
    gradual_fraction: float = field(Option(
        float, 0.5, "gradual: share of the epochs over which the sparsity ramps",
        rule=Range(0, 1, low_open=True, high_open=True),
    ))
    gradual_every: int = field(Option(
        int, 100, "gradual: optimizer steps between mask updates", rule=Range(1),
    ))
    # fmt: on

    def validate(self) -> None:
        """Every field against its option: ConfigError naming the value and the rule."""
        for name, option in options_of(type(self)).items():
            check_value(name, option, getattr(self, name))


#: The budget options the command line sets (the others keep their defaults).
CLI_BUDGET = ("epochs", "admm_iterations", "rounds")


# --------------------------------------------------------------------------- budgets


def _base_config(model: str) -> dict[str, Any]:
    from experiments.configs import load as load_config_file

    return load_config_file(CONFIGS[model])


def _config(model: str, sparsity: dict[str, float]) -> train.Config:
    """The model's config with ``sparsity``, starting from the shared dense model."""
    values = _base_config(model)
    values.update(sparsity=sparsity, progress=False, pretrained=DENSE[model])
    return train.Config(**values)


# --------------------------------------------------------------------------- heuristics


def _masks_for(params: Any, pattern_sparsity: dict[str, float]) -> tuple[Any, Any]:
    targets = admmjax.sparsity_by_path(params, pattern_sparsity)
    return admmjax.prune(params, targets)


def masked_training(
    pipe: train.Pipeline,
    params: Any,
    sparsity_at: Callable[[int], dict[str, float] | None],
    steps: int,
    lr: optax.Schedule,
) -> Any:
    """Adam under ``keep_pruned`` for ``steps`` steps; masks recomputed by magnitude at
    every step where ``sparsity_at(step)`` returns a per-pattern sparsity."""
    params, masks = _masks_for(params, sparsity_at(0))
    tx = admmjax.keep_pruned(optax.adam(lr), masks)
    params = pipe.replicate(params)
    opt_state = pipe.replicate(tx.init(params))
    step_fn = admmjax.make_train_step(pipe.loss_fn, tx, donate=False)
    key = jax.random.fold_in(pipe.key, 99)
    for step, x, y in pipe.batches("retrain", 0):
        if step >= steps:
            break
        if step > 0 and (target := sparsity_at(step)) is not None:
            params, masks = _masks_for(params, target)
            params = pipe.replicate(params)
            opt_state = opt_state._replace(masks=pipe.replicate(masks))
        params, opt_state, _ = step_fn(params, opt_state, x, y, train.step_key(key, step))
    return params


def _cosine(lr: float, period: int) -> optax.Schedule:
    return train.lr_schedule(lr, "cosine", period)


def one_shot(pipe: train.Pipeline, dense: Any, final: dict[str, float], b: Budget) -> Any:
    steps = round(b.epochs * pipe.steps_per_epoch)
    return masked_training(pipe, dense, lambda s: final if s == 0 else None, steps,
                           _cosine(pipe.cfg.retrain_lr, steps))  # fmt: skip


def iterative(pipe: train.Pipeline, dense: Any, final: dict[str, float], b: Budget) -> Any:
    steps = round(b.epochs * pipe.steps_per_epoch)
    per_round = max(1, steps // b.rounds)

    def sparsity_at(step: int) -> dict[str, float] | None:
        if step % per_round or step // per_round >= b.rounds:
            return None
        r = step // per_round + 1
        return {p: 1.0 - (1.0 - s) ** (r / b.rounds) for p, s in final.items()}

    return masked_training(pipe, dense, sparsity_at, steps, _cosine(pipe.cfg.retrain_lr, per_round))


def gradual(pipe: train.Pipeline, dense: Any, final: dict[str, float], b: Budget) -> Any:
    steps = round(b.epochs * pipe.steps_per_epoch)
    ramp = max(1, round(b.gradual_fraction * steps))

    def sparsity_at(step: int) -> dict[str, float] | None:
        if step % b.gradual_every or step > ramp:
            return None
        t = min(1.0, (step + b.gradual_every) / ramp)  # reaches s_f at the last update
        return {p: s * (1.0 - (1.0 - t) ** 3) for p, s in final.items()}

    return masked_training(pipe, dense, sparsity_at, steps, _cosine(pipe.cfg.retrain_lr, steps))


def run_admm(model: str, final: dict[str, float], b: Budget, workdir: str, like: Any) -> Any:
    cfg = _config(model, final)
    admm_epochs = b.epochs * b.admm_fraction
    cfg = dataclasses.replace(
        cfg,
        admm_iterations=b.admm_iterations,
        admm_epochs=admm_epochs / b.admm_iterations,
        admm_steps=0,
        retrain_epochs=b.epochs - admm_epochs,
        retrain_steps=0,
    )
    train.run(cfg, workdir, log=lambda s: None)
    return admmjax.checkpoint.load_pytree(os.path.join(workdir, "pruned"), like)


# --------------------------------------------------------------------------- the sweep


def run_one(model: str, method: str, compression: float, b: Budget, workroot: str) -> dict:
    base_sparsity = _base_config(model)["sparsity"]
    pipe = train.Pipeline(_config(model, base_sparsity), workroot, log=lambda s: None)
    final = config.scaled_sparsity(pipe.init_params, base_sparsity, compression)
    dense = workdir_lib.load_dense_params(DENSE[model], pipe.init_params)
    start = time.perf_counter()
    if method == "admm":
        workdir = os.path.join(workroot, f"{model}_admm_{compression:g}x_{b.epochs:g}ep")
        params = run_admm(model, final, b, workdir, pipe.init_params)
    else:
        fn = {"one_shot": one_shot, "iterative": iterative, "gradual": gradual}[method]
        params = fn(pipe, dense, final, b)
    seconds = time.perf_counter() - start
    targets = admmjax.sparsity_by_path(params, final)
    report = admmjax.sparsity_report(params, targets)
    return {
        "method": method,
        "target_compression": compression,
        "compression": report.compression,
        "nonzero": report.nonzero,
        "weights": report.weights,
        "test_accuracy": pipe.evaluate(pipe.replicate(params)),
        "sparsity": final,
        "seconds": seconds,
    }


def sweep(model: str, compressions: list[float], methods: list[str], b: Budget,
          out_dir: str, workroot: str) -> dict:  # fmt: skip
    """Runs what is missing from ``out_dir/<model>.json``, saving after each run."""
    path = os.path.join(out_dir, f"{model}.json")
    settings = {"model": model, "budget": dataclasses.asdict(b), "dense": DENSE[model],
                "config": CONFIGS[model]}  # fmt: skip
    doc = {"settings": settings, "runs": []}
    if os.path.exists(path):
        with open(path) as f:
            doc = json.load(f)
        if doc["settings"] != settings:
            raise ValueError(
                f"{path} holds a sweep with other settings ({doc['settings']}); "
                "move it or use --out"
            )
    done = {(r["method"], r["target_compression"]) for r in doc["runs"]}
    os.makedirs(out_dir, exist_ok=True)
    for c in compressions:
        for m in methods:
            if (m, c) in done:
                continue
            res = run_one(model, m, c, b, workroot)
            print(
                f"{model} {m:9s} {c:5g}x: test accuracy {100 * res['test_accuracy']:.2f}% "
                f"({res['compression']:.1f}x, {res['seconds']:.0f} s)", flush=True,
            )  # fmt: skip
            doc["runs"].append(res)
            doc["command"] = " ".join(["python -m experiments.baselines", *sys.argv[1:]])
            tmp = path + ".tmp"
            with open(tmp, "w") as f:
                json.dump(doc, f, indent=2)
            os.replace(tmp, path)
    return doc


# --------------------------------------------------------------------------- reporting


def write_table(out_dir: str) -> str:
    """``table.md`` and ``accuracy_vs_compression.png`` from every ``<model>.json``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    docs = {}
    for model in CONFIGS:
        path = os.path.join(out_dir, f"{model}.json")
        if os.path.exists(path):
            with open(path) as f:
                docs[model] = json.load(f)
    if not docs:
        raise FileNotFoundError(f"no <model>.json in {out_dir}: run a sweep first")
    lines = ["# ADMM against magnitude-pruning heuristics (test accuracy, %)\n"]
    fig, axes = plt.subplots(1, len(docs), figsize=(5.5 * len(docs), 4), squeeze=False)
    for ax, (model, doc) in zip(axes[0], docs.items(), strict=False):
        b = doc["settings"]["budget"]
        lines.append(
            f"\n## {model}\n\nEvery method: the dense model `{doc['settings']['dense']}`, then "
            f"{b['epochs']:g} epochs (ADMM: {b['admm_fraction'] * b['epochs']:g} epochs of "
            f"W-steps over {b['admm_iterations']} Z/U updates + retraining; iterative: "
            f"{b['rounds']} rounds; gradual: cubic ramp over "
            f"{b['gradual_fraction'] * b['epochs']:g} epochs, masks every "
            f"{b['gradual_every']} steps). Command: `{doc.get('command', '')}`\n"
        )
        comps = sorted({r["target_compression"] for r in doc["runs"]})
        methods = [m for m in METHODS if any(r["method"] == m for r in doc["runs"])]
        acc = {(r["method"], r["target_compression"]): r for r in doc["runs"]}
        lines.append("| method | " + " | ".join(f"{c:g}x" for c in comps) + " |")
        lines.append("|---|" + "---:|" * len(comps))
        for m in methods:
            cells = []
            for c in comps:
                r = acc.get((m, c))
                best = max(acc[(mm, c)]["test_accuracy"] for mm in methods if (mm, c) in acc)
                cell = "" if r is None else f"{100 * r['test_accuracy']:.2f}"
                cells.append(f"**{cell}**" if r and r["test_accuracy"] == best else cell)
            lines.append(f"| {m} | " + " | ".join(cells) + " |")
            xs = [c for c in comps if (m, c) in acc]
            ax.plot(xs, [100 * acc[(m, c)]["test_accuracy"] for c in xs], "o-", label=m)
        ax.set_xscale("log")
        ax.minorticks_off()  # only the measured compressions are labelled
        ax.set_xticks(comps, [f"{c:g}x" for c in comps])
        ax.set_xlabel("compression of the pruned layers")
        ax.set_ylabel("test accuracy (%)")
        ax.set_title(model)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, "accuracy_vs_compression.png"), dpi=120)
    plt.close(fig)
    text = "\n".join(lines) + "\n"
    with open(os.path.join(out_dir, "table.md"), "w") as f:
        f.write(text)
    with open(os.path.join(out_dir, "results.json"), "w") as f:
        json.dump(docs, f, indent=2)
    return text


def main(argv: list[str] | None = None) -> None:
    configure_cpu()  # before JAX starts its backend: XLA reads XLA_FLAGS then
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=sorted(CONFIGS), help="model to sweep")
    parser.add_argument(
        "--compressions",
        default="",
        help="comma-separated compressions of the pruned layers, e.g. 10,20",
    )
    parser.add_argument(
        "--methods",
        default=",".join(METHODS),
        help=f"comma-separated subset of {','.join(METHODS)}",
    )
    budget_options = options_of(Budget)
    for name in CLI_BUDGET:
        config.add_option(parser, name, budget_options[name])
    parser.add_argument("--out", default=OUT, help="directory of the JSON, table and plot")
    parser.add_argument(
        "--workroot",
        default="workdirs/baselines",
        help="scratch directory for the ADMM runs' checkpoints",
    )
    parser.add_argument(
        "--table",
        action="store_true",
        help="only (re)write table.md and the plot from the JSON files",
    )
    args = parser.parse_args(argv)  # fmt: skip
    if args.table:
        print(write_table(args.out))
        return
    if not args.model:
        parser.error("give --model (or --table)")
    try:
        comps = [float(c) for c in args.compressions.split(",") if c.strip()]
    except ValueError:
        parser.error(f"--compressions must be numbers > 1 like 10,20, got {args.compressions!r}")
    if not comps or any(not c > 1 for c in comps):
        parser.error(f"--compressions must be numbers > 1 like 10,20, got {args.compressions!r}")
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if bad := [m for m in methods if m not in METHODS]:
        parser.error(f"unknown methods {bad}; choose from {list(METHODS)}")
    budget = Budget(**{n: getattr(args, n) for n in CLI_BUDGET if getattr(args, n) is not None})
    if not os.path.isdir(DENSE[args.model]):
        parser.error(f"the dense model {DENSE[args.model]} is missing (run the config first)")
    sweep(args.model, comps, methods, budget, args.out, args.workroot)
    print(write_table(args.out))


if __name__ == "__main__":
    main()

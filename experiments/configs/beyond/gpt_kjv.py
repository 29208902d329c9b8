# python -m experiments.lm --config experiments/configs/beyond/gpt_kjv.py --workdir experiments/results/gpt_kjv
# python -m experiments.lm --config experiments/configs/beyond/gpt_kjv.py:admm_50 --workdir experiments/results/gpt_kjv_admm_50
# python -m experiments.lm --config experiments/configs/beyond/gpt_kjv.py:admm_70 --workdir experiments/results/gpt_kjv_admm_70
# python -m experiments.lm --config experiments/configs/beyond/gpt_kjv.py:admm_2of4 --workdir experiments/results/gpt_kjv_admm_2of4
# python -m experiments.lm --config experiments/configs/beyond/gpt_kjv.py:gradual_50 --workdir experiments/results/gpt_kjv_gradual_50
# python -m experiments.lm --config experiments/configs/beyond/gpt_kjv.py:gradual_70 --workdir experiments/results/gpt_kjv_gradual_70
# python -m experiments.lm --config experiments/configs/beyond/gpt_kjv.py:gradual_90 --workdir experiments/results/gpt_kjv_gradual_90
# python -m experiments.lm --config experiments/configs/beyond/gpt_kjv.py:gradual_2of4 --workdir experiments/results/gpt_kjv_gradual_2of4
# python -m experiments.lm --config experiments/configs/beyond/gpt_kjv.py:admm_90_long --workdir experiments/results/gpt_kjv_admm_90_long
# python -m experiments.lm --config experiments/configs/beyond/gpt_kjv.py:gradual_90_long --workdir experiments/results/gpt_kjv_gradual_90_long
# python -m experiments.lm --config experiments/configs/beyond/gpt_kjv.py:admm_90_xl --workdir experiments/results/gpt_kjv_admm_90_xl
# python -m experiments.lm --config experiments/configs/beyond/gpt_kjv.py:gradual_90_xl --workdir experiments/results/gpt_kjv_gradual_90_xl
"""The byte-level GPT on the King James Bible: dense training, then ADMM on the training
loss against gradual magnitude pruning at equal budgets.

The base recipe trains the GPT (4 layers, 4 heads, width 128, context 128: 842,496
parameters) for ``PRETRAIN_STEPS`` Adam steps of 32 random windows of the training
split (Exodus..Philemon), then prunes every attention and MLP kernel of every layer to
90% by ADMM (embeddings, norms and biases stay dense). Its ``dense/`` is the model
every other variant, and the one-shot pruners of ``python -m experiments.prune_lm``,
start from.

Variants ``admm_S`` / ``gradual_S`` (S = 50, 70, 90 % pruned per kernel and layer, or
``2of4``: 2:4 along each kernel's inputs): the same sparsify budget
(``ADMM_ITERATIONS`` x ``ADMM_STEPS`` steps) and retraining (``RETRAIN_STEPS``),
the same optimizer and data, reaching the target either by ADMM (rho 0.05 growing
x1.5 per iteration) or by gradual magnitude pruning (Zhu & Gupta's cubic ramp, masks
recomputed at the start of every W-step).

``admm_90_long`` / ``gradual_90_long``: the same at 90% with a budget 3.3x as long
(``LONG``: 8 W-steps of 150 steps, 800 retraining steps); ``admm_90_xl`` /
``gradual_90_xl`` at 6.7x (``XL``: 10 W-steps of 200 steps and 2,000 retraining steps,
both at the pretraining's peak learning rate 1e-3).
"""

from functools import partial

from experiments.configs import recipe, variant

PRETRAIN_STEPS = 3000
ADMM_ITERATIONS = 5
ADMM_STEPS = 80
RETRAIN_STEPS = 200
TARGETS = {"50": 0.5, "70": 0.7, "90": 0.9, "2of4": "2:4"}
LONG = {"admm_iterations": 8, "admm_steps": 150, "retrain_steps": 800}
XL = {"admm_iterations": 10, "admm_steps": 200, "admm_lr": 1e-3, "retrain_steps": 2000,
      "retrain_lr": 1e-3}
BASE_VARIANT = "admm_90"  # what the base recipe (no variant) runs after pretraining


def sparsity(target: float | str) -> dict:
    """Every attention and MLP kernel; 2:4 groups along each kernel's inputs (the out
    kernel's inputs are its (heads, head_dim) axes)."""
    if target == "2:4":
        return {"blocks/attention/out/kernel": "2:4@0,1", "blocks/*/kernel": "2:4@0"}
    return {"blocks/attention/*/kernel": target, "blocks/mlp/*/kernel": target}


def base() -> dict:
    return {
        "model": "gpt",
        "dataset": "kjv",
        "context": 128,
        "batch_size": 32,
        "eval_batch_size": 256,
        "weight_decay": 0.0,
        "pretrain_steps": PRETRAIN_STEPS,
        "pretrain_lr": 1e-3,
        "sparsity": sparsity(0.9),
        "admm_iterations": ADMM_ITERATIONS,
        "admm_steps": ADMM_STEPS,
        "admm_lr": 3e-4,
        "rho": 0.05,
        "rho_growth": 1.5,
        "retrain_steps": RETRAIN_STEPS,
        "retrain_lr": 3e-4,
        "log_every": 50,
    }


def _from_dense(method: str, target: float | str, **changes) -> dict:
    return {
        **base(),
        "pretrained": recipe("beyond/gpt_kjv", part="dense"),
        "sparsity": sparsity(target),
        "sparsify": method,
        **changes,
    }


def get_config(arg: str = "") -> dict:
    variants = {
        f"{method}_{name}": partial(_from_dense, method, target)
        for method in ("admm", "gradual")
        for name, target in TARGETS.items()
        if f"{method}_{name}" != BASE_VARIANT
    }
    for method in ("admm", "gradual"):
        variants[f"{method}_90_long"] = partial(_from_dense, method, 0.9, **LONG)
        variants[f"{method}_90_xl"] = partial(_from_dense, method, 0.9, **XL)
    return variant(arg, {"": base, **variants})

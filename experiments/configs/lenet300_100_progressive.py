# python -m experiments.progressive --config experiments/configs/lenet300_100_progressive.py --workdir experiments/results/lenet300_100_progressive
"""Progressive ADMM on LeNet-300-100: from the committed 22.9x model to 60x in two stages.

Stage 1 starts from ``experiments/results/lenet300_100/pruned`` (22.9x, 98.63%) with
its zeros carried and prunes to 40x, stage 2 to 60x; the paper's proportions between
layers (kept 4% / 7% / 12% at 22.9x) scaled down together. Schedule of
``lenet300_100.py``: rho from 1.5e-3 growing x1.3 per ADMM iteration, Adam at 5e-4,
2-pixel translations.
"""

import os

_HERE = os.path.dirname(os.path.abspath(__file__))


def get_config() -> dict:
    base = {
        "model": "lenet300_100",
        "dataset": "mnist",
        "batch_size": 128,
        "augment_shift": 2,
        "weight_decay": 5e-5,
        "pretrained": os.path.join(_HERE, "..", "results", "lenet300_100", "pruned"),
        "carry_masks": True,
        "admm_lr": 5e-4,
        "rho": 1.5e-3,
        "rho_growth": 1.3,
        "admm_iterations": 10,
        "admm_epochs": 1,
        "retrain_epochs": 15,
        "retrain_lr": 5e-4,
    }
    return {
        "base": base,
        "stages": [
            {"sparsity": {"fc1/kernel": 0.9771, "fc2/kernel": 0.96, "fc3/kernel": 0.931}},
            {"sparsity": {"fc1/kernel": 0.98475, "fc2/kernel": 0.9733, "fc3/kernel": 0.954}},
        ],
    }

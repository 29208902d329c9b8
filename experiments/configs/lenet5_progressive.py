# python -m experiments.progressive --config experiments/configs/lenet5_progressive.py --workdir experiments/results/lenet5_progressive
"""Progressive ADMM on LeNet-5: from the committed 71.2x model to about 262x in two stages.

Stage 1 starts from ``experiments/results/lenet5/pruned`` (71.2x, 99.28%) with its
zeros carried and prunes to 143x; stage 2 goes on to 262x. The final per-layer split
(kept 34% / 2% / 0.18% / 5%: 170 + 500 + 720 + 250 = 1,640 weights) follows the
proportions sparse variational dropout found for this network (Molchanov et al.,
2017). The ADMM schedule is the one of ``lenet5.py`` (rho from 5e-3 growing x1.3 per
iteration, learning rate reset and cosine-decayed per iteration).
"""

import os

_HERE = os.path.dirname(os.path.abspath(__file__))


def get_config() -> dict:
    base = {
        "model": "lenet5",
        "dataset": "mnist",
        "batch_size": 128,
        "augment_shift": 1,
        "weight_decay": 5e-5,
        "pretrained": os.path.join(_HERE, "..", "results", "lenet5", "pruned"),
        "carry_masks": True,
        "admm_lr": 1e-3,
        "admm_schedule": "cosine",
        "rho": 5e-3,
        "rho_growth": 1.3,
        "retrain_lr": 1e-3,
    }
    return {
        "base": base,
        "stages": [
            {
                "sparsity": {
                    "conv1/kernel": 0.6,
                    "conv2/kernel": 0.95,
                    "fc1/kernel": 0.997,
                    "fc2/kernel": 0.93,
                },
                "admm_iterations": 8,
                "admm_epochs": 1,
                "retrain_epochs": 10,
            },
            {
                "sparsity": {
                    "conv1/kernel": 0.66,
                    "conv2/kernel": 0.98,
                    "fc1/kernel": 0.9982,
                    "fc2/kernel": 0.95,
                },
                "admm_iterations": 10,
                "admm_epochs": 1,
                "retrain_epochs": 15,
            },
        ],
    }

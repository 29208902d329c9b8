# python -m experiments.progressive --config experiments/configs/lenet300_100_val.py --workdir experiments/results/lenet300_100_val
"""LeNet-300-100 to 60x with 5,000 training images held out from the start.

Every stage, the dense pretraining included, trains on the other 55,000 images, so
the validation accuracy each summary reports is of images no stage has seen. The
recipe choices at 60x are made on it, never on the test set: this chain's stage 3 is
recipe A (that of ``lenet300_100_progressive.py``), and the configs
``lenet300_100_val_60x_*.py`` rerun stage 3 from this chain's stage 2 with other
ADMM schedules.

Stage 1 is ``lenet300_100.py`` (pretraining, the paper's 22.9x budget); stages 2 and 3
are ``lenet300_100_progressive.py``'s 40x and 60x.
"""

import os

_HERE = os.path.dirname(os.path.abspath(__file__))

VALIDATION_SIZE = 5000
SPARSITY_60X = {"fc1/kernel": 0.98475, "fc2/kernel": 0.9733, "fc3/kernel": 0.954}
# The 60x stage of every variant, from this chain's stage 2 (40x).
FROM_40X = os.path.join(_HERE, "..", "results", "lenet300_100_val", "stage_2", "pruned")


def get_config() -> dict:
    base = {
        "model": "lenet300_100",
        "dataset": "mnist",
        "batch_size": 128,
        "augment_shift": 2,
        "validation_size": VALIDATION_SIZE,
        "weight_decay": 5e-5,
        "carry_masks": True,
        "admm_lr": 5e-4,
        "rho": 1.5e-3,
        "rho_growth": 1.3,
        "retrain_lr": 5e-4,
    }
    return {
        "base": base,
        "stages": [
            {
                "pretrain_epochs": 30,
                "pretrain_lr": 1e-3,
                "sparsity": {"fc1/kernel": 0.96, "fc2/kernel": 0.93, "fc3/kernel": 0.88},
                "admm_iterations": 15,
                "admm_epochs": 2,
                "retrain_epochs": 30,
            },
            {
                "sparsity": {"fc1/kernel": 0.9771, "fc2/kernel": 0.96, "fc3/kernel": 0.931},
                "admm_iterations": 10,
                "admm_epochs": 1,
                "retrain_epochs": 15,
            },
            {
                "sparsity": SPARSITY_60X,
                "admm_iterations": 10,
                "admm_epochs": 1,
                "retrain_epochs": 15,
            },
        ],
    }

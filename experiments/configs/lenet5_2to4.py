# python -m experiments.mnist --config experiments/configs/lenet5_2to4.py --workdir experiments/results/lenet5_2to4
"""LeNet-5 with 2:4 sparsity (two of every four consecutive inputs) on conv2, fc1, fc2.

ADMM with the N:M projection (``admmjax.NM(2, 4)``, written ``"2:4"`` in a config)
from the committed dense model: 6 ADMM iterations of one epoch, then 6 epochs of
masked retraining. conv1 stays dense: its kernel has one input channel, so it has no
groups of four along the input dimension. 2:4 is the pattern sparse tensor cores
run at twice the dense rate; it halves the weights of the layers it covers.
"""

import os

_HERE = os.path.dirname(os.path.abspath(__file__))


def get_config() -> dict:
    return {
        "model": "lenet5",
        "dataset": "mnist",
        "batch_size": 128,
        "augment_shift": 1,
        "weight_decay": 5e-5,
        "pretrained": os.path.join(_HERE, "..", "results", "lenet5", "dense"),
        "sparsity": {"conv2/kernel": "2:4", "fc1/kernel": "2:4", "fc2/kernel": "2:4"},
        "admm_iterations": 6,
        "admm_epochs": 1,
        "admm_lr": 1e-3,
        "admm_schedule": "cosine",
        "rho": 5e-3,
        "rho_growth": 1.3,
        "retrain_epochs": 6,
        "retrain_lr": 1e-3,
    }

# python -m experiments.mnist --config experiments/configs/lenet5_structured.py --workdir experiments/results/lenet5_structured
"""Structured LeNet-5: whole filters and neurons removed with ADMM (``Structured``).

Keeps 10 of conv1's 20 filters, 20 of conv2's 50 and 100 of fc1's 500 neurons
(``"filters:S"`` prunes the fraction S of the output slices), from the committed dense
model: 6 ADMM iterations of one epoch, 6 epochs of masked retraining. Then
``python -m experiments.shrink WORKDIR`` rebuilds it as a smaller dense network
(conv1 5x5x1x10, conv2 5x5x10x20, fc1 320x100, fc2 100x10) with the same outputs.
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
        "sparsity": {
            "conv1/kernel": "filters:0.5",
            "conv2/kernel": "filters:0.6",
            "fc1/kernel": "filters:0.8",
        },
        "admm_iterations": 6,
        "admm_epochs": 1,
        "admm_lr": 1e-3,
        "admm_schedule": "cosine",
        "rho": 5e-3,
        "rho_growth": 1.3,
        "retrain_epochs": 6,
        "retrain_lr": 1e-3,
    }

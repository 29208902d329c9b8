# python -m experiments.mnist --config experiments/configs/lenet5_quantized.py --workdir experiments/results/lenet5_quantized
"""LeNet-5 pruned and quantized: the 143.5x progressive model put on 15 levels per layer.

Starts from stage 1 of ``lenet5_progressive.py`` (143.5x, 99.25%) with its zeros
carried (``carry_masks``), and runs ADMM with the projection onto ``s * {-7..7}``
per layer, ``s`` learned exactly at every Z-step (``"quant:7"``): with the zeros fixed,
that is pruning + quantization. After the hard projection the weights stay on their
levels (``freeze_quantized``); only the dense biases retrain. Storage: 4 bits per
nonzero value (14 nonzero levels) plus the index overhead of
``experiments.export``'s relative-gap encoding, against 32-bit dense weights.
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
        "pretrained": os.path.join(
            _HERE, "..", "results", "lenet5_progressive", "stage_1", "pruned"
        ),
        "carry_masks": True,
        "sparsity": {
            "conv1/kernel": "quant:7",
            "conv2/kernel": "quant:7",
            "fc1/kernel": "quant:7",
            "fc2/kernel": "quant:7",
        },
        "admm_iterations": 6,
        "admm_epochs": 1,
        "admm_lr": 1e-3,
        "admm_schedule": "cosine",
        "rho": 5e-3,
        "rho_growth": 1.3,
        "retrain_epochs": 2,
        "retrain_lr": 1e-3,
    }

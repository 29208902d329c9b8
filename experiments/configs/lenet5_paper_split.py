# python -m experiments.mnist --config experiments/configs/lenet5_paper_split.py --workdir experiments/results/lenet5_paper_split
"""LeNet-5 with the paper's own per-layer split, 20% / 8% / 0.9% / 7% (71.2x).

The same schedule as ``lenet5.py``; only the allocation of the 6,050 weights differs.
"""


def get_config() -> dict:
    return {
        "model": "lenet5",
        "dataset": "mnist",
        "batch_size": 128,
        "augment_shift": 1,
        "pretrain_epochs": 12,
        "pretrain_lr": 1e-3,
        "weight_decay": 5e-5,
        "sparsity": {
            "conv1/kernel": 0.8,
            "conv2/kernel": 0.92,
            "fc1/kernel": 0.991,
            "fc2/kernel": 0.93,
        },
        "admm_iterations": 15,
        "admm_epochs": 1,
        "admm_lr": 1e-3,
        "admm_schedule": "cosine",
        "rho": 5e-3,
        "rho_growth": 1.3,
        "retrain_epochs": 30,
        "retrain_lr": 1e-3,
    }

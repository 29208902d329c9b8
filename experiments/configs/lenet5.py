# python -m experiments.mnist --config experiments/configs/lenet5.py --workdir workdirs/lenet5
"""LeNet-5 (Caffe layout) on MNIST: the paper's Table 2 budget (20/8/0.9/7%, 71.2x).

The official recipe spends about 175 epochs (20k + 150k + 20k steps at batch 50);
this one spends far fewer: cosine-decayed pretraining, ten ADMM iterations of one
epoch each with rho growing x1.5 per iteration, and a short cosine retraining, all
with random translations of up to 2 pixels.
"""


def get_config() -> dict:
    return {
        "model": "lenet5",
        "dataset": "mnist",
        "batch_size": 128,
        "augment_shift": 2,
        "pretrain_epochs": 12,
        "pretrain_lr": 1e-3,
        "weight_decay": 5e-5,
        "sparsity": {
            "conv1/kernel": 0.80,
            "conv2/kernel": 0.92,
            "fc1/kernel": 0.991,
            "fc2/kernel": 0.93,
        },
        "admm_iterations": 10,
        "admm_epochs": 1,
        "admm_lr": 1e-3,
        "rho": 1e-3,
        "rho_growth": 1.5,
        "retrain_epochs": 10,
        "retrain_lr": 1e-3,
    }

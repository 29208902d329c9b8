# python -m experiments.progressive --config experiments/configs/beyond/lenet5_progressive.py --workdir experiments/results/lenet5_progressive
"""Progressive ADMM on LeNet-5: from the paper's 71.2x model to about 262x in two stages.

Stage 1 starts from ``paper/lenet5.py``'s pruned model (71.2x, 99.28%) with its zeros
carried and prunes to 143x; stage 2 goes on to 262x. The final per-layer split (kept
34% / 2% / 0.18% / 5%: 170 + 500 + 720 + 250 = 1,640 weights) follows the proportions
sparse variational dropout found for this network (Molchanov et al., 2017). The ADMM
schedule is the one of ``paper/lenet5.py`` (rho from 5e-3 growing x1.3 per iteration,
learning rate reset and cosine-decayed per iteration).
"""

from experiments.configs import recipe
from experiments.configs.paper import lenet5

SPARSITY_143X = {"conv1/kernel": 0.6, "conv2/kernel": 0.95, "fc1/kernel": 0.997, "fc2/kernel": 0.93}


def schedule() -> dict:
    """The fields every progressive LeNet-5 stage shares (not its start): those of
    ``paper/lenet5.py``'s ADMM and retraining, zeros carried."""
    paper = lenet5.get_config()
    shared = ("model", "dataset", "batch_size", "augment_shift", "weight_decay", "admm_lr")
    shared += ("admm_schedule", "rho", "rho_growth", "retrain_lr")
    return {**{k: paper[k] for k in shared}, "carry_masks": True}


def stages_to_250x() -> list[dict]:
    """143.5x -> 200x -> 250x: the two stages of ``lenet5_progressive250.py``."""
    return [
        {
            # 200.2x: 180 + 700 + 1,000 + 270 = 2,150 weights.
            "sparsity": {
                "conv1/kernel": 0.64,
                "conv2/kernel": 0.972,
                "fc1/kernel": 0.9975,
                "fc2/kernel": 0.946,
            },
            "admm_iterations": 8,
            "admm_epochs": 1,
            "retrain_epochs": 10,
        },
        {
            # 250.3x: 170 + 550 + 750 + 250 = 1,720 weights.
            "sparsity": {
                "conv1/kernel": 0.66,
                "conv2/kernel": 0.978,
                "fc1/kernel": 0.998125,
                "fc2/kernel": 0.95,
            },
            "admm_iterations": 10,
            "admm_epochs": 1,
            "retrain_epochs": 30,
        },
    ]


def get_config() -> dict:
    return {
        "base": {**schedule(), "pretrained": recipe("paper/lenet5", part="pruned")},
        "stages": [
            {
                "sparsity": dict(SPARSITY_143X),
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

# python -m experiments.imagenet --config experiments/configs/alexnet_weights.py --workdir workdirs/alexnet_weights --pretrained bvlc_alexnet.npz
"""BVLC AlexNet on ImageNet, the paper's weight-focused experiment (Table 3): 21x.

Pruned fractions conv1..fc8 = .19 / .80 / .81 / .80 / .80 / .972 / .941 / .907, which
keep 28,227 / 61,440 / 168,100 / 132,711 / 88,474 / 1,056,965 / 989,856 / 380,928
weights: 2,906,701 of 60,954,656, 20.97x (the paper's 2.9M of 60.9M, "21x"). conv1-5
are pruned 4.87x in weights but only 3.4x in multiply-accumulates (conv1, which keeps
81%, has the most MACs per weight); all layers: 724.4M -> 198.4M MACs per image, 3.7x
(``python -m experiments.macs --config`` on this file prints the full table).

Start point: the converted BVLC weights (top-5 80.2% in the paper, single center crop
here), given with ``--pretrained FILE.npz`` (see experiments/alexnet.py for the layout
and ``python -m experiments.alexnet convert``). The paper's ADMM used rho = 1.5e-3 on
every layer for 40 iterations with Caffe's SGD (lr 1e-3, momentum 0.9, weight decay
5e-4, batch 256); this pipeline's W-step optimizer is Adam, so the learning rates
below are Adam's for fine-tuning a trained network (a starting point, not tuned on
ImageNet here: no ImageNet or GPU on the machine that wrote it). The paper does not
state the W-step length; one epoch per ADMM iteration is assumed.
"""


def get_config() -> dict:
    return {
        "model": "alexnet",
        "dataset": "imagenet2012",
        "batch_size": 256,
        "eval_batch_size": 512,
        "dropout": 0.5,
        "augment_shift": 0,  # ImageNet's random crops and flips are done on the host
        "weight_decay": 5e-4,
        "pretrain_epochs": 0,  # give --pretrained: training AlexNet from scratch is 90 epochs
        "sparsity": {
            "conv1/kernel": 0.19,
            "conv2/kernel": 0.80,
            "conv3/kernel": 0.81,
            "conv4/kernel": 0.80,
            "conv5/kernel": 0.80,
            "fc6/kernel": 0.972,
            "fc7/kernel": 0.941,
            "fc8/kernel": 0.907,
        },
        "admm_iterations": 40,
        "admm_epochs": 1.0,
        "admm_lr": 1e-5,
        "admm_schedule": "constant",
        "rho": 1.5e-3,
        "rho_growth": 1.0,
        "retrain_epochs": 10,
        "retrain_lr": 1e-5,
        "retrain_schedule": "cosine",
        "checkpoint_every": 1000,
        "log_every": 100,
    }

# python -m experiments.mnist --config experiments/configs/beyond/lenet5_targets.py:2to4 --workdir experiments/results/lenet5_targets_2to4
# python -m experiments.mnist --config experiments/configs/beyond/lenet5_targets.py:structured --workdir experiments/results/lenet5_targets_structured
# python -m experiments.mnist --config experiments/configs/beyond/lenet5_targets.py:quantized --workdir experiments/results/lenet5_targets_quantized
"""LeNet-5 with the other ADMM targets: 2:4, whole filters, pruning + quantization.

Each variant runs ADMM with one of admmjax's projections from a committed model, 6
ADMM iterations of one epoch (the ADMM schedule of ``paper/lenet5.py``), then masked
retraining:

* ``2to4``: two of every four consecutive inputs on conv2, fc1, fc2 (``admmjax.NM(2,
  4)``, written ``"2:4"``), from ``paper/lenet5.py``'s dense model, 6 retraining
  epochs. conv1 stays dense: its kernel has one input channel, so no groups of four
  along the input dimension. 2:4 is the pattern sparse tensor cores run at twice the
  dense rate; it halves the weights of the layers it covers.
* ``structured``: keeps 10 of conv1's 20 filters, 20 of conv2's 50 and 100 of fc1's
  500 neurons (``"filters:S"`` prunes the fraction S of the output slices), from the
  dense model, 6 retraining epochs. ``python -m experiments.shrink WORKDIR`` then
  rebuilds it as a smaller dense network with the same outputs.
* ``quantized``: the 143.5x model of ``lenet5_progressive.py``'s stage 1 put on 15
  levels per layer: zeros carried, projection onto ``s * {-7..7}`` per layer with
  ``s`` learned exactly at every Z-step (``"quant:7"``); after the hard projection the
  weights stay on their levels (``freeze_quantized``), only the dense biases retrain
  (2 epochs). Storage: 4 bits per nonzero value plus the index overhead of
  ``experiments.export``'s relative-gap encoding, against 32-bit dense weights.
"""

from experiments.configs import recipe, variant
from experiments.configs.beyond import lenet5_progressive

ALL_KERNELS = ("conv1/kernel", "conv2/kernel", "fc1/kernel", "fc2/kernel")


def base() -> dict:
    schedule = {k: v for k, v in lenet5_progressive.schedule().items() if k != "carry_masks"}
    return {
        **schedule,
        "pretrained": recipe("paper/lenet5", part="dense"),
        "admm_iterations": 6,
        "admm_epochs": 1,
        "retrain_epochs": 6,
    }


def _2to4() -> dict:
    return {**base(), "sparsity": {k: "2:4" for k in ALL_KERNELS[1:]}}


def _structured() -> dict:
    sparsity = {"conv1/kernel": "filters:0.5", "conv2/kernel": "filters:0.6"}
    return {**base(), "sparsity": {**sparsity, "fc1/kernel": "filters:0.8"}}


def _quantized() -> dict:
    return {
        **base(),
        "pretrained": recipe("beyond/lenet5_progressive", part="stage_1/pruned"),
        "carry_masks": True,
        "sparsity": {k: "quant:7" for k in ALL_KERNELS},
        "retrain_epochs": 2,
    }


def get_config(arg: str = "") -> dict:
    return variant(arg, {"2to4": _2to4, "structured": _structured, "quantized": _quantized})

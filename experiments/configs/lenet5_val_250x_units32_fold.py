# python -m experiments.progressive --config experiments/configs/lenet5_val_250x_units32_fold.py --workdir experiments/results/lenet5_val_250x_units32_fold
"""LeNet-5 at 250x, recipe variant: ``units64_fold`` with fc1's weights on 32 hidden units.

In the seed sweep of ``lenet5_val_250x_sweep`` (seeds 1-3), ``units64_fold`` (fc1's
750 weights on 64 units, median fan-in about 12) had the highest mean validation
accuracy of the three recipes, ahead of the chain (166 units, fan-in 3) and ``fc1``.
This variant goes further in that direction: 32 units (fan-in about 23; fc2's 250
weights then sit on 250 of the 320 places that read live units). Both stages run in
this config, so each seed reruns the concentration stage too (``units64_fold``'s
seeds share its committed first stage): ``lenet5_val_250x_units64_fc2.py`` with 32
units (from the chain's 200x model, keep 32 whole fc1 units, masks not carried, fc2
left dense, 6 ADMM iterations + 4 retraining epochs), then its 250x stage (conv1 170,
conv2 550, fc1 750, fc2 250; masks carried) with the idle weights folded into biases
first. Validation accuracy only.
"""

import os
import runpy

_FC2 = runpy.run_path(
    os.path.join(os.path.dirname(os.path.abspath(__file__)), "lenet5_val_250x_units64_fc2.py")
)

UNITS = 32


def get_config() -> dict:
    spec = _FC2["get_config"](UNITS)
    spec["stages"][1]["fold_idle"] = True
    return spec

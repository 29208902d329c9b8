# python -m experiments.progressive --config experiments/configs/lenet5_val_250x_filters24_fold.py --workdir experiments/results/lenet5_val_250x_filters24_fold
"""LeNet-5 at 250x, recipe variant: ``units64_fold`` with conv2's weights also concentrated, on 24 filters.

Concentrating fc1's 750 weights on 64 whole units (``lenet5_val_250x_units64_fold.py``)
led the seed sweep on validation. conv2 has the same spread: at 250x its 550
weights sit on 48 of its 50 filters, about 11 of 500 places each. Here the first
stage (from the chain's 200x model, masks not carried, 6 ADMM iterations + 4
retraining epochs) keeps 24 whole conv2 filters as well as 64 whole fc1 units (fc2
dense), then the 250x stage (conv1 170, conv2 550, fc1 750, fc2 250; masks carried)
runs inside them, with the idle weights folded into biases first. Validation
accuracy only, as the other variants.
"""

import os
import runpy

from experiments.train import keep_whole

_FC2 = runpy.run_path(
    os.path.join(os.path.dirname(os.path.abspath(__file__)), "lenet5_val_250x_units64_fc2.py")
)

FILTERS = 24  # of conv2's 50
UNITS = 64  # of fc1's 500


def get_config(filters: int = FILTERS, units: int = UNITS) -> dict:
    spec = _FC2["get_config"](units)
    first, last = spec["stages"]
    first["sparsity"] = {**first["sparsity"], "conv2/kernel": keep_whole("filters", filters, 50)}
    last["fold_idle"] = True
    return spec

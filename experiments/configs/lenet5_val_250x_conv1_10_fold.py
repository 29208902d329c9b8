# python -m experiments.progressive --config experiments/configs/lenet5_val_250x_conv1_10_fold.py --workdir experiments/results/lenet5_val_250x_conv1_10_fold
"""LeNet-5 at 250x, recipe variant: ``filters24_fold`` with conv1 also concentrated, on 10 filters.

At 250x conv1's 170 weights spread over its 20 filters (about 8 of 25 taps each).
Here the first stage of ``lenet5_val_250x_filters24_fold.py`` (24 conv2 filters, 64
fc1 units, fc2 dense) also keeps 10 whole conv1 filters, so the 250x stage gives
each about 17 taps, and conv2's kept filters read 10 input channels instead of 20.
Validation accuracy only, as the other variants.
"""

import os
import runpy

from experiments.train import keep_whole

_F24 = runpy.run_path(
    os.path.join(os.path.dirname(os.path.abspath(__file__)), "lenet5_val_250x_filters24_fold.py")
)

CONV1_FILTERS = 10  # of conv1's 20


def get_config(filters: int = _F24["FILTERS"], conv1_filters: int = CONV1_FILTERS) -> dict:
    spec = _F24["get_config"](filters=filters)
    first = spec["stages"][0]
    first["sparsity"] = {
        **first["sparsity"],
        "conv1/kernel": keep_whole("filters", conv1_filters, 20),
    }
    return spec

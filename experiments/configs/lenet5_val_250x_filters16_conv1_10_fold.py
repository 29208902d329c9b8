# python -m experiments.progressive --config experiments/configs/lenet5_val_250x_filters16_conv1_10_fold.py --workdir experiments/results/lenet5_val_250x_filters16_conv1_10_fold
"""LeNet-5 at 250x, recipe variant: both concentrations that raised validation, together.

``lenet5_val_250x_filters16_fold.py`` (conv2 on 16 whole filters) and
``lenet5_val_250x_conv1_10_fold.py`` (conv1 on 10 whole filters, conv2 on 24) tied
on validation mean in the seed sweep. This keeps 16 conv2 filters and 10 conv1
filters in the first stage (64 fc1 units, fc2 dense), then the same 250x stage
inside them with idle weights folded. Validation accuracy only, as the other
variants.
"""

import os
import runpy

_CONV1_10 = runpy.run_path(
    os.path.join(os.path.dirname(os.path.abspath(__file__)), "lenet5_val_250x_conv1_10_fold.py")
)

FILTERS = 16  # of conv2's 50
CONV1_FILTERS = 10  # of conv1's 20


def get_config() -> dict:
    return _CONV1_10["get_config"](filters=FILTERS, conv1_filters=CONV1_FILTERS)

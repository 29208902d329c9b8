# python -m experiments.progressive --config experiments/configs/lenet5_val_250x_filters12_fold.py --workdir experiments/results/lenet5_val_250x_filters12_fold
"""LeNet-5 at 250x, recipe variant: ``filters24_fold`` with conv2 on 12 whole filters instead of 24.

The same two stages as ``lenet5_val_250x_filters24_fold.py`` (64 fc1 units, fc2 dense
in the first stage, idle weights folded before the 250x stage), conv2's 550
weights concentrated further: about 46 of each kept filter's 500 places. Validation
accuracy only, as the other variants.
"""

import os
import runpy

_F24 = runpy.run_path(
    os.path.join(os.path.dirname(os.path.abspath(__file__)), "lenet5_val_250x_filters24_fold.py")
)

FILTERS = 12


def get_config() -> dict:
    return _F24["get_config"](filters=FILTERS)

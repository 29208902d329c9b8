# python -m experiments.progressive --config experiments/configs/lenet5_progressive250_units64_fold.py --workdir experiments/results/lenet5_progressive250_units64_fold
"""LeNet-5 at 250x on all 60,000 training images with the recipe of
``lenet5_val_250x_units64_fold.py``: the 250x stage of ``units64_fc2`` rerun from
its first stage (64 fc1 units) with the idle weights folded into biases first.

Starts from the first stage of ``lenet5_progressive250_units64_fc2.py`` (trained on
all images, from the full-data chain's 200x model). On the held-out split the recipe
tied the best earlier ones (98.98%), with no idle weights and a slightly lower
training loss over the last 3 retraining epochs (0.0292 against 0.0303-0.0324); its
test figure on 55,000 images (99.19%) was seen before this run was started.
"""

import os
import runpy

from experiments.progressive import rerun_last_stage

_HERE = os.path.dirname(os.path.abspath(__file__))
_VARIANT = runpy.run_path(os.path.join(_HERE, "lenet5_val_250x_units64_fold.py"))
_FULL = runpy.run_path(os.path.join(_HERE, "lenet5_progressive250_units64_fc2.py"))
FROM_64_UNITS = os.path.join(
    _HERE, "..", "results", "lenet5_progressive250_units64_fc2", "stage_1", "pruned"
)


def get_config() -> dict:
    stage = _VARIANT["get_config"]()["stages"][0]
    return rerun_last_stage({**_FULL["get_config"](), "stages": [stage]}, FROM_64_UNITS)

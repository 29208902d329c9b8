# python -m experiments.progressive --config experiments/configs/lenet5_progressive250_fc1.py --workdir experiments/results/lenet5_progressive250_fc1
"""LeNet-5 at 250x with the layer split chosen on validation: stage 2 of
``lenet5_progressive250.py`` rerun with the same 1,720 weights split as conv1 120,
conv2 500, fc1 900, fc2 200 (instead of 170 / 550 / 750 / 250).

Same start (that chain's 200x model, trained on all 60,000 images), same schedule.
Why this change: of four 250x recipes compared on the held-out validation split of
``lenet5_val.py`` (``lenet5_val_250x_*.py``), it scored best.
"""

import os
import runpy

from experiments.progressive import rerun_last_stage

_HERE = os.path.dirname(os.path.abspath(__file__))
_CHAIN = runpy.run_path(os.path.join(_HERE, "lenet5_progressive250.py"))
_VARIANT = runpy.run_path(os.path.join(_HERE, "lenet5_val_250x_fc1.py"))
FROM_200X = os.path.join(_HERE, "..", "results", "lenet5_progressive250", "stage_1", "pruned")


def get_config() -> dict:
    split = _VARIANT["get_config"]()["stages"][0]["sparsity"]
    return rerun_last_stage(_CHAIN["get_config"](), FROM_200X, sparsity=split)

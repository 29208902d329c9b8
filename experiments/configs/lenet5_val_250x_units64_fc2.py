# python -m experiments.progressive --config experiments/configs/lenet5_val_250x_units64_fc2.py --workdir experiments/results/lenet5_val_250x_units64_fc2
"""LeNet-5 at 250x, recipe variant: ``lenet5_val_250x_units64.py`` with fc2 left dense in its first stage.

In ``units64`` fc2 was cut to 250 weights in the first stage, before fc1 lost its
other units, and the carried mask kept 97 of them on fc1 units that no longer had
inputs (constant outputs: those weights only add a bias). Here fc2 stays dense
through the first stage, so the second stage's projection picks its 250 weights
among the 64 live units. Validation accuracy only, as the other variants.
"""

import os
import runpy

_UNITS = runpy.run_path(
    os.path.join(os.path.dirname(os.path.abspath(__file__)), "lenet5_val_250x_units64.py")
)


def get_config(units: int = _UNITS["UNITS"]) -> dict:
    spec = _UNITS["get_config"](units)
    first = spec["stages"][0]
    first["sparsity"] = {k: v for k, v in first["sparsity"].items() if k != "fc2/kernel"}
    return spec

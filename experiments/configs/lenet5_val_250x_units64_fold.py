# python -m experiments.progressive --config experiments/configs/lenet5_val_250x_units64_fold.py --workdir experiments/results/lenet5_val_250x_units64_fold
"""LeNet-5 at 250x, recipe variant: ``lenet5_val_250x_units64_fc2.py`` with the idle weights folded before the 250x stage.

In ``units64_fc2`` 91 of fc2's 250 weights ended on fc1 units with no inputs: the
dense fc2 of the first stage kept large weights on those constant units. Here the
second stage starts from the first stage's model with every idle weight folded into
a bias (``fold_idle``: the same function, see ``experiments.shrink.fold_idle_lenet5``),
and its carried masks keep them at zero, so all 1,720 weights sit on live units.
It reruns that config's second stage only, from its committed first stage (64 units).
Validation accuracy only, as the other variants.
"""

import os
import runpy

from experiments.progressive import rerun_last_stage

_HERE = os.path.dirname(os.path.abspath(__file__))
_FC2 = runpy.run_path(os.path.join(_HERE, "lenet5_val_250x_units64_fc2.py"))
FROM_64_UNITS = os.path.join(
    _HERE, "..", "results", "lenet5_val_250x_units64_fc2", "stage_1", "pruned"
)


def get_config() -> dict:
    spec = rerun_last_stage(_FC2["get_config"](), FROM_64_UNITS, fold_idle=True)
    spec["stages"][0]["carry_masks"] = True  # a first stage does not carry by itself
    return spec

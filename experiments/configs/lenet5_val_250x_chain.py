# python -m experiments.progressive --config experiments/configs/lenet5_val_250x_chain.py --workdir experiments/results/lenet5_val_250x_chain
"""LeNet-5 at 250x: the 250x stage of ``lenet5_val.py`` alone, from that chain's 200x model.

The same recipe as ``lenet5_val/stage_4`` (conv1 170, conv2 550, fc1 750, fc2 250;
10 ADMM iterations + 30 retraining epochs), as a one-stage config, so that it can be
rerun with other seeds (``--seed``, ``experiments.sweep``) next to the
``lenet5_val_250x_*`` variants.
"""

import os
import runpy

from experiments.progressive import rerun_last_stage

_HERE = os.path.dirname(os.path.abspath(__file__))
_VAL = runpy.run_path(os.path.join(_HERE, "lenet5_val.py"))


def get_config() -> dict:
    return rerun_last_stage(_VAL["get_config"](), _VAL["FROM_200X"])

# python -m experiments.progressive --config experiments/configs/lenet5_val_250x_units64.py --workdir experiments/results/lenet5_val_250x_units64
"""LeNet-5 at 250x, recipe variant: fc1's weights concentrated on 64 hidden units first.

At 250x the chain's fc1 spreads its 750 weights over 166 of its 500 hidden units
(median fan-in 3). This variant tests whether fewer, wider units use the budget
better: from the chain's 200x model, a first stage keeps 64 whole fc1 units
(``Structured``, masks not carried, the other layers already at their 250x
budgets), then the chain's own 250x stage (masks carried) brings fc1 down to 750
weights inside those 64 units. Same 5,000 held-out validation images, same split
(conv1 170, conv2 550, fc1 750, fc2 250); compared with the other variants on
validation accuracy only.
"""

import os
import runpy

from experiments.train import keep_whole

_CHAIN = runpy.run_path(os.path.join(os.path.dirname(os.path.abspath(__file__)), "lenet5_val.py"))

UNITS = 64


def get_config(units: int = UNITS) -> dict:
    chain = _CHAIN["get_config"]()
    last = chain["stages"][-1]
    concentrate = {
        **last,
        "sparsity": {**last["sparsity"], "fc1/kernel": keep_whole("filters", units, 500)},
        "carry_masks": False,
        "admm_iterations": 6,
        "retrain_epochs": 4,
    }
    return {
        "base": {**chain["base"], "pretrained": _CHAIN["FROM_200X"]},
        "stages": [concentrate, {**last, "carry_masks": True}],
    }

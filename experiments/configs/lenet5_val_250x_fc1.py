# python -m experiments.progressive --config experiments/configs/lenet5_val_250x_fc1.py --workdir experiments/results/lenet5_val_250x_fc1
"""LeNet-5 at 250x, recipe variant: a split giving fc1 more (conv1 120, conv2 500, fc1 900, fc2 200: the same 1,720 weights).

Stage 4 of ``lenet5_val.py`` (same start: that chain's 200x model, same 5,000
held-out validation images, same ADMM schedule) with one change. Compared with the
other variants on validation accuracy only.
"""

import os
import runpy

from experiments.progressive import rerun_last_stage

_CHAIN = runpy.run_path(os.path.join(os.path.dirname(os.path.abspath(__file__)), "lenet5_val.py"))


def get_config() -> dict:
    return rerun_last_stage(
        _CHAIN["get_config"](),
        _CHAIN["FROM_200X"],
        sparsity={
            "conv1/kernel": 0.76,
            "conv2/kernel": 0.98,
            "fc1/kernel": 0.99775,
            "fc2/kernel": 0.96,
        },
    )

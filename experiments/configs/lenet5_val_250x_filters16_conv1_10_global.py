# python -m experiments.progressive --config experiments/configs/lenet5_val_250x_filters16_conv1_10_global.py --workdir experiments/results/lenet5_val_250x_filters16_conv1_10_global
"""LeNet-5 at 250x, recipe variant: ``filters16_conv1_10_fold`` with the 1,720 weights allocated globally.

``lenet5_val_250x_filters16_conv1_10_fold.py`` led the seed sweep on validation;
its 250x stage splits the budget per layer as the chain does (conv1 170, conv2 550,
fc1 750, fc2 250). Inside the first stage's 10 conv1 filters that leaves conv1 at
170 of 250 places while conv2 keeps 550 of 4,000. Here each Z-step and the hard
prune split the same 1,720-weight total across the layers by magnitude
(``allocation="global"``), which on the chain's own 250x stage raised validation
accuracy by 0.04 points (``lenet5_val_250x_global.py``, one run). Validation
accuracy only, as the other variants.
"""

import os
import runpy

_BASE = runpy.run_path(
    os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "lenet5_val_250x_filters16_conv1_10_fold.py"
    )
)


def get_config() -> dict:
    spec = _BASE["get_config"]()
    spec["stages"][-1]["allocation"] = "global"
    return spec

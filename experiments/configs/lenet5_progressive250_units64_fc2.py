# python -m experiments.progressive --config experiments/configs/lenet5_progressive250_units64_fc2.py --workdir experiments/results/lenet5_progressive250_units64_fc2
"""LeNet-5 at 250x on all 60,000 training images with the recipe of
``lenet5_val_250x_units64_fc2.py``: fc1 first cut to 64 whole units (fc2 left
dense), then the 250x split (conv1 170, conv2 550, fc1 750, fc2 250) inside them.

Same start as ``lenet5_progressive250_fc1.py`` (stage 1 of ``lenet5_progressive250.py``,
200x, trained on all images); the stages are those of the validation variant, which
scored best of the 250x recipes on the held-out split of ``lenet5_val.py``.
"""

import os
import runpy

_HERE = os.path.dirname(os.path.abspath(__file__))
_CHAIN = runpy.run_path(os.path.join(_HERE, "lenet5_progressive250.py"))
_VARIANT = runpy.run_path(os.path.join(_HERE, "lenet5_val_250x_units64_fc2.py"))
FROM_200X = os.path.join(_HERE, "..", "results", "lenet5_progressive250", "stage_1", "pruned")


def get_config() -> dict:
    return {
        "base": {**_CHAIN["get_config"]()["base"], "pretrained": FROM_200X},
        "stages": _VARIANT["get_config"]()["stages"],
    }

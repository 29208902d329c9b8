# python -m experiments.progressive --config experiments/configs/lenet5_val.py --workdir experiments/results/lenet5_val
"""LeNet-5 to 250x with 5,000 training images held out from every stage.

The chain of ``lenet5.py`` (pretraining, 71.2x) and ``lenet5_progressive250.py``
(143.5x, 200x, 250.3x) again, every stage (the dense pretraining included) trained on
the other 55,000 images, so the validation accuracy the summaries report is of
images no stage has seen. The recipe choices at 250x are made on it: this chain's
stage 4 is the recipe of ``lenet5_progressive250.py``, and the configs
``lenet5_val_250x_*.py`` rerun stage 4 from this chain's stage 3 with one change.
"""

import os
import runpy

_HERE = os.path.dirname(os.path.abspath(__file__))
_SINGLE = runpy.run_path(os.path.join(_HERE, "lenet5.py"))["get_config"]()
_PROGRESSIVE = runpy.run_path(os.path.join(_HERE, "lenet5_progressive.py"))["get_config"]()
_TO_250X = runpy.run_path(os.path.join(_HERE, "lenet5_progressive250.py"))["get_config"]()

VALIDATION_SIZE = 5000
# The 250x stage of every variant starts from this chain's stage 3 (200x).
FROM_200X = os.path.join(_HERE, "..", "results", "lenet5_val", "stage_3", "pruned")


def get_config() -> dict:
    base = {k: v for k, v in _TO_250X["base"].items() if k != "pretrained"}
    base["validation_size"] = VALIDATION_SIZE
    first = {k: _SINGLE[k] for k in _SINGLE if k not in base or k == "sparsity"}
    # Stage 1 trains from scratch: its ADMM/retrain learning rates are lenet5.py's too.
    first.update(admm_schedule=_SINGLE["admm_schedule"], carry_masks=False)
    return {
        "base": base,
        "stages": [first, _PROGRESSIVE["stages"][0], *_TO_250X["stages"]],
    }

# python -m experiments.progressive --config experiments/configs/lenet5_val_250x_selfdistill.py --workdir experiments/results/lenet5_val_250x_selfdistill
"""LeNet-5 at 250x, recipe variant: ``filters16_conv1_10_fold`` with its 250x stage distilled from its first stage.

``lenet5_val_250x_filters16_conv1_10_fold.py`` led the seed sweep on validation
(mean 99.17%) but its test mean (99.18%) sat below its first stage's model (7x,
99.39% test, 99.16% validation for seed 1): the 250x network loses accuracy to
the prune that training on labels alone does not recover. Here the same two stages
run, and every W-step and retraining step of the 250x stage minimises
0.5 CE + 0.5 T^2 KL at T = 4 against that stage's own starting model (the first
stage's ``pruned/``, trained on the same 55,000 images;
``experiments.progressive.PREVIOUS_STAGE``). The earlier ``lenet5_val_250x_distill.py``
distilled from the chain's dense model (99.11% test), weaker than the student.
Validation accuracy only, as the other variants.
"""

import os
import runpy

from experiments.progressive import PREVIOUS_STAGE

_BASE = runpy.run_path(
    os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "lenet5_val_250x_filters16_conv1_10_fold.py"
    )
)

DISTILL_WEIGHT = 0.5
DISTILL_TEMPERATURE = 4.0


def get_config() -> dict:
    spec = _BASE["get_config"]()
    spec["stages"][-1].update(
        teacher=PREVIOUS_STAGE,
        distill_weight=DISTILL_WEIGHT,
        distill_temperature=DISTILL_TEMPERATURE,
    )
    return spec

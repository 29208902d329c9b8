# python -m experiments.progressive --config experiments/configs/lenet5_val_250x_distill.py --workdir experiments/results/lenet5_val_250x_distill
"""LeNet-5 at 250x, recipe variant: distillation from the chain's dense model.

Stage 4 of ``lenet5_val.py`` (same start: that chain's 200x model, same 5,000
held-out validation images, same budget split and ADMM schedule), with every W-step
and retraining step distilled from the chain's dense model (stage 1's ``dense/``,
trained on the same 55,000 images): loss 0.5 CE + 0.5 T^2 KL at T = 4. Compared with
the other variants on validation accuracy only.
"""

import os
import runpy

from experiments.progressive import rerun_last_stage

_HERE = os.path.dirname(os.path.abspath(__file__))
_CHAIN = runpy.run_path(os.path.join(_HERE, "lenet5_val.py"))
TEACHER = os.path.join(_HERE, "..", "results", "lenet5_val", "stage_1")


def get_config() -> dict:
    return rerun_last_stage(
        _CHAIN["get_config"](), _CHAIN["FROM_200X"], teacher=TEACHER, distill_weight=0.5
    )

# python -m experiments.progressive --config experiments/configs/lenet5_val_250x_long_retrain.py --workdir experiments/results/lenet5_val_250x_long_retrain
"""LeNet-5 at 250x, recipe variant: 90 retraining epochs instead of 30.

Stage 4 of ``lenet5_val.py`` (same start: that chain's 200x model, same 5,000
held-out validation images, same budget split and ADMM schedule) with three times the
masked retraining (the cosine learning-rate decay stretched to match). The question:
is the 250x model short of training (its training loss stays near 0.03) or of
capacity? Compared with the other variants on validation accuracy only.
"""

import os
import runpy

from experiments.progressive import rerun_last_stage

_CHAIN = runpy.run_path(os.path.join(os.path.dirname(os.path.abspath(__file__)), "lenet5_val.py"))


def get_config() -> dict:
    return rerun_last_stage(_CHAIN["get_config"](), _CHAIN["FROM_200X"], retrain_epochs=90)

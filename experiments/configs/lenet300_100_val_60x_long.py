# python -m experiments.progressive --config experiments/configs/lenet300_100_val_60x_long.py --workdir experiments/results/lenet300_100_val_60x_long
"""LeNet-300-100 at 60x, recipe variant: 20 one-epoch ADMM iterations instead of 10 (rho grows x1.3 to 0.22 instead of 0.016).

Stage 3 of ``lenet300_100_val.py`` (same start: that chain's 40x model, same 5,000
held-out validation images, same budget split) with one change of its ADMM schedule.
Compared with the other variants on validation accuracy only.
"""

import os
import runpy

from experiments.progressive import rerun_last_stage

_CHAIN = runpy.run_path(
    os.path.join(os.path.dirname(os.path.abspath(__file__)), "lenet300_100_val.py")
)


def get_config() -> dict:
    return rerun_last_stage(_CHAIN["get_config"](), _CHAIN["FROM_40X"], admm_iterations=20)

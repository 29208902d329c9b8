# python -m experiments.progressive --config experiments/configs/lenet300_100_val_60x_slower_rho.py --workdir experiments/results/lenet300_100_val_60x_slower_rho
"""LeNet-300-100 at 60x, recipe variant: 60 one-epoch ADMM iterations with rho growing x1.1 (to 0.4).

Stage 3 of ``lenet300_100_val.py`` (same start: that chain's 40x model, same 5,000
held-out validation images, same budget split) with its ADMM schedule changed.
Compared with the other variants on validation accuracy only.
"""

import os
import runpy

from experiments.progressive import rerun_last_stage

_CHAIN = runpy.run_path(
    os.path.join(os.path.dirname(os.path.abspath(__file__)), "lenet300_100_val.py")
)


def get_config() -> dict:
    return rerun_last_stage(
        _CHAIN["get_config"](), _CHAIN["FROM_40X"], admm_iterations=60, rho_growth=1.1
    )

# python -m experiments.progressive --config experiments/configs/lenet300_100_progressive60.py --workdir experiments/results/lenet300_100_progressive60
"""LeNet-300-100 from 40x to 60x with the ADMM schedule chosen on validation.

Stage 2 of ``lenet300_100_progressive.py`` (trained on all 60,000 images, from its
40x model at 98.43%) rerun with the schedule that won on the held-out validation
split among eight 60x recipes (``lenet300_100_val_60x_*.py``, the chain of
``lenet300_100_val.py``): 120 one-epoch ADMM iterations with rho growing x1.05 (to 0.5)
instead of 10 with x1.3. Choosing on the validation chain and then training on all
the data is the usual protocol; the test set chose nothing.
"""

import os
import runpy

from experiments.progressive import rerun_last_stage

_HERE = os.path.dirname(os.path.abspath(__file__))
_CHAIN = runpy.run_path(os.path.join(_HERE, "lenet300_100_progressive.py"))
FROM_40X = os.path.join(_HERE, "..", "results", "lenet300_100_progressive", "stage_1", "pruned")


def get_config() -> dict:
    return rerun_last_stage(_CHAIN["get_config"](), FROM_40X, admm_iterations=120, rho_growth=1.05)

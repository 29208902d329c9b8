# python -m experiments.progressive --config experiments/configs/beyond/lenet300_100_val.py --workdir experiments/results/lenet300_100_val
# python -m experiments.progressive --config experiments/configs/beyond/lenet300_100_val.py:60x_distill --workdir experiments/results/lenet300_100_val_60x_distill
# python -m experiments.progressive --config experiments/configs/beyond/lenet300_100_val.py:60x_long --workdir experiments/results/lenet300_100_val_60x_long
# python -m experiments.progressive --config experiments/configs/beyond/lenet300_100_val.py:60x_long_retrain --workdir experiments/results/lenet300_100_val_60x_long_retrain
# python -m experiments.progressive --config experiments/configs/beyond/lenet300_100_val.py:60x_rho --workdir experiments/results/lenet300_100_val_60x_rho
# python -m experiments.progressive --config experiments/configs/beyond/lenet300_100_val.py:60x_slow_rho --workdir experiments/results/lenet300_100_val_60x_slow_rho
# python -m experiments.progressive --config experiments/configs/beyond/lenet300_100_val.py:60x_slower_rho --workdir experiments/results/lenet300_100_val_60x_slower_rho
# python -m experiments.progressive --config experiments/configs/beyond/lenet300_100_val.py:60x_slowest_rho --workdir experiments/results/lenet300_100_val_60x_slowest_rho
"""LeNet-300-100 to 60x with 5,000 training images held out from the start.

Every stage, the dense pretraining included, trains on the other 55,000 images, so
the validation accuracy each summary reports is of images no stage has seen. The
recipe choices at 60x are made on it, never on the test set: this chain's stage 3 is
recipe A (that of ``lenet300_100_progressive.py``). Stage 1 is
``paper/lenet300_100.py`` (pretraining, the paper's 22.9x budget); stages 2 and 3 are
``lenet300_100_progressive.py``'s 40x and 60x.

Variants ``60x_*`` rerun stage 3 alone from this chain's stage 2 (40x: same start,
same 5,000 held-out images, same budget split) with one change of its recipe,
compared on validation accuracy only:

* ``60x_distill``: every W-step and retraining step distilled from the chain's dense
  model (stage 1's ``dense/``, trained on the same 55,000 images): loss
  0.5 CE + 0.5 T^2 KL at T = 4;
* ``60x_long``: 20 one-epoch ADMM iterations instead of 10 (rho grows x1.3 to 0.22
  instead of 0.016);
* ``60x_long_retrain``: 20 ADMM iterations and 40 retraining epochs (instead of 10
  and 15);
* ``60x_rho``: rho growing x1.6 per iteration instead of x1.3 (to 0.10 after 10);
* ``60x_slow_rho``, ``60x_slower_rho``, ``60x_slowest_rho``: 30, 60, 120 one-epoch
  ADMM iterations with rho growing x1.2, x1.1, x1.05 (to 0.3, 0.4, 0.5).
"""

from functools import partial

from experiments.configs import recipe, rerun_last_stage, variant
from experiments.configs.beyond import lenet300_100_progressive
from experiments.configs.paper import lenet300_100

VALIDATION_SIZE = 5000
CHAIN = "beyond/lenet300_100_val"

# The changes of each 60x variant to stage 3.
CHANGES_60X = {
    "60x_distill": {"teacher": recipe(CHAIN, part="stage_1"), "distill_weight": 0.5},
    "60x_long": {"admm_iterations": 20},
    "60x_long_retrain": {"admm_iterations": 20, "retrain_epochs": 40},
    "60x_rho": {"rho_growth": 1.6},
    "60x_slow_rho": {"admm_iterations": 30, "rho_growth": 1.2},
    "60x_slower_rho": {"admm_iterations": 60, "rho_growth": 1.1},
    "60x_slowest_rho": {"admm_iterations": 120, "rho_growth": 1.05},
}


def base() -> dict:
    later = {"admm_iterations": 10, "admm_epochs": 1, "retrain_epochs": 15}
    return {
        "base": {**lenet300_100_progressive.schedule(), "validation_size": VALIDATION_SIZE},
        "stages": [
            {
                "pretrain_epochs": 30,
                "pretrain_lr": 1e-3,
                "sparsity": dict(lenet300_100.SPARSITY),
                "admm_iterations": 15,
                "admm_epochs": 2,
                "retrain_epochs": 30,
            },
            {"sparsity": dict(lenet300_100_progressive.SPARSITY_40X), **later},
            {"sparsity": dict(lenet300_100_progressive.SPARSITY_60X), **later},
        ],
    }


def _stage_3(changes: dict) -> dict:
    return rerun_last_stage(base(), recipe(CHAIN, part="stage_2/pruned"), **changes)


def get_config(arg: str = "") -> dict:
    variants = {name: partial(_stage_3, changes) for name, changes in CHANGES_60X.items()}
    return variant(arg, {"": base, **variants})

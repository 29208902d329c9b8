# python -m experiments.progressive --config experiments/configs/beyond/lenet5_val_250x.py:chain --workdir experiments/results/lenet5_val_250x_chain
# python -m experiments.progressive --config experiments/configs/beyond/lenet5_val_250x.py:fc1 --workdir experiments/results/lenet5_val_250x_fc1
# python -m experiments.progressive --config experiments/configs/beyond/lenet5_val_250x.py:global --workdir experiments/results/lenet5_val_250x_global
# python -m experiments.progressive --config experiments/configs/beyond/lenet5_val_250x.py:long_retrain --workdir experiments/results/lenet5_val_250x_long_retrain
# python -m experiments.progressive --config experiments/configs/beyond/lenet5_val_250x.py:shift0 --workdir experiments/results/lenet5_val_250x_shift0
# python -m experiments.progressive --config experiments/configs/beyond/lenet5_val_250x.py:distill --workdir experiments/results/lenet5_val_250x_distill
# python -m experiments.progressive --config experiments/configs/beyond/lenet5_val_250x.py:units64 --workdir experiments/results/lenet5_val_250x_units64
# python -m experiments.progressive --config experiments/configs/beyond/lenet5_val_250x.py:units64_fc2 --workdir experiments/results/lenet5_val_250x_units64_fc2
# python -m experiments.progressive --config experiments/configs/beyond/lenet5_val_250x.py:units64_fold --workdir experiments/results/lenet5_val_250x_units64_fold
# python -m experiments.progressive --config experiments/configs/beyond/lenet5_val_250x.py:units32_fold --workdir experiments/results/lenet5_val_250x_units32_fold
# python -m experiments.progressive --config experiments/configs/beyond/lenet5_val_250x.py:filters24_fold --workdir experiments/results/lenet5_val_250x_filters24_fold
# python -m experiments.progressive --config experiments/configs/beyond/lenet5_val_250x.py:filters16_fold --workdir experiments/results/lenet5_val_250x_filters16_fold
# python -m experiments.progressive --config experiments/configs/beyond/lenet5_val_250x.py:filters12_fold --workdir experiments/results/lenet5_val_250x_filters12_fold
# python -m experiments.progressive --config experiments/configs/beyond/lenet5_val_250x.py:conv1_10_fold --workdir experiments/results/lenet5_val_250x_conv1_10_fold
# python -m experiments.progressive --config experiments/configs/beyond/lenet5_val_250x.py:filters16_conv1_10_fold --workdir experiments/results/lenet5_val_250x_filters16_conv1_10_fold
# python -m experiments.progressive --config experiments/configs/beyond/lenet5_val_250x.py:filters16_conv1_10_global --workdir experiments/results/lenet5_val_250x_filters16_conv1_10_global
# python -m experiments.progressive --config experiments/configs/beyond/lenet5_val_250x.py:selfdistill --workdir experiments/results/lenet5_val_250x_selfdistill
"""LeNet-5 at 250x: recipe variants of ``lenet5_val.py``'s 250x stage, chosen on validation.

Each variant starts from that chain's 200x model (stage 3), with the same 5,000
held-out validation images, and is compared with the others on validation accuracy
only (``experiments.sweep`` reruns them with other seeds). One change each:

* ``chain``: none, the chain's own stage 4 as a one-stage config (conv1 170, conv2
  550, fc1 750, fc2 250; 10 ADMM iterations + 30 retraining epochs);
* ``fc1``: a split giving fc1 more, conv1 120, conv2 500, fc1 900, fc2 200;
* ``global``: each Z-step and the hard prune split the same 1,720-weight total
  across the layers by magnitude (``allocation="global"``);
* ``long_retrain``: 90 retraining epochs instead of 30 (short of training, or of
  capacity?);
* ``shift0``: no random translations in this stage (the 1,720-weight net underfits);
* ``distill``: every W-step and retraining step distilled from the chain's dense
  model (stage 1's ``dense/``): 0.5 CE + 0.5 T^2 KL at T = 4.

Concentration variants: a first stage keeps whole slices (``Structured``, masks not
carried, 6 ADMM iterations + 4 retraining epochs), then the chain's 250x stage runs
inside them (masks carried):

* ``units64``: 64 whole fc1 units (the chain spreads fc1's 750 weights over 166 of
  its 500 units, median fan-in 3), the other layers already at their 250x budgets;
* ``units64_fc2``: the same with fc2 left dense in the first stage, so the second
  stage picks fc2's 250 weights among the 64 live units;
* ``units64_fold``: ``units64_fc2``'s second stage alone, from its first stage, with
  every idle weight folded into a bias first (``fold_idle``, see
  ``experiments.shrink.fold_idle_lenet5``) so all 1,720 weights sit on live units;
* ``units32_fold``: both stages with 32 fc1 units, idle weights folded;
* ``filters24_fold``, ``filters16_fold``, ``filters12_fold``: 64 fc1 units and conv2
  on 24, 16, 12 whole filters of its 50, idle weights folded;
* ``conv1_10_fold``: ``filters24_fold`` with conv1 on 10 whole filters of its 20;
* ``filters16_conv1_10_fold``: conv2 on 16 filters and conv1 on 10 (led the seed
  sweep on validation);
* ``filters16_conv1_10_global``: that, with the 250x stage allocated globally;
* ``selfdistill``: that, with the 250x stage distilled (0.5 CE + 0.5 T^2 KL, T = 4)
  from its own starting model (``experiments.configs.PREVIOUS_STAGE``).
"""

from functools import partial

from experiments.configs import PREVIOUS_STAGE, recipe, rerun_last_stage, variant
from experiments.configs.beyond import lenet5_val
from experiments.train import keep_whole

CHAIN = "beyond/lenet5_val"
FROM_200X = recipe(CHAIN, part="stage_3/pruned")
# conv1 120, conv2 500, fc1 900, fc2 200: the same 1,720 weights, more of them in fc1.
SPLIT_FC1 = {"conv1/kernel": 0.76, "conv2/kernel": 0.98, "fc1/kernel": 0.99775, "fc2/kernel": 0.96}

# The changes of each one-change variant to the chain's 250x stage.
CHANGES = {
    "chain": {},
    "fc1": {"sparsity": SPLIT_FC1},
    "global": {"allocation": "global"},
    "long_retrain": {"retrain_epochs": 90},
    "shift0": {"augment_shift": 0},
    "distill": {"teacher": recipe(CHAIN, part="stage_1"), "distill_weight": 0.5},
}


def _one_change(changes: dict) -> dict:
    return rerun_last_stage(lenet5_val.get_config(), FROM_200X, **changes)


def concentrated(
    units: int = 64,
    conv2_filters: int | None = None,
    conv1_filters: int | None = None,
    fc2_dense: bool = True,
    fold: bool = True,
) -> dict:
    """Two stages from the chain's 200x model: keep ``units`` whole fc1 units (and whole
    conv2 / conv1 filters when given; fc2 dense or at its 250x budget), then the 250x
    stage inside them, idle weights folded first when ``fold``."""
    chain = lenet5_val.get_config()
    last = chain["stages"][-1]
    sparsity = {**last["sparsity"], "fc1/kernel": keep_whole("filters", units, 500)}
    if fc2_dense:
        del sparsity["fc2/kernel"]
    if conv2_filters is not None:
        sparsity["conv2/kernel"] = keep_whole("filters", conv2_filters, 50)
    if conv1_filters is not None:
        sparsity["conv1/kernel"] = keep_whole("filters", conv1_filters, 20)
    first = {**last, "sparsity": sparsity, "carry_masks": False}
    first.update(admm_iterations=6, retrain_epochs=4)
    second = {**last, "carry_masks": True, **({"fold_idle": True} if fold else {})}
    return {"base": {**chain["base"], "pretrained": FROM_200X}, "stages": [first, second]}


def _units64_fold() -> dict:
    from_64_units = recipe("beyond/lenet5_val_250x", "units64_fc2", "stage_1/pruned")
    return rerun_last_stage(concentrated(fold=False), from_64_units, fold_idle=True)


def _filters16_conv1_10(**changes) -> dict:
    spec = concentrated(conv2_filters=16, conv1_filters=10)
    spec["stages"][-1].update(changes)
    return spec


def get_config(arg: str = "") -> dict:
    variants = {name: partial(_one_change, changes) for name, changes in CHANGES.items()}
    variants.update(
        units64=partial(concentrated, fc2_dense=False, fold=False),
        units64_fc2=partial(concentrated, fold=False),
        units64_fold=_units64_fold,
        units32_fold=partial(concentrated, units=32),
        filters24_fold=partial(concentrated, conv2_filters=24),
        filters16_fold=partial(concentrated, conv2_filters=16),
        filters12_fold=partial(concentrated, conv2_filters=12),
        conv1_10_fold=partial(concentrated, conv2_filters=24, conv1_filters=10),
        filters16_conv1_10_fold=_filters16_conv1_10,
        filters16_conv1_10_global=partial(_filters16_conv1_10, allocation="global"),
        selfdistill=partial(
            _filters16_conv1_10,
            teacher=PREVIOUS_STAGE,
            distill_weight=0.5,
            distill_temperature=4.0,
        ),
    )
    return variant(arg, variants)

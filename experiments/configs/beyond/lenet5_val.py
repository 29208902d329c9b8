# python -m experiments.progressive --config experiments/configs/beyond/lenet5_val.py --workdir experiments/results/lenet5_val
"""LeNet-5 to 250x with 5,000 training images held out from every stage.

The chain of ``paper/lenet5.py`` (pretraining, 71.2x) and ``lenet5_progressive250.py``
(143.5x, 200x, 250.3x) again, every stage (the dense pretraining included) trained on
the other 55,000 images, so the validation accuracy the summaries report is of
images no stage has seen. The recipe choices at 250x are made on it: this chain's
stage 4 is the recipe of ``lenet5_progressive250.py``, and ``lenet5_val_250x.py``'s
variants rerun stage 4 from this chain's stage 3 with one change.
"""

from experiments.configs.beyond import lenet5_progressive
from experiments.configs.paper import lenet5

VALIDATION_SIZE = 5000


def get_config() -> dict:
    single = lenet5.get_config()
    base = {**lenet5_progressive.schedule(), "validation_size": VALIDATION_SIZE}
    first = {k: single[k] for k in single if k not in base or k == "sparsity"}
    # Stage 1 trains from scratch: its ADMM/retrain learning rates are lenet5.py's too.
    first.update(admm_schedule=single["admm_schedule"], carry_masks=False)
    to_143x = lenet5_progressive.get_config()["stages"][0]
    return {"base": base, "stages": [first, to_143x, *lenet5_progressive.stages_to_250x()]}

# python -m experiments.mnist --config experiments/configs/lenet5_paper_split.py --workdir experiments/results/lenet5_paper_split
"""LeNet-5 with the paper's own per-layer split, 20% / 8% / 0.9% / 7% (71.2x).

The same schedule as ``lenet5.py``; only the allocation of the 6,050 weights differs.
"""

import runpy
from pathlib import Path


def get_config() -> dict:
    config = runpy.run_path(str(Path(__file__).with_name("lenet5.py")))["get_config"]()
    config["sparsity"] = {
        "conv1/kernel": 0.8,
        "conv2/kernel": 0.92,
        "fc1/kernel": 0.991,
        "fc2/kernel": 0.93,
    }
    return config

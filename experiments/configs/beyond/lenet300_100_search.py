# python -m experiments.search --config experiments/configs/beyond/lenet300_100_search.py --workdir workdirs/lenet300_100_search
"""The paper's budget search on LeNet-300-100: how far past 22.9x does the recipe go?

The per-layer proportions are the paper's (kept 4% / 7% / 12%), scaled together;
the compression is bisected in log space between 22.9x (the paper's) and 120x over
four probes, each a whole run of ``paper/lenet300_100.py``'s recipe. A probe passes
when its validation accuracy (the last 5,000 training images, held out from
pretraining too) is within 0.3 points of the dense model's. The first probe
pretrains; the others reuse its dense model.
"""

from experiments.configs.paper import lenet300_100


def get_config() -> dict:
    run = lenet300_100.get_config()
    base_sparsity = run.pop("sparsity")
    run["validation_size"] = 5000
    return {
        "run": run,
        "base_sparsity": base_sparsity,
        "low": 22.9,
        "high": 120.0,
        "probes": 4,
        "tolerance": 0.003,
    }

"""The pipeline's jitted Z/U update counts fractions as the host does (issue 22, defect 5).

The library side of the rule is tested in ``tests/admmjax/test_counting.py``; this is the
pipeline, which passes its targets to ``jax.jit`` (there a fraction would be traced).
"""

from __future__ import annotations

import jax
import numpy as np

import admmjax
from experiments import train
from experiments.data import mnist as data


def _formula(s: float, n: int) -> int:
    """The documented concrete rule: n - floor(fl64(s n))."""
    return n - int(np.floor(np.float64(s) * np.float64(n)))


def _nnz(x) -> int:
    return int(np.count_nonzero(np.asarray(x)))


def test_pipeline_jitted_update_keeps_the_host_counts(tmp_path, monkeypatch):
    # fc2 of LeNet-300-100 has 30,000 entries: 0.53 keeps 14,100 on the host, 14,101
    # when the fraction is traced in float32 (the pipeline passes targets to jit).
    import tensorflow_datasets as tfds


    monkeypatch.setenv("ADMMJAX_CACHE", str(tmp_path / "cache"))  # never cache mock data
    data.clear_memo()
    sparsity = {"fc1/kernel": 0.26, "fc2/kernel": 0.53, "fc3/kernel": 0.88}
    cfg = train.Config(model="lenet300_100", dataset="fashion_mnist", sparsity=sparsity,
                       batch_size=16, eval_batch_size=32, progress=False)  # fmt: skip
    with tfds.testing.mock_data(num_examples=64, policy=tfds.testing.MockPolicy.USE_CODE):
        pipe = train.Pipeline(cfg, str(tmp_path / "run"), log=lambda _: None)
    data.clear_memo()
    counts = admmjax.target_counts(pipe.init_params, pipe.targets)
    assert counts["fc2"]["kernel"] == _formula(0.53, 30_000) == 14_100
    state = admmjax.init(pipe.init_params, pipe.targets)
    new_state, _ = pipe._admm_update(state, pipe.init_params)
    got = jax.tree.map(_nnz, new_state.z)
    assert got == counts

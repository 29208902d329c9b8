"""Storage accounting of pruned and quantized layers."""

from __future__ import annotations

import numpy as np

import admmjax
from experiments.analysis import storage


def test_quantized_layer_uses_codebook_indices_and_unquantized_raw_floats():
    w = np.zeros(1000, np.float32)
    w[::50] = np.tile([0.5, -0.5, 0.25, -0.25], 5)  # 20 nonzeros on 4 levels
    r = storage.layer_storage("q", w)
    assert (r["nonzero"], r["distinct_values"], r["bits_per_value"]) == (20, 4, 2)
    assert r["codebook_bits"] == 4 * 32
    (enc,) = admmjax.encode_sparse({"w": w}).leaves
    assert r["position_bits"] == 8 * enc.index.nbytes
    assert r["total_bits"] == 20 * 2 + 128 + r["position_bits"]
    assert r["ratio"] == 32 * 1000 / r["total_bits"]
    rng = np.random.default_rng(0)
    raw = np.where(rng.random(1000) < 0.02, rng.standard_normal(1000), 0).astype(np.float32)
    r = storage.layer_storage("raw", raw)
    assert r["bits_per_value"] == 32 and r["codebook_bits"] == 0


def test_total_ratio_over_the_targeted_layers():
    params = {"a": np.ones((10, 10), np.float32), "b": np.ones(10, np.float32)}
    targets = admmjax.sparsity_by_path(params, {"a": 0.5})
    result = storage.storage(params, targets)
    assert [r["path"] for r in result["layers"]] == ["a"]
    assert result["dense_bits"] == 3200
    assert result["ratio"] == 3200 / result["total_bits"]

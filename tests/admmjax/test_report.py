"""Per-leaf sparsity reports."""

from __future__ import annotations

import json
import math

import jax.numpy as jnp
import numpy as np

import admmjax
from admmjax import Keep


def params():
    w1 = np.zeros((10, 20), np.float32)
    w1[0, :5] = 1.0  # 5 of 200 nonzero
    w2 = np.ones((4, 5), np.float32)  # 20 of 20
    w2[0, 0] = 0.0
    return {
        "fc1": {"kernel": jnp.asarray(w1), "bias": jnp.ones(20)},
        "fc2": {"kernel": jnp.asarray(w2), "bias": jnp.zeros(5)},
    }


def test_counts_and_compression_without_targets():
    r = admmjax.sparsity_report(params())
    assert [row.path for row in r.rows] == ["fc1/kernel", "fc2/kernel"]  # ndim >= 2
    assert [(row.weights, row.nonzero) for row in r.rows] == [(200, 5), (20, 19)]
    assert r.rows[0].shape == (10, 20)
    assert r.weights == 220 and r.nonzero == 24
    assert r.compression == 220 / 24
    assert r.rows[0].compression == 40.0
    assert r.kept_percent == 100 * 24 / 220
    assert r.rows[1].kept_percent == 95.0


def test_targets_select_rows():
    p = params()
    t = {"fc1": {"kernel": 0.9, "bias": Keep(3)}, "fc2": {"kernel": None, "bias": None}}
    r = admmjax.sparsity_report(p, t)
    assert [row.path for row in r.rows] == ["fc1/bias", "fc1/kernel"]
    assert r.weights == 220 and r.nonzero == 25
    r = admmjax.sparsity_report(p, include="*bias")
    assert [row.path for row in r.rows] == ["fc1/bias", "fc2/bias"]
    assert r.nonzero == 20


def test_all_zero_is_infinite_compression():
    r = admmjax.sparsity_report({"w": {"kernel": jnp.zeros((3, 3))}})
    assert math.isinf(r.compression) and math.isinf(r.rows[0].compression)
    assert r.kept_percent == 0.0
    empty = admmjax.sparsity_report({"b": jnp.ones(3)})
    assert empty.rows == () and empty.weights == 0 and empty.kept_percent == 0.0


def test_markdown():
    md = str(admmjax.sparsity_report(params()))
    assert md == admmjax.sparsity_report(params()).to_markdown()
    lines = md.splitlines()
    assert lines[0] == "| layer | shape | weights | nonzero | kept % | compression |"
    assert lines[2] == "| fc1/kernel | 10x20 | 200 | 5 | 2.50% | 40.0x |"
    assert lines[3] == "| fc2/kernel | 4x5 | 20 | 19 | 95.00% | 1.1x |"
    assert lines[4] == "| **total** | | 220 | 24 | 10.91% | 9.2x |"
    big = admmjax.sparsity_report({"w": {"kernel": jnp.ones((1000, 1000))}})
    assert "| 1,000,000 | 1,000,000 |" in str(big)


def test_dict_is_json_ready():
    d = admmjax.sparsity_report(params()).to_dict()
    assert d["weights"] == 220 and d["nonzero"] == 24
    assert d["compression"] == 220 / 24
    assert d["layers"][0] == {
        "path": "fc1/kernel",
        "shape": [10, 20],
        "weights": 200,
        "nonzero": 5,
        "kept_percent": 2.5,
        "compression": 40.0,
    }
    assert json.loads(json.dumps(d)) == d


def test_report_after_prune_matches_targets():
    rng = np.random.default_rng(0)
    p = {"a": jnp.asarray(rng.standard_normal((30, 40)), jnp.float32), "b": jnp.ones(4)}
    t = {"a": 0.96, "b": None}
    pruned, _ = admmjax.prune(p, t)
    r = admmjax.sparsity_report(pruned, t)
    assert r.nonzero == admmjax.target_counts(p, t)["a"] == 48
    assert r.compression == 1200 / 48

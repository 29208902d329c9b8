"""A filter-pruned LeNet-5 rebuilt smaller gives the same logits."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

import admmjax
from experiments import models
from experiments.analysis import shrink
from experiments.models.lenet import fold_idle_lenet5, idle_weights


def test_smaller_lenet5_matches_the_structurally_pruned_one():
    _, params, apply_fn = models.functional(models.create_model("lenet5", seed=0))
    rng = np.random.default_rng(0)
    # Nonzero biases everywhere, so removed channels must be folded, not just dropped.
    params = jax.tree.map(lambda a: a + 0.05 * rng.standard_normal(a.shape, np.float32), params)
    targets = admmjax.sparsity_by_path(params, {
        "conv1/kernel": admmjax.Structured(0.5), "conv2/kernel": admmjax.Structured(0.6),
        "fc1/kernel": admmjax.Structured(0.8),
    })  # fmt: skip
    pruned, _ = admmjax.prune(params, targets)
    full = {k: {n: np.asarray(v) for n, v in pruned[k].items()} for k in ("conv1", "conv2",
                                                                         "fc1", "fc2")}  # fmt: skip
    small = shrink.shrink_lenet5(full)
    assert shrink.shapes(small) == {
        "conv1/kernel": [5, 5, 1, 10], "conv2/kernel": [5, 5, 10, 20],
        "fc1/kernel": [320, 100], "fc2/kernel": [100, 10],
    }  # fmt: skip
    x = jnp.asarray(rng.random((16, 28, 28, 1), np.float32))
    want = apply_fn(pruned, x)
    np.testing.assert_allclose(shrink.lenet5_forward(full, x), want, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(shrink.lenet5_forward(small, x), want, rtol=1e-4, atol=1e-4)
    assert shrink.count(small) < shrink.count(full) / 4


def test_idle_weights_counts_weights_on_constant_or_unread_units():
    _, params, apply_fn = models.functional(models.create_model("lenet5", seed=0))
    p = {
        k: {n: np.array(v) for n, v in params[k].items()} for k in ("conv1", "conv2", "fc1", "fc2")
    }
    assert idle_weights(p) == {f"{k}/kernel": 0 for k in p}  # dense: none idle
    p["fc1"]["kernel"][:, 3] = 0.0  # fc1 unit 3 has no inputs: fc2 reads a constant
    p["fc2"]["kernel"][7, :] = 0.0  # nothing reads fc1 unit 7: its 800 inputs are idle
    p["conv2"]["kernel"][..., 5] = 0.0  # conv2 channel 5 is constant: fc1 reads it 16 x 500
    idle = idle_weights(p)
    assert idle == {
        "conv1/kernel": 0,
        "conv2/kernel": 0,
        # channel 5's 16 rows (column 3 already zero), then column 7's other 784 rows
        "fc1/kernel": 16 * 499 + (800 - 16),
        "fc2/kernel": 10,
    }
    # Idle weights that write an unread unit change nothing when removed.
    x = jnp.asarray(np.random.default_rng(1).random((8, 28, 28, 1), np.float32))
    q = {k: {n: v.copy() for n, v in d.items()} for k, d in p.items()}
    q["fc1"]["kernel"][:, 7] = 0.0
    np.testing.assert_allclose(apply_fn(q, x), apply_fn(p, x), rtol=1e-6, atol=1e-6)


def test_folding_idle_weights_keeps_the_logits_and_leaves_none_idle():
    _, params, apply_fn = models.functional(models.create_model("lenet5", seed=0))
    rng = np.random.default_rng(2)
    p = {
        k: {n: np.asarray(v) + 0.05 * rng.standard_normal(v.shape).astype(np.float32)
            for n, v in params[k].items()}
        for k in ("conv1", "conv2", "fc1", "fc2")
    }  # fmt: skip
    p["conv1"]["kernel"][..., 2] = 0.0  # constant conv1 channel, read by conv2
    p["conv2"]["kernel"][..., 5] = 0.0  # constant conv2 channel, read by fc1
    p["fc1"]["kernel"][:, 3] = 0.0  # constant fc1 unit (bias pushed positive below)
    p["fc1"]["bias"][3] = 0.4
    p["fc2"]["kernel"][7, :] = 0.0  # fc1 unit 7 is never read
    before = idle_weights(p)
    folded = fold_idle_lenet5(p)
    assert idle_weights(folded) == {f"{k}/kernel": 0 for k in p}
    assert all(before[f"{k}/kernel"] > 0 for k in ("conv2", "fc1", "fc2"))
    for k in p:
        dropped = np.count_nonzero(p[k]["kernel"]) - np.count_nonzero(folded[k]["kernel"])
        assert dropped == before[f"{k}/kernel"], k
    x = jnp.asarray(rng.random((8, 28, 28, 1), np.float32))
    np.testing.assert_allclose(apply_fn(folded, x), apply_fn(p, x), rtol=1e-4, atol=1e-4)
    # Not a no-op: the folded biases carry what the dropped weights added.
    assert not np.allclose(folded["fc2"]["bias"], p["fc2"]["bias"])

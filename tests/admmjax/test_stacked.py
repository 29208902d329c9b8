"""Stacked targets on an lm1b-like scanned transformer block (pure jax pytrees)."""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import admmjax

L, EMBED, HEADS, HEAD_DIM, MLP = 4, 16, 4, 8, 32
LAYER_SCALES = np.array([4.0, 1.0, 1.0, 0.5])


def block_params(seed: int = 0) -> dict:
    keys = jax.random.split(jax.random.key(seed), 4)

    def scaled(key, shape):
        w = jax.random.normal(key, shape)
        return w * LAYER_SCALES.reshape((L,) + (1,) * (len(shape) - 1))

    return {
        "embedding": jax.random.normal(keys[0], (64, EMBED)),
        "layers": {
            "attn": {
                "query": {"kernel": scaled(keys[1], (L, EMBED, HEADS, HEAD_DIM))},
                "out": {"kernel": scaled(keys[2], (L, HEADS, HEAD_DIM, EMBED))},
            },
            "mlp": {"wi": {"kernel": scaled(keys[3], (L, EMBED, MLP)), "bias": jnp.ones((L, MLP))}},
            "ln": {"scale": jnp.ones((L, EMBED)), "bias": jnp.ones((L, EMBED))},
        },
    }


def test_default_selection_prunes_no_bias_scale_or_embedding():
    params = block_params()
    targets = admmjax.uniform_sparsity(params, 0.8, stacked={"layers/*": 0})
    chosen = admmjax.targeted_leaves(params, targets)
    assert sorted(chosen) == [
        "layers/attn/out/kernel",
        "layers/attn/query/kernel",
        "layers/mlp/wi/kernel",
    ]


def test_default_selection_counts_one_slice_rank_of_stacked_leaves():
    # A stacked PyTorch-style norm `weight` (layers, width) has ndim 2 but is 1-D per layer.
    params = {
        "layers": {"ln": {"weight": jnp.ones((L, EMBED))}, "fc": {"weight": jnp.ones((L, 8, 8))}}
    }
    stacked = admmjax.uniform_sparsity(params, 0.5, stacked={"layers/*": 0})
    assert sorted(admmjax.targeted_leaves(params, stacked)) == ["layers/fc/weight"]
    two_axes = admmjax.uniform_sparsity(params, 0.5, stacked={"layers/fc/*": (0, 1)})
    assert sorted(admmjax.targeted_leaves(params, two_axes)) == ["layers/ln/weight"]


@pytest.mark.parametrize(
    "inner",
    [
        0.75,
        admmjax.Keep(100),
        admmjax.Structured(0.5, axis=1),
        admmjax.NM(2, 4, axis=0),
        admmjax.SparseQuantized(0.75, levels=1, scale=0.5),
    ],
    ids=repr,
)
def test_exact_per_layer_counts_eager_equals_jit(inner):
    params = block_params()
    targets = admmjax.sparsity_by_path(
        params, {"layers/attn/query/kernel": inner}, stacked={"layers/*": 0}
    )
    spec = targets["layers"]["attn"]["query"]["kernel"]
    eager = admmjax.project(params, targets)
    jitted = jax.jit(admmjax.project)(params, targets)
    z = np.asarray(eager["layers"]["attn"]["query"]["kernel"])
    np.testing.assert_array_equal(z, np.asarray(jitted["layers"]["attn"]["query"]["kernel"]))
    per_layer = (z != 0).reshape(L, -1).sum(1)
    assert np.all(per_layer == spec.slice_max_nonzero(z.shape[1:])), per_layer
    # Per slice it equals the unstacked projection of that slice.
    for layer in range(L):
        alone = (
            inner.project(params["layers"]["attn"]["query"]["kernel"][layer])[0]
            if isinstance(inner, admmjax.Constraint)
            else admmjax.project(params["layers"]["attn"]["query"]["kernel"][layer], inner)
        )
        np.testing.assert_array_equal(z[layer], np.asarray(alone))
    again = admmjax.project(eager, targets)
    np.testing.assert_array_equal(np.asarray(again["layers"]["attn"]["query"]["kernel"]), z)


def test_cardinality_is_optimal_per_slice_bruteforce():
    x = np.asarray(jax.random.normal(jax.random.key(3), (3, 2, 3)))
    z, _ = admmjax.Stacked(admmjax.Keep(2)).project(x)
    for layer in range(3):
        v = x[layer].ravel()
        best = min(
            np.sum(np.where(np.isin(np.arange(6), c), 0.0, v) ** 2)
            for c in itertools.combinations(range(6), 2)
        )
        assert np.sum((np.asarray(z[layer]).ravel() - v) ** 2) == pytest.approx(best)


def test_structured_inside_stacked_never_deletes_a_layer():
    params = block_params()
    targets = admmjax.sparsity_by_path(
        params,
        {"layers/attn/query/kernel": admmjax.Structured(0.75, axis=1)},
        stacked={"layers/*": 0},
    )
    z = np.asarray(admmjax.project(params, targets)["layers"]["attn"]["query"]["kernel"])
    heads_kept = (np.abs(z).sum(axis=(1, 3)) > 0).sum(1)
    assert np.all(heads_kept == 1)


def test_nm_on_attention_kernel_needs_axis():
    params = block_params()
    with pytest.raises(ValueError, match=r"layers/attn/query/kernel.*\(16, 4, 8\).*axis="):
        admmjax.sparsity_by_path(
            params, {"layers/attn/query/kernel": admmjax.NM(2, 4)}, stacked={"layers/*": 0}
        )


def test_nm_tuple_axes_groups_flattened_contraction():
    x = jax.random.normal(jax.random.key(1), (HEADS, HEAD_DIM, EMBED))
    _, mask = admmjax.NM(2, 4, axis=(0, 1)).project(x)
    groups = np.asarray(mask).reshape(HEADS * HEAD_DIM // 4, 4, EMBED)
    assert np.all(groups.sum(1) == 2)


def test_report_per_slice_and_admm_roundtrip():
    params = block_params()
    targets = admmjax.uniform_sparsity(params, 0.75, stacked={"layers/*": 0})
    state = admmjax.init(params, targets)
    state, _ = jax.jit(lambda s, p: admmjax.update(s, p, targets))(state, params)
    pruned, _ = admmjax.prune(params, targets)
    report = admmjax.sparsity_report(pruned, targets, per_slice=True)
    assert len(report.rows) == 3 * L
    assert all(r.kept_percent == 25.0 for r in report.rows)
    decoded = admmjax.decode_sparse(admmjax.encode_sparse(pruned), like=pruned)
    for a, b in zip(jax.tree.leaves(pruned), jax.tree.leaves(decoded), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))

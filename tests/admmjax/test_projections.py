"""Euclidean projections onto cardinality sets against brute-force NumPy references."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _bruteforce import DTYPES, arrays, dist, keep_of, ref_mask, ref_project
from hypothesis import given
from hypothesis import strategies as st

import admmjax
from admmjax import Keep

project_jit = jax.jit(admmjax.project)  # targets are arguments: traced


def _tree(x):
    return {"layer": {"w": jnp.asarray(x)}, "bias": jnp.ones(3, jnp.float32)}


def _targets(spec):
    return {"layer": {"w": spec}, "bias": None}


@st.composite
def array_and_k(draw, **kw):
    x = draw(arrays(**kw))
    return x, draw(st.integers(0, x.size))


@given(array_and_k())
def test_project_keep_matches_bruteforce(xk):
    x, k = xk
    out = admmjax.project(_tree(x), _targets(Keep(k)))
    w = np.asarray(out["layer"]["w"])
    assert w.dtype == x.dtype and w.shape == x.shape
    np.testing.assert_array_equal(w, ref_project(x, k))
    assert np.count_nonzero(w) == min(k, np.count_nonzero(x))
    np.testing.assert_array_equal(np.asarray(out["bias"]), np.ones(3))  # dense leaf untouched


@given(arrays(), st.floats(0.0, 1.0, exclude_max=True))
def test_project_sparsity_keeps_n_minus_floor(x, s):
    w = np.asarray(admmjax.project(_tree(x), _targets(s))["layer"]["w"])
    k = keep_of(s, x.size)
    np.testing.assert_array_equal(w, ref_project(x, k))
    assert np.count_nonzero(w) == min(k, np.count_nonzero(x))


@given(array_and_k(), st.randoms(use_true_random=False))
def test_projection_is_euclidean_optimal(xk, rnd):
    x, k = xk
    p = np.asarray(admmjax.project(_tree(x), _targets(Keep(k)))["layer"]["w"])
    # Exactly as close as the brute-force projection ...
    assert dist(x, p) == pytest.approx(dist(x, ref_project(x, k)), rel=1e-12, abs=0)
    assert dist(x, p) <= dist(x, ref_project(x, k))
    # ... and no farther than any other feasible point with the same support size.
    for _ in range(5):
        support = np.zeros(x.size, bool)
        support[rnd.sample(range(x.size), k)] = True
        other = np.where(support.reshape(x.shape), x, np.zeros((), x.dtype))
        assert dist(x, p) <= dist(x, other)


@given(array_and_k())
def test_projection_is_idempotent(xk):
    x, k = xk
    t = _targets(Keep(k))
    once = admmjax.project(_tree(x), t)
    twice = admmjax.project(once, t)
    np.testing.assert_array_equal(np.asarray(twice["layer"]["w"]), np.asarray(once["layer"]["w"]))


@given(array_and_k(), st.floats(0.0, 1.0, exclude_max=True))
def test_project_under_jit_with_traced_targets(xk, s):
    x, k = xk
    tree = {"by_count": jnp.asarray(x), "by_fraction": jnp.asarray(x), "dense": jnp.asarray(x)}
    got = project_jit(tree, {"by_count": Keep(k), "by_fraction": s, "dense": None})
    np.testing.assert_array_equal(np.asarray(got["by_count"]), ref_project(x, k))
    # A traced fraction is float32 (admmjax._sparsity.keep_count): s = 1 - 2**-53 arrives as 1.0.
    np.testing.assert_array_equal(
        np.asarray(got["by_fraction"]), ref_project(x, keep_of(float(np.float32(s)), x.size))
    )
    np.testing.assert_array_equal(np.asarray(got["dense"]), x)


@pytest.mark.parametrize("dtype", sorted(DTYPES))
@pytest.mark.parametrize("shape", [(10,), (4, 5), (2, 3, 4), (2, 3, 2, 2)])
def test_dtypes_and_shapes(dtype, shape):
    rng = np.random.default_rng(1)
    x = rng.standard_normal(shape).astype(DTYPES[dtype])
    n = x.size
    out = admmjax.project(_tree(x), _targets(0.75))["layer"]["w"]
    assert out.dtype == x.dtype and out.shape == shape
    np.testing.assert_array_equal(np.asarray(out), ref_project(x, keep_of(0.75, n)))


def test_all_zero_leaf():
    x = np.zeros((4, 6), np.float32)
    w = admmjax.project(_tree(x), _targets(0.5))["layer"]["w"]
    assert np.count_nonzero(np.asarray(w)) == 0
    # min(k, nnz): 3 nonzeros under a budget of 12.
    x[1, 2], x[3, 0], x[0, 5] = -1.0, 2.0, 0.5
    w = admmjax.project(_tree(x), _targets(0.5))["layer"]["w"]
    np.testing.assert_array_equal(np.asarray(w), x)


def test_negative_values_keep_sign():
    x = -np.arange(1.0, 13.0, dtype=np.float32).reshape(3, 4)
    w = np.asarray(admmjax.project(_tree(x), _targets(Keep(3)))["layer"]["w"])
    np.testing.assert_array_equal(w[w != 0], [-10.0, -11.0, -12.0])


def test_sparsity_zero_and_near_one():
    x = np.random.default_rng(2).standard_normal((5, 7)).astype(np.float32)
    np.testing.assert_array_equal(
        np.asarray(admmjax.project(_tree(x), _targets(0.0))["layer"]["w"]), x
    )
    for s in (1 - 0.5 / x.size, 0.9999):  # floor(s n) = n - 1: keep exactly one
        w = np.asarray(admmjax.project(_tree(x), _targets(s))["layer"]["w"])
        assert np.count_nonzero(w) == 1
        assert np.abs(w).max() == np.abs(x).max()
    w = np.asarray(admmjax.project(_tree(x), _targets(Keep(0)))["layer"]["w"])
    assert np.count_nonzero(w) == 0
    w = np.asarray(project_jit(_tree(x), _targets(Keep(0)))["layer"]["w"])
    assert np.count_nonzero(w) == 0


def test_nan_eager_raises_naming_path():
    x = np.ones((3, 4), np.float32)
    x[1, 1] = np.nan
    with pytest.raises(ValueError, match="layer/w"):
        admmjax.project(_tree(x), _targets(0.5))
    with pytest.raises(ValueError, match="NaN"):
        admmjax.project_global(_tree(x), 0.5, include="*/w")
    # Dense leaves are not checked: NaN there is the training loop's business.
    t = {"layer": {"w": None}, "bias": None}
    admmjax.project(_tree(x), t)


def test_nan_under_jit_is_kept():
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    x[0, 1] = np.nan
    w = np.asarray(project_jit(_tree(x), _targets(Keep(2)))["layer"]["w"])
    assert np.isnan(w[0, 1])  # NaN ranks above every number: kept, propagates
    assert w[2, 3] == 11.0
    assert np.count_nonzero(w) == 2


@pytest.mark.parametrize("axis_type", ["Explicit", "Auto"])
def test_projections_of_sharded_leaves_over_4_devices(axis_type):
    # jax.make_mesh defaults to Explicit axes, where the histogram scatter needs its
    # keys replicated first (a ValueError before the fix in admmjax._select).
    assert jax.device_count() == 4  # set in conftest
    axis_types = (getattr(jax.sharding.AxisType, axis_type),)
    mesh = jax.make_mesh((4,), ("x",), axis_types=axis_types)
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("x"))
    rng = np.random.default_rng(3)
    x = rng.standard_normal((16, 32)).astype(np.float32)
    y = rng.standard_normal((8, 4)).astype(np.float32)
    tree = {"w": jax.device_put(x, sharding), "v": jax.device_put(y, sharding)}
    k = keep_of(0.9, x.size)
    for out in (
        jax.jit(admmjax.project)(tree, {"w": 0.9, "v": None}),
        admmjax.project(tree, {"w": 0.9, "v": None}),
    ):
        np.testing.assert_array_equal(np.asarray(out["w"]), ref_project(x, k))
        np.testing.assert_array_equal(np.asarray(out["v"]), y)
        assert out["w"].sharding.spec[0] == "x"  # layout preserved
    if axis_type == "Auto":
        return
    out = jax.jit(functools.partial(admmjax.project_global, include=["w", "v"]))(tree, 0.75)
    flat = np.concatenate([y.ravel(), x.ravel()])  # flattening order: 'v' before 'w'
    got = np.concatenate([np.asarray(out["v"]).ravel(), np.asarray(out["w"]).ravel()])
    np.testing.assert_array_equal(got, ref_project(flat, keep_of(0.75, flat.size)))
    targets = {"w": Keep(50), "v": Keep(3)}
    state = jax.jit(admmjax.init)(tree, targets)
    state, info = jax.jit(admmjax.update)(state, tree, targets)
    np.testing.assert_array_equal(np.asarray(state.z["w"]), ref_project(x, 50))
    assert float(info.primal["w"]) == pytest.approx(np.linalg.norm(x - ref_project(x, 50)))


# --- one budget across leaves -------------------------------------------------------


@st.composite
def global_trees(draw):
    """Leaves of different shapes (biases 1-D), values shared across leaves for ties."""
    ties = draw(st.booleans())
    tree = {
        "a": {"kernel": draw(arrays("float32", ties, (4, 6))), "bias": np.ones(6, np.float32)},
        "b": {"kernel": draw(arrays("float32", ties, (2, 3, 4)))},
        "c": {"kernel": draw(arrays("float32", ties, (3, 3)))},
    }
    return tree


def _selected_concat(tree):
    leaves = [leaf for leaf in jax.tree.leaves(tree) if leaf.ndim >= 2]
    return np.concatenate([np.asarray(leaf).ravel() for leaf in leaves])


@given(global_trees(), st.floats(0.0, 1.0, exclude_max=True))
def test_project_global_matches_bruteforce_over_concatenation(tree, s):
    out = admmjax.project_global(tree, s)
    flat = _selected_concat(tree)
    k = keep_of(s, flat.size)
    np.testing.assert_array_equal(_selected_concat(out), ref_project(flat, k))
    np.testing.assert_array_equal(np.asarray(out["a"]["bias"]), tree["a"]["bias"])
    # The allocation frozen into per-leaf targets reproduces the projection exactly.
    targets = admmjax.global_to_targets(tree, s)
    assert targets["a"]["bias"] is None
    counts = [t.n for t in jax.tree.leaves(targets, is_leaf=lambda t: isinstance(t, Keep))]
    assert sum(counts) == k
    mask = ref_mask(flat, k)
    sizes = [24, 24, 9]  # a/kernel, b/kernel, c/kernel in flattening order
    np.testing.assert_array_equal(
        counts, [int(m.sum()) for m in np.split(mask, np.cumsum(sizes)[:-1])]
    )
    per_leaf = admmjax.project(tree, targets)
    for got, want in zip(jax.tree.leaves(per_leaf), jax.tree.leaves(out), strict=True):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


def test_project_global_layers_compete_for_budget():
    tree = {"big": jnp.full((3, 3), 10.0), "small": jnp.full((3, 3), 0.1)}
    out = admmjax.project_global(tree, Keep(5), include="*")
    assert np.count_nonzero(np.asarray(out["big"])) == 5
    assert np.count_nonzero(np.asarray(out["small"])) == 0
    t = admmjax.global_to_targets(tree, Keep(5), include="*")
    assert t == {"big": Keep(5), "small": Keep(0)}


def test_project_global_include_and_errors():
    tree = {"w": jnp.arange(6.0).reshape(2, 3), "b": jnp.arange(3.0)}
    out = admmjax.project_global(tree, Keep(2), include=["w", "b"])
    assert np.count_nonzero(np.asarray(out["w"])) + np.count_nonzero(np.asarray(out["b"])) == 2
    np.testing.assert_array_equal(np.asarray(out["w"]), [[0, 0, 0], [0, 4, 5]])
    with pytest.raises(ValueError, match="selects no leaf"):
        admmjax.project_global(tree, 0.5, include="nothing*")
    with pytest.raises(ValueError, match=r"<global>.*1\.5"):
        admmjax.project_global(tree, 1.5, include="w")

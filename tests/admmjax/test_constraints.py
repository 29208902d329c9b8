"""Structured, N:M and quantization constraints against brute-force references."""

from __future__ import annotations

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from _bruteforce import DTYPES, arrays, dist
from hypothesis import given
from hypothesis import strategies as st

import admmjax
from admmjax import NM, Keep, Quantized, SparseQuantized, Structured

project_jit = jax.jit(admmjax.project)


def _proj(x, spec, jit=False):
    """Projects one leaf through the public API (with a dense sibling leaf)."""
    tree = {"layer": {"w": jnp.asarray(x)}, "bias": jnp.ones(3, jnp.float32)}
    out = (project_jit if jit else admmjax.project)(tree, {"layer": {"w": spec}, "bias": None})
    np.testing.assert_array_equal(np.asarray(out["bias"]), np.ones(3))
    w = out["layer"]["w"]
    assert w.dtype == jnp.asarray(x).dtype and w.shape == np.shape(x)
    return np.asarray(w)


def _f64(x):
    return np.asarray(x).astype(np.float64)


def _sq(a, b) -> float:
    return dist(a, b) ** 2


# --- N:M ---------------------------------------------------------------------------------


def ref_nm_mask(x, n, m, axis):
    """Per group of m along axis: the n largest |x| (float64), ties to the lowest position."""
    x = np.moveaxis(_f64(x), axis, -1)
    groups = np.abs(x).reshape(-1, m)
    mask = np.zeros(groups.shape, bool)
    for g, row in enumerate(groups):
        mask[g, np.argsort(-row, kind="stable")[:n]] = True
    return np.moveaxis(mask.reshape(x.shape), -1, axis)


NM_CASES = [((8,), 0), ((4, 6), 0), ((6, 4), -1), ((2, 4, 3), 1), ((3, 3, 4, 2), -2)]


@st.composite
def nm_case(draw):
    shape, axis = draw(st.sampled_from(NM_CASES))
    m = draw(st.sampled_from([d for d in (1, 2, 4) if shape[axis] % d == 0]))
    return draw(arrays(shape=shape)), draw(st.integers(0, m)), m, axis


@given(nm_case(), st.booleans())
def test_nm_matches_reference_and_is_feasible(case, jit):
    x, n, m, axis = case
    w = _proj(x, NM(n, m, axis), jit=jit)
    mask = ref_nm_mask(x, n, m, axis)
    np.testing.assert_array_equal(w, np.where(mask, x, np.zeros((), x.dtype)))
    groups = np.moveaxis(w != 0, axis, -1).reshape(-1, m)
    assert (groups.sum(axis=1) <= n).all()
    np.testing.assert_array_equal(_proj(w, NM(n, m, axis)), w)  # idempotent


@given(arrays("float32", shape=(2, 4)), st.integers(0, 4))
def test_nm_is_euclidean_optimal_over_all_feasible_supports(x, n):
    # Every support with at most n of each group of 4 (along axis 1): brute force.
    w = _proj(x, NM(n, 4, axis=1))
    rows = [
        [c for r in range(n + 1) for c in itertools.combinations(range(4), r)] for _ in range(2)
    ]
    best = math.inf
    for choice in itertools.product(*rows):
        mask = np.zeros((2, 4), bool)
        for i, cols in enumerate(choice):
            mask[i, list(cols)] = True
        best = min(best, _sq(x, np.where(mask, x, 0)))
    assert _sq(x, w) == best


@pytest.mark.parametrize("n", [0, 1, 7, 20])
def test_nm_large_groups_use_the_sort_path(n):
    x = np.random.default_rng(n).standard_normal((40, 3)).astype(np.float32)
    x[:5] = 1.0  # ties
    w = _proj(x, NM(n, 20, axis=0))
    np.testing.assert_array_equal(w, np.where(ref_nm_mask(x, n, 20, 0), x, 0))


def test_nm_masks_exactly_n_of_m_and_errors_name_the_leaf():
    x = jnp.zeros((8, 3)).at[0, 0].set(1.0)
    _, masks = admmjax.prune({"fc": x}, {"fc": NM(2, 4)})
    assert np.asarray(masks["fc"]).reshape(2, 4, 3).sum(axis=1).tolist() == [[2] * 3] * 2
    assert admmjax.target_counts({"fc": x}, {"fc": NM(2, 4)}) == {"fc": 12}
    params = {"fc1": {"kernel": jnp.ones((6, 3))}}
    with pytest.raises(ValueError, match=r"fc1/kernel.*NM\(2, 4\).*length 6.*multiple of 4"):
        admmjax.sparsity_by_path(params, {"fc1/kernel": NM(2, 4)})
    with pytest.raises(ValueError, match=r"fc1/kernel.*axis 2 is out of range"):
        admmjax.project(params, {"fc1": {"kernel": NM(1, 3, axis=2)}})
    with pytest.raises(ValueError, match=r"n <= m.*NM\(3, 2\)"):
        NM(3, 2)
    with pytest.raises(TypeError, match="integer"):
        NM(1.5, 4)


# --- Structured --------------------------------------------------------------------------


def ref_structured_mask(x, k, axes):
    """The k slices of largest float64 norm, ties to the lowest slice index."""
    axes = tuple(a % x.ndim for a in axes)
    moved = np.moveaxis(_f64(x), axes, range(len(axes)))
    norms = np.sum(moved.reshape(math.prod(moved.shape[: len(axes)]), -1) ** 2, axis=1)
    keep = np.zeros(norms.size, bool)
    keep[np.argsort(-norms, kind="stable")[:k]] = True
    full = np.broadcast_to(
        keep.reshape(moved.shape[: len(axes)] + (1,) * (x.ndim - len(axes))), moved.shape
    )
    return np.moveaxis(full, range(len(axes)), axes)


STRUCT_CASES = [((4, 6), -1), ((4, 6), 0), ((2, 3, 4), (0, 2)), ((2, 2, 3, 3), -2)]


@st.composite
def structured_case(draw, ties=True):
    shape, axis = draw(st.sampled_from(STRUCT_CASES))
    axes = (axis,) if isinstance(axis, int) else axis
    groups = math.prod(shape[a] for a in axes)
    x = draw(arrays("float32", ties=ties, shape=shape))
    return x, draw(st.integers(0, groups)), axis, axes


@given(structured_case(ties=True), st.booleans())
def test_structured_matches_reference_exactly_on_exact_norms(case, jit):
    # Tie values (0, 0.5, 1, 2) give float32 norms without rounding: equal norms are
    # common and the lowest slice index must win.
    x, k, axis, axes = case
    w = _proj(x, Structured(Keep(k), axis), jit=jit)
    mask = ref_structured_mask(x, k, axes)
    np.testing.assert_array_equal(w, np.where(mask, x, 0))
    np.testing.assert_array_equal(_proj(w, Structured(Keep(k), axis)), w)  # idempotent


@given(structured_case(ties=False))
def test_structured_is_euclidean_optimal_over_all_slice_subsets(case):
    x, k, axis, axes = case
    # XLA on CPU flushes subnormals to zero: keep values normal relative to the largest.
    x = np.where(np.abs(x) < 1e-30 * np.abs(x).max(initial=0), np.float32(0), x)
    w = _proj(x, Structured(Keep(k), axis))
    axes_n = tuple(a % x.ndim for a in axes)
    sizes = [x.shape[a] for a in axes_n]
    slices = list(itertools.product(*[range(s) for s in sizes]))
    # Feasible: zero outside at most k whole slices.
    kept = [s for s in slices if np.any(w[_index(x.ndim, axes_n, s)] != 0)]
    assert len(kept) <= k
    best = math.inf
    for chosen in itertools.combinations(slices, k):
        z = np.zeros_like(x)
        for s in chosen:
            z[_index(x.ndim, axes_n, s)] = x[_index(x.ndim, axes_n, s)]
        best = min(best, _sq(x, z))
    assert _sq(x, w) <= best * (1 + 1e-6) + 1e-30 * _sq(x, 0)


def _index(ndim, axes, s):
    idx = [slice(None)] * ndim
    for a, i in zip(axes, s, strict=True):
        idx[a] = i
    return tuple(idx)


def test_structured_conv_filters_and_input_channels():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 3, 4, 8)).astype(np.float32)
    params = {"conv": {"kernel": jnp.asarray(x), "bias": jnp.zeros(8)}}
    for axis, groups in ((-1, 8), (-2, 4), ((0, 1), 9)):
        t = admmjax.uniform_sparsity(params, Structured(0.5, axis))
        pruned, masks = admmjax.prune(params, t)
        w, m = np.asarray(pruned["conv"]["kernel"]), np.asarray(masks["conv"]["kernel"])
        axes = (axis,) if isinstance(axis, int) else axis
        k = groups - math.floor(0.5 * groups)
        np.testing.assert_array_equal(m, ref_structured_mask(x, k, axes))
        assert m.sum() == k * x.size // groups == admmjax.target_counts(params, t)["conv"]["kernel"]
        np.testing.assert_array_equal(w, np.where(m, x, 0))
    with pytest.raises(ValueError, match=r"conv/kernel.*Keep\(9\) slices.*only 8"):
        admmjax.project(params, {"conv": {"kernel": Structured(Keep(9)), "bias": None}})
    with pytest.raises(ValueError, match=r"Keep\(3\)"):
        Structured(3)
    with pytest.raises(ValueError, match="repeats an axis"):
        admmjax.project(params, {"conv": {"kernel": Structured(0.5, (1, -3)), "bias": None}})


# --- Quantized: fixed levels -------------------------------------------------------------


def ref_nearest(x, levels):
    """Nearest level in float64; ties to smaller magnitude, then to the lower level."""
    levels = np.sort(np.asarray(levels, np.float64))
    levels = levels[np.lexsort((levels, np.abs(levels)))]  # argmin's first = the tie rule
    d = np.abs(_f64(x).ravel()[:, None] - levels[None, :])
    return levels[np.argmin(d, axis=1)].reshape(np.shape(x))


LEVELS = [(-1.0, 0.0, 1.0), (-1.5, -0.25, 0.0, 0.5, 2.0), (0.5, 1.5), (-3.0,)]


@given(
    arrays("float32"),
    st.sampled_from(LEVELS),
    st.sampled_from([1.0, 0.3, 2.0**-10]),
    st.booleans(),
)
def test_quantized_fixed_levels_is_the_nearest_level(x, levels, scale, jit):
    w = _proj(x, Quantized(levels, scale=scale), jit=jit)
    grid = np.float32(levels) * np.float32(scale)
    assert np.isin(w, grid).all()  # feasible
    ref = ref_nearest(x, grid)
    # Per entry as close as the float64 nearest level (equal up to float32 rounding of
    # the two distances, where the tie rule may pick either).
    err, best = np.abs(_f64(x) - w), np.abs(_f64(x) - ref)
    assert (err <= best * (1 + 2**-23) + 1e-300).all()
    np.testing.assert_array_equal(_proj(w, Quantized(levels, scale=scale)), w)  # idempotent


def test_quantized_ties_go_to_the_smaller_magnitude_and_dtypes():
    x = np.array([0.5, -0.5, 1.5, -1.5, 0.0, 3.0, -7.0, 0.75], np.float32)
    np.testing.assert_array_equal(_proj(x, Quantized(1)), [0, 0, 1, -1, 0, 1, -1, 1])
    np.testing.assert_array_equal(
        _proj(x, Quantized((0.5, 1.5))), [0.5, 0.5, 1.5, 0.5, 0.5, 1.5, 0.5, 0.5]
    )
    np.testing.assert_array_equal(_proj(np.float32([0.0]), Quantized((-1.0, 1.0))), [-1.0])
    for name, dtype in DTYPES.items():
        w = _proj(x.astype(dtype), Quantized(2, scale=0.25))
        assert w.dtype == dtype, name
        np.testing.assert_array_equal(w.astype(np.float32), ref_nearest(x, np.arange(-2, 3) * 0.25))


# --- Quantized: learned scale ------------------------------------------------------------


def brute_scaled(x, base):
    """min over s >= 0 and every assignment b in base^n of ||x - s b||^2 (float64)."""
    v = _f64(x).ravel()
    best = float(v @ v)  # s = 0
    for b in itertools.product(base, repeat=v.size):
        b = np.asarray(b)
        num, den = float(v @ b), float(b @ b)
        if num > 0 and den > 0:
            best = min(best, float(v @ v) - num * num / den)
    return max(best, 0.0)


BASES = [1, 2, (-1.0, 0.5, 2.0), (1.0, 3.0), (-2.0, -1.0, 0.0, 1.0)]


@given(
    arrays("float32", shape=(5,)),
    st.sampled_from(BASES),
    st.booleans(),
)
def test_learned_scale_is_the_global_optimum_by_enumeration(x, base, jit):
    x = np.clip(x, -1e10, 1e10)
    spec = Quantized(base, scale="learned")
    w = _proj(x, spec, jit=jit)
    # Feasible: every entry is s * b for one s >= 0 and b in B.
    b = np.asarray(spec.levels)
    levels = np.asarray(spec.levels_for(jnp.asarray(x)))
    s = np.max(np.abs(levels)) / np.max(np.abs(b))
    assert s >= 0
    np.testing.assert_allclose(levels, s * b, rtol=1e-6)
    on_grid = s * b[np.argmin(np.abs(_f64(w).ravel()[:, None] - s * b), axis=1)]
    np.testing.assert_allclose(w, on_grid.reshape(w.shape), rtol=1e-6)
    best = brute_scaled(x, spec.levels)
    got = _sq(x, w)
    scale = float(np.sum(_f64(x) ** 2))
    assert best - 1e-6 * scale <= got <= best + 1e-5 * scale + 1e-30


def test_learned_scale_beats_a_fine_grid_on_a_larger_leaf():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((20, 10)).astype(np.float32)
    for base in (1, 3, (-1.0, 0.5, 2.0)):
        spec = Quantized(base, scale="learned")
        w = _proj(x, spec)
        b = np.asarray(spec.levels)
        grid = min(_sq(x, ref_nearest(x, s * b)) for s in np.linspace(1e-3, 4.0, 4001))
        assert _sq(x, w) <= grid * (1 + 1e-6)
        np.testing.assert_allclose(_proj(w, spec), w, rtol=1e-6)  # idempotent
    # Ternary with a learned scale: the known closed form over the top-m magnitudes.
    a = np.sort(np.abs(_f64(x).ravel()))[::-1]
    tern = max(np.cumsum(a)[m - 1] ** 2 / m for m in range(1, a.size + 1))
    assert _sq(x, _proj(x, Quantized(1, scale="learned"))) == pytest.approx(
        float(np.sum(a**2)) - tern, rel=1e-5
    )
    np.testing.assert_array_equal(_proj(np.zeros((3, 4), np.float32), spec), 0)


# --- Quantized: k-means levels -----------------------------------------------------------


def exact_kmeans_sse(v, k):
    """Optimal 1-D k-means SSE by dynamic programming over the sorted values."""
    v = np.sort(_f64(v).ravel())
    n = v.size
    c1, c2 = np.concatenate([[0], np.cumsum(v)]), np.concatenate([[0], np.cumsum(v * v)])

    def sse(i, j):  # values v[i:j]
        s = c1[j] - c1[i]
        return c2[j] - c2[i] - s * s / (j - i)

    cost = np.full((k + 1, n + 1), np.inf)
    cost[0, 0] = 0.0
    for c in range(1, k + 1):
        for j in range(1, n + 1):
            cost[c, j] = min(cost[c - 1, i] + sse(i, j) for i in range(j))
    return min(cost[c, n] for c in range(1, k + 1))


def test_kmeans_levels_claims():
    rng = np.random.default_rng(0)
    # Well separated clusters: Lloyd's from quantiles reaches the exact optimum.
    centers = np.array([-2.0, -0.5, 0.0, 1.0, 3.0])
    x = (rng.choice(centers, 60) + 0.02 * rng.standard_normal(60)).astype(np.float32)
    spec = Quantized(num_levels=5)
    w = _proj(x, spec)
    assert len(np.unique(w)) <= 5
    assert _sq(x, w) == pytest.approx(exact_kmeans_sse(x, 5), rel=1e-4)
    # Any data: at most K values, nearest-level rounding to its own levels, and the
    # error never above the quantile initialisation's (iters=0).
    for seed in range(3):
        x = np.random.default_rng(seed).standard_normal((6, 7)).astype(np.float32)
        w = _proj(x, Quantized(num_levels=4))
        levels = np.asarray(Quantized(num_levels=4).levels_for(jnp.asarray(x)))
        np.testing.assert_array_equal(w, ref_nearest(x, levels))
        assert _sq(x, w) <= _sq(x, _proj(x, Quantized(num_levels=4, iters=0))) * (1 + 1e-6)
        assert _sq(x, w) >= exact_kmeans_sse(x, 4) * (1 - 1e-5)
        # a fixed point of Lloyd's: each level is the mean of its cell
        for lvl in np.unique(w):
            assert lvl == pytest.approx(float(np.mean(_f64(x)[w == lvl])), rel=1e-5, abs=1e-6)


# --- SparseQuantized ---------------------------------------------------------------------


def brute_sparse_quant(x, k, grid):
    """min over every z with card(z) <= k and z_i in {0} u grid of ||x - z||^2."""
    v = _f64(x).ravel()
    choices = [0.0, *[float(g) for g in grid if g != 0]]
    best = math.inf
    for z in itertools.product(choices, repeat=v.size):
        z = np.asarray(z)
        if np.count_nonzero(z) <= k:
            best = min(best, float(np.sum((v - z) ** 2)))
    return best


@given(
    arrays("float32", shape=(5,)),
    st.integers(0, 5),
    st.sampled_from([(1.0,), (-1.0, 0.0, 1.0), (0.5, 1.5), (-2.0, -0.5, 1.0)]),
    st.booleans(),
)
def test_sparse_quantized_is_exact_by_enumeration(x, k, levels, jit):
    x = np.clip(x, -1e10, 1e10)
    spec = SparseQuantized(Keep(k), levels, scale=0.5)
    w = _proj(x, spec, jit=jit)
    grid = np.float32(levels) * np.float32(0.5)
    assert np.count_nonzero(w) <= k and np.isin(w[w != 0], grid).all()
    best = brute_sparse_quant(x, k, grid)
    scale = float(np.sum(_f64(x) ** 2))
    assert best - 1e-6 * scale <= _sq(x, w) <= best + 1e-6 * scale + 1e-30
    np.testing.assert_array_equal(_proj(w, spec), w)  # idempotent


def test_sparse_quantized_gain_order_and_counts():
    # Gain w^2 - (w - q)^2 with levels {-1, 0, 1}: 0.9 -> 0.8, 3.0 -> 5.0, 0.4 -> 0 (q = 0).
    x = np.array([0.9, 3.0, 0.4, -1.1, 0.9], np.float32)
    np.testing.assert_array_equal(_proj(x, SparseQuantized(Keep(2), 1)), [0, 1, 0, -1, 0])
    np.testing.assert_array_equal(_proj(x, SparseQuantized(Keep(3), 1)), [1, 1, 0, -1, 0])
    np.testing.assert_array_equal(_proj(x, SparseQuantized(Keep(5), 1)), [1, 1, 0, -1, 1])
    params = {"w": jnp.asarray(np.random.default_rng(0).standard_normal((10, 10)), jnp.float32)}
    t = {"w": SparseQuantized(0.9, 2, scale=0.5)}
    pruned, masks = admmjax.prune(params, t)
    assert admmjax.target_counts(params, t) == {"w": 10}
    assert int(masks["w"].sum()) == np.count_nonzero(pruned["w"]) == 10
    assert set(np.unique(np.asarray(pruned["w"]))) <= {-1.0, -0.5, 0.0, 0.5, 1.0}


def test_constructor_errors():
    with pytest.raises(ValueError, match="exactly one of levels"):
        Quantized()
    with pytest.raises(ValueError, match="exactly one of levels"):
        Quantized(1, num_levels=3)
    with pytest.raises(ValueError, match="non-empty"):
        Quantized(())
    with pytest.raises(ValueError, match="finite"):
        Quantized((0.0, math.inf))
    with pytest.raises(ValueError, match=r"scale must be finite and > 0.*-1"):
        Quantized(1, scale=-1.0)
    with pytest.raises(ValueError, match="'learned'"):
        Quantized(1, scale="learnt")
    with pytest.raises(ValueError, match="nonzero level"):
        Quantized((0.0,), scale="learned")
    with pytest.raises(ValueError, match="learned scale is only"):
        SparseQuantized(0.9, 1, scale="learned")
    with pytest.raises(ValueError, match=r"SparseQuantized.*1\.5.*\[0, 1\)"):
        SparseQuantized(1.5, 1)
    with pytest.raises(ValueError, match=r"'w'.*SparseQuantized.*Keep\(7\).*only 6"):
        admmjax.project({"w": jnp.ones((2, 3))}, {"w": SparseQuantized(Keep(7), 1)})


# --- static structure, mixed trees, the ADMM loop -----------------------------------------


def test_constraints_are_static_hashable_values():
    a, b = Quantized([1, -1, 0], scale="learned"), Quantized(1, scale="learned")
    assert a == b and hash(a) == hash(b) and a.levels == (-1.0, 0.0, 1.0)
    assert NM(2, 4) == NM(2, 4, axis=None) != NM(2, 4, axis=0)  # None: the input axis by rank
    assert Structured(Keep(2)) == Structured(Keep(2), -1)
    assert len({NM(2, 4), NM(2, 4), Structured(0.5), Structured(0.5)}) == 2
    assert jax.tree.leaves({"a": NM(2, 4), "b": SparseQuantized(0.5, 1)}) == []
    traces = []

    @jax.jit
    def f(x, t):
        traces.append(1)
        return admmjax.project(x, t)

    x = {"w": jnp.ones((4, 4))}
    f(x, {"w": NM(2, 4)})
    f(x, {"w": NM(2, 4)})
    assert len(traces) == 1  # equal constraints reuse the compilation
    f(x, {"w": NM(1, 4)})
    assert len(traces) == 2


def mixed_params(seed=0):
    rng = np.random.default_rng(seed)

    def normal(*shape):
        return jnp.asarray(rng.standard_normal(shape), jnp.float32)

    return {
        "conv1": {"kernel": normal(3, 3, 2, 8), "bias": normal(8)},
        "conv2": {"kernel": normal(3, 3, 8, 4), "bias": normal(4)},
        "fc1": {"kernel": normal(16, 12), "bias": normal(12)},
        "fc2": {"kernel": normal(12, 6), "bias": normal(6)},
        "fc3": {"kernel": normal(6, 3)},
    }


MIXED = {
    "conv1/kernel": Structured(Keep(5)),
    "conv2/kernel": NM(2, 4),
    "fc1/kernel": 0.9,
    "fc2/kernel": Quantized(1, scale="learned"),
    "fc3/kernel": SparseQuantized(Keep(4), 2, scale=0.5),
}


def test_mixed_tree_project_init_update_prune_report():
    params = mixed_params()
    t = admmjax.sparsity_by_path(params, MIXED)
    proj = admmjax.project(params, t)
    for path, spec in MIXED.items():
        layer = path.split("/")[0]
        w = params[layer]["kernel"]
        want = (
            spec.project(w)[0]
            if not isinstance(spec, float)
            else admmjax.project({"x": w}, {"x": spec})["x"]
        )
        np.testing.assert_array_equal(np.asarray(proj[layer]["kernel"]), np.asarray(want))
        if "bias" in params[layer]:  # dense leaves pass through
            np.testing.assert_array_equal(proj[layer]["bias"], params[layer]["bias"])
    state = jax.jit(admmjax.init)(params, t)
    for layer in params:
        z = np.asarray(state.z[layer]["kernel"])
        np.testing.assert_allclose(z, np.asarray(proj[layer]["kernel"]), rtol=1e-6)
        assert state.z[layer].get("bias") is None
    new = mixed_params(1)
    state2, info = jax.jit(admmjax.update)(state, new, t)
    v = jax.tree.map(lambda w, u: w if u is None else w + u, new, state.u)
    for layer in params:
        z = np.asarray(state2.z[layer]["kernel"])
        np.testing.assert_allclose(z, np.asarray(admmjax.project(v, t)[layer]["kernel"]), rtol=1e-6)
        np.testing.assert_allclose(
            np.asarray(state2.u[layer]["kernel"]),
            np.asarray(state.u[layer]["kernel"] + new[layer]["kernel"]) - z,
            atol=1e-6,
        )
        assert float(info.primal[layer]["kernel"]) == pytest.approx(
            dist(new[layer]["kernel"], z), rel=1e-5
        )
    pruned, masks = admmjax.prune(params, t)
    report = admmjax.sparsity_report(pruned, t)
    counts = admmjax.target_counts(params, t)
    assert [r.path for r in report.rows] == [p for p in sorted(MIXED)]
    for r in report.rows:
        layer = r.path.split("/")[0]
        kept = int(np.asarray(masks[layer]["kernel"]).sum())
        assert r.nonzero <= kept <= counts[layer]["kernel"]
        if layer in ("fc2", "fc3"):  # quantized: the mask marks the nonzeros
            assert r.nonzero == kept
        else:  # pruned: the mask holds the whole budget
            assert kept == counts[layer]["kernel"]
    assert report.rows[0].nonzero == 5 * 3 * 3 * 2  # 5 whole filters


def test_freeze_quantized_keeps_levels_fixed_in_retraining():
    params = mixed_params()
    t = admmjax.sparsity_by_path(params, MIXED)
    pruned, masks = admmjax.prune(params, t)
    frozen = admmjax.freeze_quantized(masks, t)
    assert not np.asarray(frozen["fc2"]["kernel"]).any()
    assert not np.asarray(frozen["fc3"]["kernel"]).any()
    np.testing.assert_array_equal(
        np.asarray(frozen["fc1"]["kernel"]), np.asarray(masks["fc1"]["kernel"])
    )
    assert frozen["fc1"]["bias"] is None
    tx = admmjax.keep_pruned(optax.adam(1e-1), frozen)

    def loss(p):
        return sum(jnp.sum(jnp.sin(x)) for x in jax.tree.leaves(p))

    step = admmjax.make_train_step(loss, tx, donate=False)
    p, opt_state = pruned, tx.init(pruned)
    for _ in range(3):
        p, opt_state, _ = step(p, opt_state)
    for layer in ("fc2", "fc3"):
        np.testing.assert_array_equal(
            np.asarray(p[layer]["kernel"]), np.asarray(pruned[layer]["kernel"])
        )
    for layer in ("conv1", "conv2", "fc1"):
        w, m = np.asarray(p[layer]["kernel"]), np.asarray(masks[layer]["kernel"])
        assert (w[~m] == 0).all() and not np.array_equal(w, np.asarray(pruned[layer]["kernel"]))
    with pytest.raises(ValueError, match="masks' structure"):
        admmjax.freeze_quantized(masks, {"fc1": None})


@pytest.mark.parametrize(
    "spec, truth",
    [
        (NM(1, 2, axis=0), "nm"),
        (Structured(Keep(3), axis=0), "rows"),
        (Quantized(1, scale="learned"), "ternary"),
        (SparseQuantized(Keep(6), 1, scale=0.75), "sparse_ternary"),
    ],
)
def test_admm_loop_solves_constrained_least_squares(spec, truth):
    rng = np.random.default_rng(0)
    m, d = 200, 12
    a = rng.standard_normal((m, d)).astype(np.float32)
    x_true = rng.uniform(0.5, 1.0, (d, 1)).astype(np.float32) * rng.choice([-1, 1], (d, 1))
    if truth == "nm":
        x_true[1::2] = 0  # feasible for 1:2 along axis 0
    elif truth == "rows":
        x_true[3:] = 0
    elif truth == "ternary":
        x_true = 0.6 * np.sign(x_true) * (rng.uniform(size=(d, 1)) < 0.7)
    else:
        x_true = np.zeros((d, 1), np.float32)
        x_true[rng.choice(d, 6, replace=False), 0] = 0.75 * rng.choice([-1, 1], 6)
    b = a @ x_true + 0.05 * rng.standard_normal((m, 1)).astype(np.float32)
    a_j, b_j = jnp.asarray(a), jnp.asarray(b)

    def loss(params):
        return 0.5 * jnp.mean((a_j @ params["w"] - b_j) ** 2)

    dense, *_ = np.linalg.lstsq(a, b, rcond=None)
    params, targets = {"w": jnp.asarray(dense)}, {"w": spec}
    tx = optax.chain(admmjax.penalty(0.5), optax.sgd(0.5))
    opt_state, state = tx.init(params), admmjax.init(params, targets)

    @jax.jit
    def w_step(params, opt_state, state):
        def body(carry, _):
            params, opt_state = carry
            upd, opt_state = tx.update(jax.grad(loss)(params), opt_state, params, admm_state=state)
            return (optax.apply_updates(params, upd), opt_state), None

        return jax.lax.scan(body, (params, opt_state), None, length=100)[0]

    update = jax.jit(admmjax.update)
    primal = []
    for _ in range(15):
        params, opt_state = w_step(params, opt_state, state)
        state, info = update(state, params, targets)
        primal.append(float(info.primal_total))
    assert primal[-1] < 1e-2 * max(primal[0], 1e-3) or primal[-1] < 1e-4
    pruned, _ = admmjax.prune(params, targets)
    # Idempotent (a learned scale is recomputed from the leaf: equal up to rounding).
    again = admmjax.project(pruned, targets)["w"]
    np.testing.assert_allclose(np.asarray(again), np.asarray(pruned["w"]), rtol=1e-6)
    assert float(loss(pruned)) < 0.5 * 0.05**2 * 1.5  # at the noise floor: the truth found


def test_project_sharded_accepts_constraint_leaves():
    from admmjax import parallel

    mesh = parallel.data_mesh()
    rng = np.random.default_rng(0)
    tree = {
        "a": jnp.asarray(rng.standard_normal((16, 8)), jnp.float32),
        "b": jnp.asarray(rng.standard_normal((8, 8)), jnp.float32),
        "c": jnp.asarray(rng.standard_normal((8, 4)), jnp.float32),
    }
    t = {"a": NM(2, 4), "b": 0.5, "c": Quantized(1, scale="learned")}
    got = jax.jit(lambda x: parallel.project_sharded(x, t, mesh))(tree)
    want = admmjax.project(tree, t)
    for key in tree:
        np.testing.assert_allclose(np.asarray(got[key]), np.asarray(want[key]), rtol=1e-6)

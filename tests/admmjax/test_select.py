"""Exact selection (radix select, sort) against a brute-force argsort and ``lax.top_k``."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _bruteforce import arrays, ref_mask
from hypothesis import given
from hypothesis import strategies as st

import admmjax
from admmjax._select import (
    RADIX_MIN_SIZE,
    kth_largest_key,
    kth_largest_key_radix,
    kth_largest_key_sort,
    magnitude_keys,
)

keep_mask_jit = jax.jit(admmjax.keep_mask)  # k traced


@st.composite
def array_and_k(draw, allow_infinity=True, **kw):
    x = draw(arrays(allow_infinity=allow_infinity, **kw))
    k = draw(st.integers(0, x.size + 2))
    return x, k


@given(array_and_k())
def test_keep_mask_matches_bruteforce(xk):
    x, k = xk
    want = ref_mask(x, k)
    got = np.asarray(admmjax.keep_mask(jnp.asarray(x), k))
    assert got.shape == x.shape and got.dtype == np.bool_
    assert got.sum() == min(k, x.size)
    np.testing.assert_array_equal(got, want)


@given(array_and_k())
def test_keep_mask_jit_traced_k_matches_bruteforce(xk):
    x, k = xk
    got = np.asarray(keep_mask_jit(jnp.asarray(x), jnp.int32(k)))
    np.testing.assert_array_equal(got, ref_mask(x, k))


@given(array_and_k())
def test_keep_mask_equals_top_k_reference(xk):
    x, k = xk
    k = min(k, x.size)
    got = np.asarray(admmjax.keep_mask(jnp.asarray(x), k))
    ref = np.asarray(admmjax.keep_mask_top_k(jnp.asarray(x), k))
    np.testing.assert_array_equal(got, ref)
    assert ref.sum() == k


@given(arrays(ties=True), st.data())
def test_heavy_ties_break_by_lowest_index(x, data):
    k = data.draw(st.integers(0, x.size))
    got = np.asarray(admmjax.keep_mask(jnp.asarray(x), k)).ravel()
    mags = np.abs(x.astype(np.float32)).ravel()
    assert got.sum() == k
    if 0 < k < x.size:
        # Everything kept is >= everything dropped, and among entries equal to the
        # boundary magnitude, every kept one precedes every dropped one.
        assert mags[got].min() >= mags[~got].max()
        t = mags[got].min()
        kept_t = np.flatnonzero(got & (mags == t))
        dropped_t = np.flatnonzero(~got & (mags == t))
        if dropped_t.size:
            assert kept_t.max() < dropped_t.min()


@pytest.mark.parametrize("method", ["radix", "sort"])
@given(array_and_k())
def test_every_method_matches_bruteforce(method, xk):
    x, k = xk
    got = np.asarray(admmjax.keep_mask(jnp.asarray(x), k, method=method))
    np.testing.assert_array_equal(got, ref_mask(x, k))


@given(arrays(ties=True), st.data())
def test_radix_and_sort_thresholds_agree(x, data):
    keys = magnitude_keys(jnp.asarray(x))
    k = data.draw(st.integers(1, max(x.size, 1)))
    if x.size == 0:
        return
    radix = [int(v) for v in kth_largest_key_radix(keys, k)]
    sort = [int(v) for v in kth_largest_key_sort(keys, k)]
    assert radix == sort


@pytest.mark.parametrize(
    "platform, has_sort, has_scatter",
    [("cpu", False, True), ("cuda", True, False), ("rocm", True, False), ("tpu", True, False)],
)
def test_auto_method_is_chosen_per_platform(platform, has_sort, has_scatter):
    # Lowered for each backend from this CPU-only machine: the radix select's
    # scatter-adds on CPU only; GPUs and TPUs get the sort (faster there).
    def lowered(size: int) -> str:
        exported = jax.export.export(jax.jit(admmjax.keep_mask), platforms=[platform])(
            jnp.ones((size,), jnp.float32), 10
        )
        return exported.mlir_module()

    text = lowered(RADIX_MIN_SIZE)
    assert ("stablehlo.sort" in text) == has_sort
    assert ("stablehlo.scatter" in text) == has_scatter
    # Below RADIX_MIN_SIZE every platform sorts (cheaper than the 65,536-bin histograms).
    small = lowered(RADIX_MIN_SIZE - 1)
    assert "stablehlo.sort" in small and "stablehlo.scatter" not in small


def test_unknown_method_is_refused():
    with pytest.raises(ValueError, match=r"'topk'.*auto, radix, sort"):
        admmjax.keep_mask(jnp.ones(4), 2, method="topk")


def test_kth_largest_key_counts():
    x = jnp.array([3.0, -1.0, 2.0, 2.0, -2.0, 0.0, 5.0])
    keys = magnitude_keys(x)
    t, greater, equal = kth_largest_key(keys, 3)
    assert float(jax.lax.bitcast_convert_type(t, jnp.float32)) == 2.0
    assert int(greater) == 2 and int(equal) == 3
    t, greater, equal = kth_largest_key(keys, 7)
    assert float(jax.lax.bitcast_convert_type(t, jnp.float32)) == 0.0
    assert int(greater) == 6 and int(equal) == 1


def test_magnitude_keys_are_monotone_in_abs():
    vals = np.array([0.0, 1e-45, 1e-38, 1e-3, 0.5, 1.0, 3e38, np.inf], np.float32)
    keys = np.asarray(magnitude_keys(jnp.asarray(np.concatenate([vals, -vals]))))
    assert np.all(np.diff(keys[: vals.size].astype(np.int64)) > 0)
    np.testing.assert_array_equal(keys[: vals.size], keys[vals.size :])  # sign ignored


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float16, jnp.bfloat16])
def test_subnormals_are_ordered(dtype):
    # Flush-to-zero in the selection would tie these with 0.0 and keep the wrong ones.
    tiny = float(jnp.finfo(dtype).smallest_subnormal)
    x = jnp.array([0.0, tiny, 0.0, 2 * tiny, 0.0, -3 * tiny], dtype)
    for f in (admmjax.keep_mask, keep_mask_jit):
        got = np.asarray(f(x, 3))
        np.testing.assert_array_equal(got, [False, True, False, True, False, True])


def test_zero_k_and_full_k():
    x = jnp.arange(1.0, 13.0).reshape(3, 4)
    assert not np.asarray(admmjax.keep_mask(x, 0)).any()
    assert np.asarray(admmjax.keep_mask(x, 12)).all()
    assert np.asarray(admmjax.keep_mask(x, 100)).all()  # clipped to the size
    assert not np.asarray(keep_mask_jit(x, jnp.int32(-3))).any()
    assert not np.asarray(admmjax.keep_mask_top_k(x, 0)).any()


def test_empty_leaf():
    x = jnp.zeros((0, 3))
    assert admmjax.keep_mask(x, 2).shape == (0, 3)


def test_nan_ranks_above_inf_in_raw_selection():
    x = jnp.array([1.0, jnp.nan, jnp.inf, -5.0])
    np.testing.assert_array_equal(np.asarray(admmjax.keep_mask(x, 1)), [0, 1, 0, 0])
    np.testing.assert_array_equal(np.asarray(keep_mask_jit(x, 2)), [0, 1, 1, 0])


def test_large_leaf_matches_top_k_with_ties():
    # 200k entries drawn from 1000 values: many ties straddle the threshold, and both
    # radix passes (high and low 16 bits) matter.
    rng = np.random.default_rng(0)
    x = rng.choice(np.linspace(-1, 1, 1000, dtype=np.float32), 200_000)
    for k in (1, 777, 100_000, 199_999):
        got = np.asarray(keep_mask_jit(jnp.asarray(x), k))
        np.testing.assert_array_equal(got, ref_mask(x, k))
        np.testing.assert_array_equal(got, np.asarray(admmjax.keep_mask_top_k(jnp.asarray(x), k)))

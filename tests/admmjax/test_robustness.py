"""Issue 22, library defects: the library under ``jax.jit`` and ``keep_pruned``'s masks."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import admmjax


def _params() -> dict:
    rng = np.random.default_rng(0)
    return {"w": jnp.asarray(rng.standard_normal((20, 10)), jnp.float32), "b": jnp.zeros(10)}


# --- defect 6: concrete params closed over inside jit -----------------------------------


@pytest.mark.parametrize("fn", ["project", "init", "prune"])
def test_library_on_closed_over_params_inside_jit(fn):
    params = _params()
    targets = {"w": 0.7, "b": None}
    call = {
        "project": lambda: admmjax.project(params, targets),
        "init": lambda: admmjax.init(params, targets).z,
        "prune": lambda: admmjax.prune(params, targets)[0],
    }[fn]
    eager = call()
    jitted = jax.jit(call)()
    np.testing.assert_array_equal(np.asarray(jitted["w"]), np.asarray(eager["w"]))
    assert int(jnp.sum(jitted["w"] != 0)) == 200 - 140


def test_closed_over_nan_is_still_refused_inside_jit():
    params = _params()
    params["w"] = params["w"].at[3, 4].set(jnp.nan)
    with pytest.raises(ValueError, match="'w' contains NaN"):
        jax.jit(lambda: admmjax.project(params, {"w": 0.5, "b": None}))()


# --- defect 8: keep_pruned refuses masks that do not fit ---------------------------------


def _mask_params() -> dict:
    return {"fc": {"kernel": jnp.ones((6, 4)), "bias": jnp.ones(4)}}


@pytest.mark.parametrize("shape", [(1, 4), (4,), (6, 1), (4, 6)])
def test_keep_pruned_refuses_broadcastable_mask_shapes(shape):
    masks = {"fc": {"kernel": jnp.ones(shape, bool), "bias": None}}
    tx = admmjax.keep_pruned(optax.sgd(0.1), masks)
    with pytest.raises(
        ValueError, match=r"'fc/kernel' has shape .*expected the leaf's shape \(6, 4\)"
    ):
        tx.init(_mask_params())
    with pytest.raises(ValueError, match="'fc/kernel'"):
        admmjax.apply_masks(_mask_params(), masks)


def test_keep_pruned_refuses_non_bool_masks_at_construction():
    masks = {"fc": {"kernel": -jnp.ones((6, 4), jnp.int32), "bias": None}}
    with pytest.raises(TypeError, match="'fc/kernel' has dtype int32; expected bool"):
        admmjax.keep_pruned(optax.sgd(0.1), masks)


def test_keep_pruned_names_missing_and_unexpected_paths():
    tx = admmjax.keep_pruned(
        optax.sgd(0.1), {"fc": {"kernal": jnp.ones((6, 4), bool), "bias": None}}
    )
    with pytest.raises(
        ValueError, match=r"missing paths \['fc/kernel'\].*unexpected paths \['fc/kernal'\]"
    ):
        tx.init(_mask_params())


def test_keep_pruned_with_fitting_masks_keeps_zeros():
    params = _mask_params()
    pruned, masks = admmjax.prune(params, {"fc": {"kernel": 0.5, "bias": None}})
    tx = admmjax.keep_pruned(optax.adam(0.1), masks)
    state = tx.init(pruned)
    grads = jax.tree.map(jnp.ones_like, pruned)
    updates, _ = jax.jit(tx.update)(grads, state, pruned)
    new = optax.apply_updates(pruned, updates)
    np.testing.assert_array_equal(
        np.asarray(new["fc"]["kernel"])[~np.asarray(masks["fc"]["kernel"])], 0
    )

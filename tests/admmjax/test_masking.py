"""Hard pruning and masked retraining: pruned weights must stay exactly 0.0."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from _bruteforce import keep_of, ref_mask

import admmjax
from admmjax import Keep


def make_params():
    rng = np.random.default_rng(0)
    return {
        "conv": {
            "kernel": jnp.asarray(rng.standard_normal((3, 3, 2, 4)), jnp.float32),
            "bias": jnp.asarray(rng.standard_normal(4), jnp.float32),
        },
        "fc": {
            "kernel": jnp.asarray(rng.standard_normal((12, 5)), jnp.float32),
            "bias": jnp.asarray(rng.standard_normal(5), jnp.float32),
        },
    }


TARGETS = {"conv": {"kernel": 0.75, "bias": None}, "fc": {"kernel": Keep(7), "bias": None}}


def test_prune_exact_counts_and_masks():
    params = make_params()
    pruned, masks = admmjax.prune(params, TARGETS)
    for layer, k in (("conv", keep_of(0.75, 72)), ("fc", 7)):
        w = np.asarray(params[layer]["kernel"])
        m = np.asarray(masks[layer]["kernel"])
        assert m.dtype == np.bool_ and m.shape == w.shape and m.sum() == k
        np.testing.assert_array_equal(m, ref_mask(w, k))
        np.testing.assert_array_equal(np.asarray(pruned[layer]["kernel"]), np.where(m, w, 0))
        assert masks[layer]["bias"] is None
        np.testing.assert_array_equal(np.asarray(pruned[layer]["bias"]), params[layer]["bias"])


def test_prune_mask_has_k_entries_even_with_fewer_nonzeros():
    params = {"w": jnp.zeros((4, 4)).at[0, 0].set(1.0)}
    pruned, masks = admmjax.prune(params, {"w": Keep(5)})
    assert int(masks["w"].sum()) == 5  # the whole budget is available to retraining
    assert bool(masks["w"][0, 0])
    assert int(jnp.count_nonzero(pruned["w"])) == 1


def test_apply_masks():
    tree = {"a": jnp.arange(1.0, 7.0).reshape(2, 3), "b": jnp.ones(2)}
    masks = {"a": jnp.array([[True, False, True], [False, False, True]]), "b": None}
    out = admmjax.apply_masks(tree, masks)
    np.testing.assert_array_equal(np.asarray(out["a"]), [[1, 0, 3], [0, 0, 6]])
    np.testing.assert_array_equal(np.asarray(out["b"]), [1, 1])
    assert out["a"].dtype == jnp.float32
    out16 = admmjax.apply_masks({"a": tree["a"].astype(jnp.bfloat16), "b": tree["b"]}, masks)
    assert out16["a"].dtype == jnp.bfloat16


OPTIMIZERS = {
    "adamw": lambda: optax.adamw(1e-2, weight_decay=0.1),
    "sgd-momentum": lambda: optax.sgd(1e-2, momentum=0.9),
    "sgd-nesterov": lambda: optax.sgd(1e-2, momentum=0.9, nesterov=True),
    "adam": lambda: optax.adam(1e-2),
}


def _loss(params):
    # Pulls every weight, pruned ones included, towards 1.0: the gradient at a pruned
    # entry is nonzero, so only the wrapper can keep it at zero.
    return sum(jnp.sum((p - 1.0) ** 2) for p in jax.tree.leaves(params))


def _train(tx, params, steps):
    opt_state = tx.init(params)

    @jax.jit
    def step(params, opt_state):
        grads = jax.grad(_loss)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    history = []
    for _ in range(steps):
        params, opt_state = step(params, opt_state)
        history.append(params)
    return params, opt_state, history


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_keep_pruned_holds_zeros_through_200_steps(name):
    params = make_params()
    pruned, masks = admmjax.prune(params, TARGETS)
    tx = admmjax.keep_pruned(OPTIMIZERS[name](), masks)
    final, opt_state, history = _train(tx, pruned, 200)
    for layer in ("conv", "fc"):
        m = np.asarray(masks[layer]["kernel"])
        for p in [*history[::20], final]:
            w = np.asarray(p[layer]["kernel"])
            assert np.all(w[~m] == 0.0)  # exactly zero, not merely small
            assert not np.signbit(w[~m]).any()  # not even -0.0
        moved = np.asarray(final[layer]["kernel"])[m] - np.asarray(pruned[layer]["kernel"])[m]
        assert np.all(np.abs(moved) > 1e-3)  # kept weights train
        assert np.abs(np.asarray(final[layer]["bias"]) - params[layer]["bias"]).min() > 1e-3
        # The incoming gradient is masked too, so the inner optimizer's moments /
        # momentum never see the pruned entries.
        seen = 0
        for path, leaf in jax.tree_util.tree_flatten_with_path(opt_state.inner_state)[0]:
            keys = [getattr(k, "key", None) for k in path]
            if layer in keys and "kernel" in keys:
                assert np.all(np.asarray(leaf)[~m] == 0.0)
                seen += 1
        assert seen >= 1
    # Masks live in the optimizer state and survive jit unchanged.
    assert isinstance(opt_state, admmjax.KeepPrunedState)
    np.testing.assert_array_equal(
        np.asarray(opt_state.masks["fc"]["kernel"]), masks["fc"]["kernel"]
    )
    assert opt_state.masks["fc"]["bias"] is None


@pytest.mark.parametrize("name", ["adamw", "sgd-momentum"])
def test_without_wrapper_pruned_weights_revive(name):
    # Control for the test above: the same loop with the bare optimizer (or with only
    # the gradient masked, after momentum has built up) moves the pruned weights.
    params = make_params()
    pruned, masks = admmjax.prune(params, TARGETS)
    final, _, _ = _train(OPTIMIZERS[name](), pruned, 20)
    m = np.asarray(masks["fc"]["kernel"])
    assert np.all(np.asarray(final["fc"]["kernel"])[~m] != 0.0)

    tx = OPTIMIZERS[name]()
    opt_state = tx.init(pruned)
    grads = jax.grad(_loss)(pruned)
    for _ in range(3):  # momentum / moments from dense training
        _, opt_state = tx.update(grads, opt_state, pruned)
    masked_grads = admmjax.apply_masks(grads, masks)
    updates, _ = tx.update(masked_grads, opt_state, pruned)
    assert np.all(np.asarray(updates["fc"]["kernel"])[~m] != 0.0)
    # keep_pruned zeros the update however the inner state was built.
    wrapped = admmjax.keep_pruned(tx, masks)
    w_updates, _ = wrapped.update(grads, admmjax.KeepPrunedState(opt_state, masks), pruned)
    assert np.all(np.asarray(w_updates["fc"]["kernel"])[~m] == 0.0)


def test_keep_pruned_passes_extra_args_and_state_is_jittable():
    params = make_params()
    pruned, masks = admmjax.prune(params, TARGETS)
    state = admmjax.init(pruned, TARGETS)
    # keep_pruned around a chain that needs admm_state: extra args reach the inner tx.
    tx = admmjax.keep_pruned(optax.chain(admmjax.penalty(0.1), optax.sgd(0.1)), masks)
    opt_state = jax.jit(tx.init)(pruned)
    grads = jax.grad(_loss)(pruned)
    updates, new_state = jax.jit(lambda g, o, p, s: tx.update(g, o, p, admm_state=s))(
        grads, opt_state, pruned, state
    )
    m = np.asarray(masks["conv"]["kernel"])
    assert np.all(np.asarray(updates["conv"]["kernel"])[~m] == 0.0)
    assert np.all(np.asarray(updates["conv"]["kernel"])[m] != 0.0)
    leaves_in, leaves_out = jax.tree.leaves(opt_state.masks), jax.tree.leaves(new_state.masks)
    for a, b in zip(leaves_in, leaves_out, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))

"""make_train_step: plain training, ADMM W-step, masked retraining."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import admmjax

RNG = np.random.default_rng(0)
X = jnp.asarray(RNG.standard_normal((16, 6)), jnp.float32)
Y = jnp.asarray(RNG.standard_normal((16, 2)), jnp.float32)
TARGETS = {"w": 0.5, "b": None}


def fresh_params():
    rng = np.random.default_rng(1)
    return {
        "w": jnp.asarray(rng.standard_normal((6, 2)), jnp.float32),
        "b": jnp.asarray(rng.standard_normal(2), jnp.float32),
    }


def loss_fn(params, x, y):
    return jnp.mean((x @ params["w"] + params["b"] - y) ** 2)


def loss_aux(params, x, y):
    pred = x @ params["w"] + params["b"]
    return jnp.mean((pred - y) ** 2), {"mean_pred": jnp.mean(pred)}


def reference_step(tx, params, opt_state, admm_state=None):
    grads = jax.grad(loss_fn)(params, X, Y)
    extra = {} if admm_state is None else {"admm_state": admm_state}
    updates, opt_state = tx.update(grads, opt_state, params, **extra)
    return optax.apply_updates(params, updates), opt_state


def assert_trees_close(a, b, **kw):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), **kw)


@pytest.mark.parametrize("jit", [True, False])
def test_plain_step_matches_manual_optax(jit):
    tx = optax.adam(1e-2)
    step = admmjax.make_train_step(loss_fn, tx, jit=jit, donate=False)
    params, opt_state = fresh_params(), tx.init(fresh_params())
    ref_p, ref_o = fresh_params(), tx.init(fresh_params())
    losses = []
    for _ in range(5):
        params, opt_state, loss = step(params, opt_state, X, Y)
        assert float(loss) == pytest.approx(float(loss_fn(ref_p, X, Y)), rel=1e-5)
        ref_p, ref_o = reference_step(tx, ref_p, ref_o)
        losses.append(float(loss))
    assert_trees_close(params, ref_p, rtol=1e-5, atol=1e-6)
    assert losses[-1] < losses[0]


def test_admm_w_step_with_penalty():
    params = fresh_params()
    state = admmjax.init(params, TARGETS)
    # A nonzero U so the penalty is not just W - P(W).
    state, _ = admmjax.update(state, jax.tree.map(lambda p: 1.1 * p, params), TARGETS)
    tx = optax.chain(admmjax.penalty(0.5), optax.sgd(0.1))
    step = admmjax.make_train_step(loss_fn, tx, donate=False)
    p1, _, _ = step(params, tx.init(params), X, Y, admm_state=state)
    want, _ = reference_step(tx, params, tx.init(params), state)
    assert_trees_close(p1, want, rtol=1e-5, atol=1e-6)
    # Exactly the loss gradient plus rho (W - Z + U), times -lr.
    g = jax.grad(loss_fn)(params, X, Y)
    pen = 0.5 * (params["w"] - state.z["w"] + state.u["w"])
    np.testing.assert_allclose(p1["w"], params["w"] - 0.1 * (g["w"] + pen), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(p1["b"], params["b"] - 0.1 * g["b"], rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="admm_state"):
        step(params, tx.init(params), X, Y)  # the penalty needs the state


def test_masked_retraining_step():
    pruned, masks = admmjax.prune(fresh_params(), TARGETS)
    tx = admmjax.keep_pruned(optax.adamw(1e-2, weight_decay=0.1), masks)
    step = admmjax.make_train_step(loss_fn, tx)  # donates params and optimizer state
    # np.asarray of a CPU array is a zero-copy view that pins the buffer against
    # donation; read copies so the originals stay donatable as in real use.
    start = np.asarray(jnp.copy(pruned["w"]))
    m = np.asarray(jnp.copy(masks["w"]))
    params, opt_state = pruned, tx.init(pruned)
    for _ in range(50):
        params, opt_state, _ = step(params, opt_state, X, Y)
    assert np.all(np.asarray(params["w"])[~m] == 0.0)
    assert np.all(np.asarray(params["w"])[m] != start[m])
    np.testing.assert_array_equal(np.asarray(opt_state.masks["w"]), m)
    # The caller's masks are not the donated state's buffers: still usable afterwards.
    assert not masks["w"].is_deleted()
    np.testing.assert_array_equal(np.asarray(admmjax.apply_masks(params, masks)["w"]), params["w"])


def test_has_aux():
    tx = optax.sgd(0.1)
    step = admmjax.make_train_step(loss_aux, tx, has_aux=True, donate=False)
    params = fresh_params()
    out = step(params, tx.init(params), X, Y)
    assert len(out) == 4
    new_params, _, loss, aux = out
    want_loss, want_aux = loss_aux(params, X, Y)
    assert float(loss) == pytest.approx(float(want_loss), rel=1e-6)
    assert float(aux["mean_pred"]) == pytest.approx(float(want_aux["mean_pred"]), rel=1e-5)
    want, _ = reference_step(tx, params, tx.init(params))
    assert_trees_close(new_params, want, rtol=1e-5, atol=1e-6)


def test_donation():
    tx = optax.adam(1e-2)
    params = fresh_params()
    opt_state = tx.init(params)
    step = admmjax.make_train_step(loss_fn, tx, donate=True)
    new_params, new_state, _ = step(params, opt_state, X, Y)
    assert all(x.is_deleted() for x in jax.tree.leaves(params))
    assert all(x.is_deleted() for x in jax.tree.leaves(opt_state))
    assert not any(x.is_deleted() for x in jax.tree.leaves(new_params))
    assert not X.is_deleted()  # batch arguments are never donated
    step(new_params, new_state, X, Y)  # the outputs feed the next step

    params = fresh_params()
    opt_state = tx.init(params)
    keep = admmjax.make_train_step(loss_fn, tx, donate=False)
    keep(params, opt_state, X, Y)
    assert not any(x.is_deleted() for x in jax.tree.leaves((params, opt_state)))
    keep(params, opt_state, X, Y)  # inputs reusable

"""ADMM state, Z/U updates, the penalty transform and a small end-to-end solve."""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from _bruteforce import keep_of, ref_project

import admmjax
from admmjax import Keep


def make_params(seed=0):
    rng = np.random.default_rng(seed)
    return {
        "dense1": {
            "kernel": jnp.asarray(rng.standard_normal((6, 5)), jnp.float32),
            "bias": jnp.asarray(rng.standard_normal(5), jnp.float32),
        },
        "dense2": {
            "kernel": jnp.asarray(rng.standard_normal((5, 3)), jnp.float32),
            "bias": jnp.asarray(rng.standard_normal(3), jnp.float32),
        },
    }


TARGETS = {
    "dense1": {"kernel": 0.8, "bias": None},
    "dense2": {"kernel": Keep(4), "bias": None},
}
K = {"dense1": keep_of(0.8, 30), "dense2": 4}


def perturbed(params, scale, seed):
    rng = np.random.default_rng(seed)
    return jax.tree.map(
        lambda p: p + scale * jnp.asarray(rng.standard_normal(p.shape), p.dtype), params
    )


def state_after_updates(n=2):
    """A state with nonzero U and Z != W, after ``n`` ADMM iterations."""
    params = make_params()
    state = admmjax.init(params, TARGETS)
    for i in range(n):
        params = perturbed(params, 0.3, seed=10 + i)
        state, _ = admmjax.update(state, params, TARGETS)
    return perturbed(params, 0.3, seed=99), state


# --- init / update -------------------------------------------------------------------


def test_init():
    params = make_params()
    state = admmjax.init(params, TARGETS)
    assert int(state.count) == 0
    for layer in ("dense1", "dense2"):
        w = np.asarray(params[layer]["kernel"])
        np.testing.assert_array_equal(
            np.asarray(state.z[layer]["kernel"]), ref_project(w, K[layer])
        )
        np.testing.assert_array_equal(np.asarray(state.u[layer]["kernel"]), np.zeros_like(w))
        assert state.z[layer]["bias"] is None and state.u[layer]["bias"] is None


def test_update_math_matches_numpy():
    params, state = state_after_updates(2)
    new, info = admmjax.update(state, params, TARGETS, eps=1e-3)
    assert int(new.count) == 3
    sq_p = sq_d = 0.0
    for layer in ("dense1", "dense2"):
        w = np.asarray(params[layer]["kernel"], np.float64)
        u = np.asarray(state.u[layer]["kernel"], np.float64)
        z_old = np.asarray(state.z[layer]["kernel"], np.float64)
        assert np.abs(u).sum() > 0  # the state under test is not trivial
        z = ref_project(w + u, K[layer])
        np.testing.assert_allclose(np.asarray(new.z[layer]["kernel"]), z, rtol=1e-6)
        np.testing.assert_allclose(np.asarray(new.u[layer]["kernel"]), u + w - z, atol=1e-6)
        primal, dual = np.linalg.norm(w - z), np.linalg.norm(z - z_old)
        assert float(info.primal[layer]["kernel"]) == pytest.approx(primal, rel=1e-5)
        assert float(info.dual[layer]["kernel"]) == pytest.approx(dual, rel=1e-5)
        assert info.primal[layer]["bias"] is None and new.z[layer]["bias"] is None
        assert np.count_nonzero(np.asarray(new.z[layer]["kernel"])) == K[layer]
        sq_p, sq_d = sq_p + primal**2, sq_d + dual**2
    assert float(info.primal_total) == pytest.approx(np.sqrt(sq_p), rel=1e-5)
    assert float(info.dual_total) == pytest.approx(np.sqrt(sq_d), rel=1e-5)
    assert not bool(info.converged)
    # Jitted, with the targets traced, the result is the same.
    new_j, info_j = jax.jit(admmjax.update)(state, params, TARGETS)
    for a, b in zip(jax.tree.leaves(new_j), jax.tree.leaves(new), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)
    assert float(info_j.primal_total) == pytest.approx(float(info.primal_total), rel=1e-5)


def test_converged_flag_against_eps():
    params = make_params()
    state = admmjax.init(params, TARGETS)
    params2 = perturbed(params, 1e-4, seed=3)
    _, info = admmjax.update(state, params2, TARGETS)
    largest = max(float(x) for x in jax.tree.leaves((info.primal, info.dual)))
    assert 0 < largest
    assert bool(admmjax.update(state, params2, TARGETS, eps=largest * 1.01)[1].converged)
    assert not bool(admmjax.update(state, params2, TARGETS, eps=largest * 0.99)[1].converged)
    # Feasible weights: W = Z = P(W), U = 0 -> both residuals exactly zero.
    feasible = admmjax.project(params, TARGETS)
    state = admmjax.init(feasible, TARGETS)
    _, info = admmjax.update(state, feasible, TARGETS, eps=0.0)
    assert bool(info.converged) and float(info.primal_total) == 0.0


def test_update_rejects_targets_that_do_not_match_state():
    params = make_params()
    state = admmjax.init(params, TARGETS)
    other = {"dense1": {"kernel": 0.5, "bias": 0.5}, "dense2": {"kernel": None, "bias": None}}
    with pytest.raises(ValueError, match=r"admmjax\.init"):
        admmjax.update(state, params, other)


# --- the penalty ------------------------------------------------------------------------------


def penalty_updates(rho, params, state, grads=None):
    tx = admmjax.penalty(rho)
    grads = jax.tree.map(jnp.zeros_like, params) if grads is None else grads
    updates, _ = tx.update(grads, tx.init(params), params, admm_state=state)
    return updates


@pytest.mark.parametrize(
    "rho, rho_of",
    [
        (0.37, {"dense1": 0.37, "dense2": 0.37}),
        (
            {
                "dense1": {"kernel": 0.2, "bias": 5.0},
                "dense2": {"kernel": 1.5, "bias": None},
            },
            {"dense1": 0.2, "dense2": 1.5},
        ),
        # A schedule of the ADMM count (count == 2 in the state): 0.1 * 1.5**2.
        (lambda c: 0.1 * 1.5**c, {"dense1": 0.225, "dense2": 0.225}),
        (
            {
                "dense1": {"kernel": lambda c: 0.1 * (c + 1), "bias": None},
                "dense2": {"kernel": 2.0, "bias": None},
            },
            {"dense1": 0.3, "dense2": 2.0},
        ),
    ],
    ids=["scalar", "per-leaf", "schedule", "per-leaf-schedule"],
)
def test_penalty_is_gradient_of_penalty_value(rho, rho_of):
    params, state = state_after_updates(2)
    assert int(state.count) == 2
    want = jax.grad(admmjax.penalty_value)(params, state, rho)
    got = penalty_updates(rho, params, state)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-7)
    # ... and both are rho (W - Z + U) at targeted leaves, zero at dense ones.
    value = 0.0
    for layer in ("dense1", "dense2"):
        r = np.asarray(
            params[layer]["kernel"] - state.z[layer]["kernel"] + state.u[layer]["kernel"]
        ).astype(np.float64)
        np.testing.assert_allclose(got[layer]["kernel"], rho_of[layer] * r, rtol=1e-5, atol=1e-7)
        np.testing.assert_array_equal(np.asarray(got[layer]["bias"]), 0.0)
        value += 0.5 * rho_of[layer] * float(np.sum(np.square(r)))
    assert float(admmjax.penalty_value(params, state, rho)) == pytest.approx(value, rel=1e-5)


def test_penalty_leaves_untargeted_leaves_unchanged():
    params, state = state_after_updates(1)
    grads = perturbed(jax.tree.map(jnp.zeros_like, params), 1.0, seed=5)
    out = penalty_updates(0.5, params, state, grads)
    for layer in ("dense1", "dense2"):
        np.testing.assert_array_equal(
            np.asarray(out[layer]["bias"]), np.asarray(grads[layer]["bias"])
        )
        assert not np.array_equal(
            np.asarray(out[layer]["kernel"]), np.asarray(grads[layer]["kernel"])
        )


def test_penalty_requires_admm_state():
    params, state = state_after_updates(1)
    tx = optax.chain(admmjax.penalty(1e-3), optax.adam(1e-3))
    opt_state = tx.init(params)
    with pytest.raises(ValueError, match="admm_state"):
        tx.update(params, opt_state, params)
    with pytest.raises(ValueError, match="params"):
        tx.update(params, opt_state, admm_state=state)
    with pytest.raises(TypeError, match="ADMMState"):
        tx.update(params, opt_state, params, admm_state={"z": 1})


def test_penalty_rejects_bad_rho_tree():
    params, state = state_after_updates(1)
    with pytest.raises(ValueError, match="rho must be"):
        penalty_updates({"dense1": 0.1}, params, state)


def test_penalty_before_adam_under_jit():
    params, state = state_after_updates(2)
    grads = perturbed(jax.tree.map(jnp.zeros_like, params), 1.0, seed=7)
    rho, lr = 0.3, 1e-2
    tx = optax.chain(admmjax.penalty(rho), optax.adam(lr))
    adam = optax.adam(lr)

    @jax.jit
    def step(params, opt_state, admm_state):
        updates, opt_state = tx.update(grads, opt_state, params, admm_state=admm_state)
        return optax.apply_updates(params, updates), opt_state

    p_ref, o_ref, opt_state = params, adam.init(params), tx.init(params)
    p = params
    for _ in range(3):
        p, opt_state = step(p, opt_state, state)
        # Reference: Adam on the augmented gradient g + rho (W - Z + U).
        g_aug = jax.tree.map(
            lambda g, w, z, u: g if z is None else g + rho * (w - z + u),
            grads,
            p_ref,
            state.z,
            state.u,
            is_leaf=lambda x: x is None,
        )
        upd, o_ref = adam.update(g_aug, o_ref, p_ref)
        p_ref = optax.apply_updates(p_ref, upd)
    for a, b in zip(jax.tree.leaves(p), jax.tree.leaves(p_ref), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)


# --- end to end ----------------------------------------------------------------------------


def test_admm_recovers_sparse_least_squares():
    rng = np.random.default_rng(0)
    m, d, k = 200, 40, 5
    a = rng.standard_normal((m, d)).astype(np.float32)
    x_true = np.zeros((d, 1), np.float32)
    support = rng.choice(d, k, replace=False)
    x_true[support, 0] = rng.choice([-1, 1], k) * rng.uniform(0.5, 1.5, k)
    b = a @ x_true + 0.3 * rng.standard_normal((m, 1)).astype(np.float32)
    a_j, b_j = jnp.asarray(a), jnp.asarray(b)

    def loss(params):
        r = a_j @ params["w"] + params["b"] - b_j
        return 0.5 * jnp.mean(r**2)

    dense, *_ = np.linalg.lstsq(a, b, rcond=None)
    params = {"w": jnp.asarray(dense), "b": jnp.zeros((1,))}
    targets = {"w": Keep(k), "b": None}
    # Gradient descent solves each W-step accurately (Hessian ~ I + rho), so the
    # primal residual's decrease is clean enough to assert step by step.
    tx = optax.chain(admmjax.penalty(0.5), optax.sgd(0.5))
    opt_state = tx.init(params)
    state = admmjax.init(params, targets)

    @jax.jit
    def w_step(params, opt_state, state):
        def body(carry, _):
            params, opt_state = carry
            g = jax.grad(loss)(params)
            upd, opt_state = tx.update(g, opt_state, params, admm_state=state)
            return (optax.apply_updates(params, upd), opt_state), None

        return jax.lax.scan(body, (params, opt_state), None, length=100)[0]

    update = jax.jit(admmjax.update)
    primal = []
    for _ in range(20):
        params, opt_state = w_step(params, opt_state, state)
        state, info = update(state, params, targets)
        primal.append(float(info.primal_total))
    assert primal[0] > 0.05  # the dense start is far from the constraint set
    assert all(b < a for a, b in itertools.pairwise(primal))  # decreases every iteration
    assert primal[-1] < 0.01 * primal[0]
    pruned, _masks = admmjax.prune(params, targets)
    w = np.asarray(pruned["w"])
    assert np.count_nonzero(w) == k
    np.testing.assert_array_equal(np.flatnonzero(w[:, 0]), np.sort(support))
    # The loss of the hard-pruned ADMM solution is that of least squares on the true support.
    oracle = np.zeros_like(dense)
    oracle[support], *_ = np.linalg.lstsq(a[:, support], b, rcond=None)
    oracle_loss = float(loss({"w": jnp.asarray(oracle), "b": jnp.zeros((1,))}))
    assert float(loss(pruned)) <= 1.05 * oracle_loss
    assert float(loss(pruned)) < 0.06  # noise floor 0.5 * 0.3**2 = 0.045

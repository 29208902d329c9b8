"""admmjax.admm: bit-identical to the hand-written init / penalty / update loop."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import admmjax

EVERY = 3


def _problem():
    k = jax.random.split(jax.random.key(0), 3)
    params = {
        "a": {"kernel": jax.random.normal(k[0], (20, 10))},
        "b": jax.random.normal(k[1], (10,)),
    }
    batches = jax.random.normal(k[2], (3 * EVERY, 4, 20))
    return params, admmjax.uniform_sparsity(params, 0.8), batches


def _loss(p, x):
    return jnp.sum(jnp.tanh(x @ p["a"]["kernel"] + p["b"]) ** 2)


def test_matches_manual_loop_bit_for_bit():
    params, targets, batches = _problem()
    tx = admmjax.admm(optax.adam(1e-2), targets, rho=0.1, every=EVERY)
    ref = optax.chain(admmjax.penalty(0.1), optax.adam(1e-2))

    @jax.jit
    def step(p, s, x):
        u, s = tx.update(jax.grad(_loss)(p, x), s, p)
        return optax.apply_updates(p, u), s

    @jax.jit
    def manual_step(p, s, x, a):
        u, s = ref.update(jax.grad(_loss)(p, x), s, p, admm_state=a)
        return optax.apply_updates(p, u), s

    p, s = params, tx.init(params)
    q, r, a = params, ref.init(params), admmjax.init(params, targets)
    for i, x in enumerate(batches):
        p, s = step(p, s, x)
        q, r = manual_step(q, r, x, a)
        if (i + 1) % EVERY == 0:
            a, info = admmjax.update(a, q, targets)
    got = admmjax.admm_state(s)
    assert int(got.admm.count) == len(batches) // EVERY
    for x, y in zip(jax.tree.leaves((p, got.admm)), jax.tree.leaves((q, a)), strict=True):
        assert jnp.array_equal(x, y)
    # The residuals are norms of bit-identical arrays, but inside the step XLA may fuse
    # and order their sums differently from a separate `update` (the last float bit).
    for x, y in zip(jax.tree.leaves(got.info), jax.tree.leaves(info), strict=True):
        np.testing.assert_allclose(x, y, rtol=1e-6)


def test_float32_state_for_bf16_params():
    params, targets, _ = _problem()
    params = jax.tree.map(lambda x: x.astype(jnp.bfloat16), params)
    tx = admmjax.admm(optax.sgd(1e-2), targets, rho=0.1, every=1, state_dtype=jnp.float32)
    s = tx.init(params)
    u, s = jax.jit(tx.update)(jax.tree.map(jnp.zeros_like, params), s, params)
    assert jax.tree.leaves(u)[0].dtype == jnp.bfloat16
    assert admmjax.admm_state(s).admm.u["a"]["kernel"].dtype == jnp.float32


def test_errors():
    params, targets, _ = _problem()
    with pytest.raises(ValueError, match="every must be"):
        admmjax.admm(optax.sgd(1.0), targets, rho=0.1, every=0)
    with pytest.raises(ValueError, match="exactly one admmjax"):
        admmjax.admm_state(optax.adam(1e-3).init(params))

"""The library on Flax NNX objects: ``nnx.State`` targets and projection, the ADMM penalty
inside ``nnx.Optimizer``. (The library itself never imports flax; these tests do.)"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import admmjax
from admmjax import Keep


def perturbed(params, scale, seed):
    rng = np.random.default_rng(seed)
    return jax.tree.map(
        lambda p: p + scale * jnp.asarray(rng.standard_normal(p.shape), p.dtype), params
    )


def counts_by_path(params, targets):
    counts = admmjax.target_counts(params, targets)
    leaves = jax.tree_util.tree_flatten_with_path(counts, is_leaf=lambda x: x is None)[0]
    return {admmjax.path_str(p): c for p, c in leaves}


class Net(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.conv1 = nnx.Conv(1, 4, kernel_size=(3, 3), rngs=rngs)
        self.fc1 = nnx.Linear(36, 8, rngs=rngs)
        self.fc2 = nnx.Linear(8, 3, rngs=rngs)

    def __call__(self, x):
        x = nnx.relu(self.conv1(x))
        x = x[:, :3, :3, :].reshape(x.shape[0], -1)
        return self.fc2(nnx.relu(self.fc1(x)))


def nnx_params():
    model = Net(nnx.Rngs(0))
    _, state = nnx.split(model, nnx.Param)
    return state


def test_nnx_state_paths_targets_and_projection():
    state = nnx_params()
    paths = admmjax.leaf_paths(state)
    assert paths == [
        "conv1/bias",
        "conv1/kernel",
        "fc1/bias",
        "fc1/kernel",
        "fc2/bias",
        "fc2/kernel",
    ]
    t = admmjax.sparsity_by_path(state, {"fc1/kernel": 0.75, "conv*": Keep(3)})
    assert counts_by_path(state, t) == {
        "conv1/bias": 3,  # glob "conv*" matches the bias too
        "conv1/kernel": 3,
        "fc1/bias": None,
        "fc1/kernel": 72,  # 288 - 216
        "fc2/bias": None,
        "fc2/kernel": None,
    }
    t = admmjax.uniform_sparsity(state, 0.5)
    assert counts_by_path(state, t) == {
        "conv1/bias": None,
        "conv1/kernel": 18,
        "fc1/bias": None,
        "fc1/kernel": 144,
        "fc2/bias": None,
        "fc2/kernel": 12,
    }
    projected = admmjax.project(state, t)
    assert isinstance(projected, nnx.State)
    assert int(jnp.count_nonzero(projected["fc1"]["kernel"][...])) == 144
    np.testing.assert_array_equal(projected["fc1"]["bias"][...], state["fc1"]["bias"][...])
    # The projected state loads back into a model.
    model = Net(nnx.Rngs(1))
    nnx.update(model, projected)
    assert int(jnp.count_nonzero(model.fc2.kernel[...])) == 12
    with pytest.raises(ValueError, match="fc1/kernel"):
        admmjax.sparsity_by_path(state, {"fc1/kernel": 1.0})


class MLP(nnx.Module):
    def __init__(self, rngs):
        self.fc1 = nnx.Linear(6, 5, rngs=rngs)
        self.fc2 = nnx.Linear(5, 3, rngs=rngs)

    def __call__(self, x):
        return self.fc2(nnx.relu(self.fc1(x)))


def test_penalty_with_nnx_optimizer():
    x = jnp.asarray(np.random.default_rng(0).standard_normal((8, 6)), jnp.float32)
    y = jnp.asarray(np.random.default_rng(1).standard_normal((8, 3)), jnp.float32)
    model = MLP(nnx.Rngs(0))
    params = nnx.state(model, nnx.Param)
    targets = admmjax.uniform_sparsity(params, 0.6)
    state = admmjax.init(params, targets)
    state, _ = admmjax.update(state, perturbed(params, 0.2, 1), targets)  # U != 0
    # Per-leaf rho built from the NNX state itself (leaves arrive as Variables).
    rho = jax.tree.map(lambda _: 0.4, params)
    lr = 1e-2

    def loss_fn(model):
        return jnp.mean((model(x) - y) ** 2)

    # Reference in pure arrays: grads + rho (W - Z + U), then Adam.
    pure = nnx.as_pure(params)
    grads = nnx.as_pure(nnx.grad(loss_fn)(model))
    pure_state = nnx.as_pure(state)
    g_aug = jax.tree.map(
        lambda g, w, z, u: g if z is None else g + 0.4 * (w - z + u),
        grads,
        pure,
        pure_state.z,
        pure_state.u,
        is_leaf=lambda v: v is None,
    )
    adam = optax.adam(lr)
    upd, _ = adam.update(g_aug, adam.init(pure), pure)
    want = optax.apply_updates(pure, upd)

    for r in (0.4, rho):
        m = MLP(nnx.Rngs(0))
        optimizer = nnx.Optimizer(m, optax.chain(admmjax.penalty(r), optax.adam(lr)), wrt=nnx.Param)

        @nnx.jit
        def train_step(m, optimizer, admm_state):
            grads = nnx.grad(loss_fn)(m)
            optimizer.update(m, grads, admm_state=admm_state)

        train_step(m, optimizer, state)
        got = nnx.as_pure(nnx.state(m, nnx.Param))
        for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
        with pytest.raises(ValueError, match="admm_state"):
            optimizer.update(m, nnx.grad(loss_fn)(m))

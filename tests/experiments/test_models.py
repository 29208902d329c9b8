"""experiments.models: LeNet-300-100 and LeNet-5 in Flax NNX, and the functional view."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import _lenet_case
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from experiments import models
from experiments.kernels import pool

PATHS = {
    "lenet300_100": [
        "fc1/bias",
        "fc1/kernel",
        "fc2/bias",
        "fc2/kernel",
        "fc3/bias",
        "fc3/kernel",
    ],
    "lenet5": [
        "conv1/bias",
        "conv1/kernel",
        "conv2/bias",
        "conv2/kernel",
        "fc1/bias",
        "fc1/kernel",
        "fc2/bias",
        "fc2/kernel",
    ],
}
COUNTS = {"lenet300_100": 266_610, "lenet5": 431_080}

# The MNIST models (28x28x1 input); AlexNet has its own tests in test_alexnet.py.
LENETS = sorted(set(models.MODELS) - {"alexnet", "gpt"})


def _x(n: int = 3) -> jax.Array:
    return jnp.asarray(np.random.default_rng(0).random((n, 28, 28, 1), np.float32))


def _paths(tree) -> list[str]:
    leaves, _ = jax.tree_util.tree_flatten_with_path(tree)
    return [jax.tree_util.keystr(p, simple=True, separator="/") for p, _ in leaves]


@pytest.mark.parametrize("name", LENETS)
def test_param_count_paths_and_shapes(name):
    model = models.create_model(name, seed=0)
    _, params, _ = models.functional(model)
    assert models.count_params(params) == COUNTS[name]
    assert models.count_params(model) == COUNTS[name]
    assert _paths(params) == PATHS[name]
    assert isinstance(params, nnx.State)
    assert model(_x()).shape == (3, 10)


def test_kernel_shapes():
    _, p, _ = models.functional(models.create_model("lenet5", seed=0))
    assert p["conv1"]["kernel"].shape == (5, 5, 1, 20)
    assert p["conv2"]["kernel"].shape == (5, 5, 20, 50)
    assert p["fc1"]["kernel"].shape == (800, 500)
    _, q, _ = models.functional(models.create_model("lenet300_100", seed=0))
    assert q["fc1"]["kernel"].shape == (784, 300)


@pytest.mark.parametrize("name", LENETS)
def test_functional_apply_under_jit_matches_module(name):
    model = models.create_model(name, seed=1)
    _, params, apply_fn = models.functional(model)
    x = _x(5)
    np.testing.assert_allclose(jax.jit(apply_fn)(params, x), model(x), rtol=1e-5, atol=1e-6)
    # The raw Param state and a plain dict work too.
    raw = nnx.state(model, nnx.Param)
    np.testing.assert_allclose(apply_fn(raw, x), model(x), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        apply_fn(nnx.to_pure_dict(params), x), model(x), rtol=1e-5, atol=1e-6
    )


@pytest.mark.parametrize("name", LENETS)
def test_value_and_grad_under_jit(name):
    _, params, apply_fn = models.functional(models.create_model(name, seed=0))

    def loss(p, x, y):
        return optax.softmax_cross_entropy_with_integer_labels(apply_fn(p, x), y).mean()

    value, grads = jax.jit(jax.value_and_grad(loss))(params, _x(4), jnp.arange(4))
    assert np.isfinite(value) and _paths(grads) == PATHS[name]
    assert all(np.isfinite(g).all() and np.abs(g).sum() > 0 for g in jax.tree.leaves(grads))


def test_same_seed_same_params():
    a = models.functional(models.create_model("lenet5", seed=0))[1]
    b = models.functional(models.create_model("lenet5", seed=0))[1]
    c = models.functional(models.create_model("lenet5", seed=1))[1]
    assert all(jax.tree.leaves(jax.tree.map(np.array_equal, a, b)))
    assert not np.array_equal(a["fc1"]["kernel"], c["fc1"]["kernel"])


def test_lenet300_100_accepts_flat_input():
    model = models.create_model("lenet300_100", seed=0)
    x = _x(2)
    np.testing.assert_allclose(model(x.reshape(2, 784)), model(x), rtol=1e-6)


def test_dropout_rng_handling():
    model = models.create_model("lenet5", seed=0, dropout=0.5)
    _, params, apply_fn = models.functional(model)
    f = jax.jit(apply_fn, static_argnames="train")
    x, k1, k2 = _x(4), jax.random.key(1), jax.random.key(2)
    eval_out = f(params, x)
    np.testing.assert_allclose(f(params, x, train=False, rng=k1), eval_out)  # rng unused
    a, b, c = f(params, x, True, k1), f(params, x, True, k1), f(params, x, True, k2)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c) and not np.allclose(a, eval_out)
    with pytest.raises(ValueError, match="rngs"):
        apply_fn(params, x, train=True)
    # No dropout: train=True needs no key and equals eval.
    plain = models.create_model("lenet5", seed=0)
    np.testing.assert_allclose(plain(x, train=True), plain(x), rtol=1e-6)


def test_dropout_keeps_module_state_params_only():
    model = models.create_model("lenet5", seed=0, dropout=0.5)
    _, _, rest = nnx.split(model, nnx.Param, ...)
    assert jax.tree.leaves(rest) == []
    with pytest.raises(ValueError, match="dropout"):
        models.create_model("lenet5", seed=0, dropout=1.0)


def test_max_pool_matches_nnx():
    x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 8, 8, 3)), jnp.float32)
    w = jnp.asarray(np.random.default_rng(1).normal(size=(2, 4, 4, 3)), jnp.float32)

    def ref(v):
        return nnx.max_pool(v, (2, 2), strides=(2, 2))

    def grad(pool):
        return jax.grad(lambda v: jnp.sum(pool(v) * w))(x)

    np.testing.assert_array_equal(pool.max_pool_2x2(x), ref(x))
    np.testing.assert_array_equal(grad(pool.max_pool_2x2), grad(ref))  # no ties here


def test_max_pool_gradient_is_jax_max_gradient_bit_for_bit_with_ties():
    """The written-out backward pass equals JAX's own gradient of the reshape + max,
    ties split evenly (2-, 3- and 4-way ties from small integers, and all-equal windows).
    The reference is ``pool._reshape_max``: the same pooling as plain JAX, so its
    gradient is JAX's rule for ``max``."""
    rng = np.random.default_rng(2)
    x = jnp.asarray(rng.integers(0, 3, size=(3, 8, 12, 5)), jnp.float32)
    x = x.at[0].set(0.25)  # every window of image 0 is a 4-way tie, like MNIST's background
    w = jnp.asarray(rng.normal(size=(3, 4, 6, 5)), jnp.float32)
    ties = (x.reshape(3, 4, 2, 6, 2, 5) == pool._reshape_max(x)[:, :, None, :, None]).sum((2, 4))
    assert {2, 3, 4} <= set(np.unique(ties).tolist())

    def grad(pool):
        return jax.jit(jax.grad(lambda v: jnp.sum(pool(v) * w)))(x)

    np.testing.assert_array_equal(pool.max_pool_2x2(x), pool._reshape_max(x))
    got = grad(pool.max_pool_2x2)
    np.testing.assert_array_equal(got, grad(pool._reshape_max))
    # Each window's gradient sums to the output's, shared among its maxima only.
    np.testing.assert_allclose(got.reshape(3, 4, 2, 6, 2, 5).sum((2, 4)), w, rtol=1e-6)
    assert float(jnp.abs(got[0, 0, 0, 0] - w[0, 0, 0, 0] / 4)) < 1e-7


def test_unknown_model_lists_valid_names():
    with pytest.raises(ValueError, match="lenet300_100, lenet5"):
        models.create_model("alexnet_v9", seed=0)
    with pytest.raises(ValueError, match="lenet300_100, lenet5"):
        models.abstract_functional("alexnet_v9")
    with pytest.raises(ValueError, match="lenet300_100, lenet5"):
        models.model_options("alexnet_v9")


@pytest.mark.parametrize("name", ["lenet300_100", "lenet5"])
def test_abstract_functional_matches_an_initialised_model(name):
    """Same paths, shapes and dtypes as a real init, and nothing computed (abstract leaves)."""
    _, abstract, abstract_apply = models.abstract_functional(name)
    _, params, apply_fn = models.functional(models.create_model(name, seed=3))
    assert jax.tree.structure(abstract) == jax.tree.structure(params)
    assert all(isinstance(v, jax.ShapeDtypeStruct) for v in jax.tree.leaves(abstract))
    assert [(v.shape, v.dtype) for v in jax.tree.leaves(abstract)] == [
        (v.shape, v.dtype) for v in jax.tree.leaves(params)
    ]
    # The abstract apply_fn is the model's forward pass: it runs on real params.
    x = jnp.ones((2, 28, 28, 1))
    np.testing.assert_array_equal(abstract_apply(params, x), apply_fn(params, x))


def test_options_only_where_a_model_declares_them():
    assert set(models.model_options("lenet5")) == {"dropout", "fold_idle"}
    assert models.model_options("lenet300_100") == {}
    assert set(models.model_options("alexnet")) == {"dropout"}
    assert models.model_options("lenet5")["fold_idle"].needs == "pretrained"
    p = models.abstract_params("lenet5")
    assert jax.tree.structure(p) == jax.tree.structure(models.abstract_functional("lenet5")[1])
    images = {name for name in models.MODELS if models.model_task(name) == "classify"}
    assert set(models.INPUT_SHAPES) == images and models.model_task("gpt") == "language"


_WITHOUT_KERNELS = """
import importlib.abc, sys
class NoKernels(importlib.abc.MetaPathFinder):  # as if experiments/kernels/ were deleted
    def find_spec(self, name, path=None, target=None):
        if name == "experiments.kernels" or name.startswith("experiments.kernels."):
            raise ModuleNotFoundError(f"No module named {name!r}")
sys.meta_path.insert(0, NoKernels())
import jax, numpy as np
from experiments import models
from _lenet_case import logits_and_grads
out = logits_and_grads(models)
assert not any(m.startswith("experiments.kernels") for m in sys.modules), "kernels imported"
np.savez(sys.argv[1], **out)
"""


def test_lenet5_runs_its_pure_jax_path_without_the_kernels_package(tmp_path):
    """With experiments/kernels/ unavailable, LeNet-5 trains on Flax's own conv and pooling:
    the same logits and gradients as with the kernels, up to float rounding."""
    repo = Path(__file__).resolve().parents[2]
    out = tmp_path / "without.npz"
    env = {"PYTHONPATH": f"{repo}{os.pathsep}{Path(_lenet_case.__file__).parent}",
           "JAX_PLATFORMS": "cpu", "PATH": os.environ.get("PATH", "")}  # fmt: skip
    proc = subprocess.run([sys.executable, "-c", _WITHOUT_KERNELS, str(out)], cwd=repo,
                          env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    without = dict(np.load(out))
    with_kernels = _lenet_case.logits_and_grads(models)
    assert sorted(without) == sorted(with_kernels)
    for name, want in with_kernels.items():
        np.testing.assert_allclose(without[name], want, rtol=1e-4, atol=1e-5, err_msg=name)

"""experiments.models.gpt: shapes, causality, stacked layers, admmjax's selection, training."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import admmjax
from experiments.data import text
from experiments.models.base import functional
from experiments.models.gpt import GPT, bits_per_char, next_token_loss

TINY = dict(context=32, embed=32, heads=4, layers=3)
KERNELS = {
    f"blocks/{name}/kernel"
    for name in ("attention/query", "attention/key", "attention/value", "attention/out",
                 "mlp/fc", "mlp/proj")
}  # fmt: skip


# Eager calls retrace the layer scan every time (about a second each on 2 busy cores);
# jitted, one compile per configuration serves every test.
_forward = nnx.jit(lambda model, tokens: model(tokens))
_forward_eval = nnx.jit(lambda model, tokens: model(tokens, train=False, rngs=jax.random.key(0)))
_forward_train = nnx.jit(lambda model, tokens, key: model(tokens, train=True, rngs=key))


@pytest.fixture(scope="module")
def tiny() -> GPT:
    return GPT(rngs=nnx.Rngs(0), **TINY)


def _tokens(seed: int, shape: tuple[int, int] = (2, 32)) -> jax.Array:
    return jax.random.randint(jax.random.key(seed), shape, 0, 256).astype(jnp.uint8)


def _params(model: GPT) -> nnx.State:
    return nnx.state(model, nnx.Param)


def test_default_shapes_and_size():
    # The baby GPT (4 layers, 4 heads, 128 wide, context 256), shapes only: no init.
    model = nnx.eval_shape(lambda: GPT(rngs=nnx.Rngs(0)))
    params = nnx.as_pure(_params(model))
    assert params["blocks"]["attention"]["query"]["kernel"].shape == (4, 128, 4, 32)
    assert params["blocks"]["attention"]["out"]["kernel"].shape == (4, 4, 32, 128)
    assert params["blocks"]["mlp"]["fc"]["kernel"].shape == (4, 128, 512)
    assert params["token_embed"]["embedding"].shape == (256, 128)
    assert params["position_embed"]["embedding"].shape == (256, 128)
    # 12 d^2 per layer (q, k, v, out, 4x MLP) + biases and norms, plus two embeddings.
    d = 128
    per_layer = 12 * d * d + (3 * d + d) + (4 * d + d) + 4 * d
    assert sum(x.size for x in jax.tree.leaves(params)) == 4 * per_layer + 2 * 256 * d + 2 * d
    logits = jax.eval_shape(lambda m, t: m(t), model, _tokens(0, (2, 256)))
    assert logits.shape == (2, 256, 256)


@pytest.mark.parametrize("tie", [True, False])
def test_output_shape_and_functional_view(tie):
    model = GPT(rngs=nnx.Rngs(1), tie_embedding=tie, **TINY)
    tokens = _tokens(1, (3, 20))  # shorter than the context
    logits = _forward(model, tokens)
    assert logits.shape == (3, 20, 256) and logits.dtype == jnp.float32
    _, params, apply_fn = functional(model)
    np.testing.assert_allclose(jax.jit(apply_fn)(params, tokens), logits, rtol=1e-5, atol=1e-5)
    assert ("lm_head" in params) == (not tie)


def test_causal(tiny):
    model = tiny
    a = _tokens(2)
    t = 11
    b = a.at[:, t + 1 :].set((a[:, t + 1 :] + 1) % 256)  # every later token changed
    la, lb = _forward(model, a), _forward(model, b)
    np.testing.assert_allclose(la[:, : t + 1], lb[:, : t + 1], rtol=0, atol=1e-6)
    assert float(jnp.abs(la[:, t + 1 :] - lb[:, t + 1 :]).max()) > 1e-3  # the future does move
    c = a.at[:, t].set((a[:, t] + 1) % 256)
    assert (
        float(jnp.abs(_forward(model, c)[:, t] - la[:, t]).max()) > 1e-3
    )  # position t sees token t


def test_layers_stacked_on_a_leading_axis(tiny):
    params = _params(tiny)
    blocks = nnx.as_pure(params)["blocks"]
    assert {x.shape[0] for x in jax.tree.leaves(blocks)} == {TINY["layers"]}
    assert admmjax.stacked_axes_from_nnx(params) == dict.fromkeys(KERNELS, 0)
    # The layers are initialised independently, not copies of one.
    q = blocks["attention"]["query"]["kernel"]
    assert not np.allclose(q[0], q[1])


@pytest.mark.parametrize("tie", [True, False])
def test_default_selection_is_attention_and_mlp_kernels(tie):
    params = _params(GPT(rngs=nnx.Rngs(0), tie_embedding=tie, **TINY))
    targets = admmjax.uniform_sparsity(params, 0.5)
    assert set(admmjax.targeted_leaves(params, targets)) == KERNELS
    dense = set(admmjax.leaf_paths(params)) - KERNELS
    assert {"token_embed/embedding", "position_embed/embedding"} <= dense
    assert ("lm_head/embedding" in dense) == (not tie)


def test_per_layer_exact_counts_with_stacked(tiny):
    params = _params(tiny)
    stacked = admmjax.stacked_axes_from_nnx(params)
    targets = admmjax.uniform_sparsity(params, 0.7, stacked=stacked)
    assert all(isinstance(t, admmjax.Stacked) for t in
               admmjax.targeted_leaves(targets, targets).values())  # fmt: skip
    pruned, _ = admmjax.prune(params, targets)
    pruned, before = nnx.as_pure(pruned), nnx.as_pure(params)
    flat = dict(zip(admmjax.leaf_paths(pruned), jax.tree.leaves(pruned), strict=True))
    orig = dict(zip(admmjax.leaf_paths(before), jax.tree.leaves(before), strict=True))
    for path, leaf in flat.items():
        if path in KERNELS:
            n = math.prod(leaf.shape[1:])
            per_layer = np.count_nonzero(np.asarray(leaf).reshape(leaf.shape[0], -1), axis=1)
            assert per_layer.tolist() == [n - math.floor(0.7 * n)] * TINY["layers"], path
        else:
            np.testing.assert_array_equal(leaf, orig[path])  # embeddings, norms, biases


def test_deterministic_given_the_seed():
    a, b = GPT(rngs=nnx.Rngs(6), **TINY), GPT(rngs=nnx.Rngs(6), **TINY)
    tokens = _tokens(6)
    jax.tree.map(np.testing.assert_array_equal, _params(a), _params(b))
    np.testing.assert_array_equal(_forward(a, tokens), _forward(b, tokens))
    c = GPT(rngs=nnx.Rngs(7), **TINY)
    assert not np.allclose(_forward(a, tokens), _forward(c, tokens))


def test_dropout_needs_a_key_and_is_reproducible():
    model = GPT(rngs=nnx.Rngs(8), dropout=0.2, **TINY)
    tokens = _tokens(8)
    with pytest.raises(ValueError, match=r"GPT\(dropout=0.2\) called with train=True needs rngs"):
        model(tokens, train=True)
    key = jax.random.key(0)
    d1, d2 = _forward_train(model, tokens, key), _forward_train(model, tokens, key)
    np.testing.assert_array_equal(d1, d2)
    assert not np.allclose(d1, _forward_train(model, tokens, jax.random.key(1)))
    # Dropout holds no parameters: same seed, same weights as without dropout, and
    # train=False (the default) gives the model without dropout.
    plain = GPT(rngs=nnx.Rngs(8), **TINY)
    jax.tree.map(np.testing.assert_array_equal, _params(model), _params(plain))
    assert not np.allclose(d1, _forward(plain, tokens))
    np.testing.assert_array_equal(_forward_eval(model, tokens), _forward(plain, tokens))


def test_bad_configuration_and_input(tiny):
    with pytest.raises(ValueError, match="embed 30 must be a multiple of heads 4"):
        GPT(rngs=nnx.Rngs(0), embed=30, heads=4)
    with pytest.raises(ValueError, match=r"dropout must be in \[0, 1\), got 1.0"):
        GPT(rngs=nnx.Rngs(0), dropout=1.0)
    with pytest.raises(ValueError, match="layers must be a positive integer, got 0"):
        GPT(rngs=nnx.Rngs(0), layers=0)
    model = tiny
    with pytest.raises(ValueError, match="33 tokens exceed the context 32"):
        model(_tokens(0, (1, 33)))
    with pytest.raises(ValueError, match=r"integer tokens of shape \(batch, time\), got float32"):
        model(jnp.zeros((1, 4), jnp.float32))


def test_bits_per_char():
    logits = jnp.zeros((2, 3, 256))  # uniform over 256 bytes: exactly 8 bits
    targets = jnp.array([[1, 2, 3], [4, 5, 6]], jnp.uint8)
    np.testing.assert_allclose(bits_per_char(logits, targets), 8.0, rtol=1e-6)
    logits = jax.random.normal(jax.random.key(0), (2, 3, 256))
    p = jax.nn.softmax(logits)
    expected = -np.log2(np.asarray(p)[0, [0, 1], [1, 2]]).mean()
    weights = jnp.array([[1, 1, 0], [0, 0, 0]], bool)  # padding ignored
    np.testing.assert_allclose(bits_per_char(logits, targets, weights), expected, rtol=1e-5)


@pytest.mark.data
def test_adam_steps_on_kjv_lower_the_loss():
    splits = text.load_splits()
    model = GPT(rngs=nnx.Rngs(0), **TINY)
    optimizer = nnx.Optimizer(model, optax.adam(3e-3), wrt=nnx.Param)

    @nnx.jit
    def step(model, optimizer, windows):
        loss, grads = nnx.value_and_grad(next_token_loss)(model, windows)
        optimizer.update(model, grads)
        return loss

    @nnx.jit
    def held_out_bits(model, x, y, w):
        return bits_per_char(model(x), y, w)

    x, y, w = next(text.iterate_eval(splits.validation[:20_000], 64, 32))
    before = float(held_out_bits(model, x, y, w))
    losses = [
        float(step(model, optimizer, text.sample_batch(splits.train, 16, 32, seed=0, step=s)))
        for s in range(30)
    ]
    after = float(held_out_bits(model, x, y, w))
    assert abs(before - 8.0) < 0.1  # at init the logits are near uniform over 256 bytes
    assert after < before - 3.0, (before, after)  # Genesis, never trained on
    assert np.mean(losses[-5:]) < np.mean(losses[:5]) - 1.0

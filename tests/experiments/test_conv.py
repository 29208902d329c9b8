"""experiments.conv: XLA's convolution with a banded-matrix input gradient on CPU."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _conv_cases import HIGHEST, xla_case
from _conv_cases import xla_conv as _xla
from jax import lax

from experiments import models
from experiments.kernels import conv, pool


@pytest.mark.parametrize(
    "x_shape, w_shape",
    [
        ((3, 12, 12, 20), (5, 5, 20, 50)),  # LeNet-5's conv2: 8 output columns, 2 blocks
        ((2, 28, 28, 1), (5, 5, 1, 20)),  # conv1
        ((2, 9, 11, 3), (3, 5, 3, 4)),  # 7 output columns: the last block is padded
        ((1, 6, 6, 2), (1, 1, 2, 3)),  # 1x1 kernel
        ((2, 5, 7, 2), (5, 7, 2, 3)),  # kernel as large as the input: 1x1 output
    ],
)
@pytest.mark.parametrize("block", [1, 2, 4, 8])
def test_banded_input_grad_matches_xla(x_shape, w_shape, block):
    x, w, g, (want, _) = xla_case(x_shape, w_shape, seed=0)
    got = jax.jit(conv.banded_input_grad, static_argnums=(2, 3))(g, w, HIGHEST, block)
    assert got.shape == x.shape
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * float(jnp.abs(want).max()))


def test_banded_input_grad_rejects_bad_input():
    w = jnp.zeros((5, 5, 20, 50))
    with pytest.raises(ValueError, match="block must be >= 1, got 0"):
        conv.banded_input_grad(jnp.zeros((1, 8, 8, 50)), w, block=0)
    with pytest.raises(ValueError, match="output gradient has 49 channels, the kernel 50"):
        conv.banded_input_grad(jnp.zeros((1, 8, 8, 49)), w)


def test_conv2d_valid_value_and_both_gradients_match_xla():
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.standard_normal((4, 12, 12, 20), np.float32))
    w = jnp.asarray(rng.standard_normal((5, 5, 20, 50), np.float32))

    def loss(f):
        return lambda x, w: jnp.sum(jnp.sin(f(x, w)))

    ours = jax.jit(jax.value_and_grad(loss(lambda x, w: conv.conv2d_valid(x, w, HIGHEST)), (0, 1)))
    theirs = jax.jit(jax.value_and_grad(loss(_xla), (0, 1)))
    (v1, (dx1, dw1)), (v2, (dx2, dw2)) = ours(x, w), theirs(x, w)
    np.testing.assert_allclose(v1, v2, rtol=1e-6)
    np.testing.assert_array_equal(dw1, dw2)  # 500 taps > PATCHES_MAX: XLA's own
    np.testing.assert_allclose(dx1, dx2, rtol=1e-4, atol=1e-5 * float(jnp.abs(dx2).max()))


@pytest.mark.parametrize(
    "x_shape, w_shape",
    [((4, 28, 28, 1), (5, 5, 1, 20)), ((2, 9, 11, 3), (3, 5, 3, 4)), ((1, 6, 6, 2), (1, 1, 2, 3))],
)
def test_patches_kernel_grad_matches_xla(x_shape, w_shape):
    """Few input taps (conv1: 25 <= PATCHES_MAX): the CPU kernel gradient is a patch
    product, equal to XLA's up to rounding, alone and inside conv2d_valid's gradient."""
    assert np.prod(w_shape[:3]) <= conv.PATCHES_MAX
    x, w, g, (_, want) = xla_case(x_shape, w_shape, seed=5)
    scale = float(jnp.abs(want).max())
    got = conv.patches_kernel_grad(x, g, w.shape, HIGHEST)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * scale)
    _, ours = jax.vjp(lambda w: conv.conv2d_valid(x, w, HIGHEST), w)
    np.testing.assert_allclose(ours(g)[0], want, rtol=1e-5, atol=1e-5 * scale)


def _lowered_text(platform: str) -> str:
    x = jax.ShapeDtypeStruct((2, 12, 12, 20), jnp.float32)
    w = jax.ShapeDtypeStruct((5, 5, 20, 50), jnp.float32)
    grad = jax.value_and_grad(lambda x, w: jnp.sum(conv.conv2d_valid(x, w)), (0, 1))
    return jax.export.export(jax.jit(grad), platforms=[platform])(x, w).mlir_module()


def test_banded_gradient_on_cpu_only():
    """The CPU lowering computes the input gradient with a matrix product; the CUDA and
    TPU lowerings keep XLA's transposed convolution (and have no matrix product)."""
    cpu = _lowered_text("cpu")
    assert "stablehlo.dot_general" in cpu
    assert cpu.count("stablehlo.convolution") == 2  # forward, kernel gradient
    for platform in ("cuda", "tpu"):
        text = _lowered_text(platform)
        assert "stablehlo.dot_general" not in text
        assert text.count("stablehlo.convolution") == 3  # + the input gradient


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(window_strides=(2, 2), padding="VALID"),
        dict(window_strides=(1, 1), padding="SAME"),
        dict(window_strides=(1, 1), padding=[(1, 1), (0, 0)]),
        dict(window_strides=(1, 1), padding="VALID", rhs_dilation=(2, 2)),
        dict(window_strides=(1, 1), padding="VALID", feature_group_count=2),
    ],
)
def test_other_convolutions_go_to_lax_unchanged(kwargs):
    rng = np.random.default_rng(2)
    x = jnp.asarray(rng.standard_normal((2, 10, 10, 4), np.float32))
    groups = kwargs.get("feature_group_count", 1)
    w = jnp.asarray(rng.standard_normal((3, 3, 4 // groups, 6), np.float32))
    dn = ("NHWC", "HWIO", "NHWC")
    got = conv.conv_general_dilated(x, w, dimension_numbers=dn, **kwargs)
    want = lax.conv_general_dilated(x, w, dimension_numbers=dn, **kwargs)
    np.testing.assert_array_equal(got, want)
    # ...and so do their gradients (no platform-dependent input gradient).
    jaxpr = str(jax.make_jaxpr(jax.grad(lambda x: conv.conv_general_dilated(
        x, w, dimension_numbers=dn, **kwargs).sum()))(x))  # fmt: skip
    assert "branches_platforms" not in jaxpr


def test_plain_convolution_takes_the_custom_gradient():
    x = jnp.zeros((1, 8, 8, 2))
    w = jnp.zeros((3, 3, 2, 4))
    for padding in ("VALID", [(0, 0), (0, 0)]):
        jaxpr = str(jax.make_jaxpr(jax.grad(lambda x, p=padding: conv.conv_general_dilated(
            x, w, (1, 1), p, dimension_numbers=("NHWC", "HWIO", "NHWC")).sum()))(x))  # fmt: skip
        assert "branches_platforms" in jaxpr  # the CPU-only gradient


def test_lenet5_gradients_match_plain_xla_convolutions():
    """LeNet-5 with experiments.conv against the same weights with lax's convolutions."""
    model = models.create_model("lenet5", seed=0)
    _, params, apply = models.functional(model)
    plain = models.create_model("lenet5", seed=0)
    plain.conv1.conv_general_dilated = lax.conv_general_dilated
    plain.conv2.conv_general_dilated = lax.conv_general_dilated
    _, params_plain, apply_plain = models.functional(plain)
    rng = np.random.default_rng(3)
    x = jnp.asarray(rng.random((16, 28, 28, 1), np.float32))
    y = jnp.asarray(rng.integers(0, 10, 16))

    def loss(apply):
        def f(p):
            logits = apply(p, x)
            return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], 1))

        return jax.jit(jax.grad(f))

    got, want = loss(apply)(params), loss(apply_plain)(params_plain)
    for path, a, b in zip(
        jax.tree.leaves_with_path(got), jax.tree.leaves(got), jax.tree.leaves(want), strict=True
    ):
        np.testing.assert_allclose(
            a, b, rtol=1e-4, atol=1e-6 * float(jnp.abs(b).max()), err_msg=str(path[0])
        )


def test_evaluation_only_transforms_see_a_plain_convolution_and_jvp_is_refused():
    """sparsify evaluates the primal (plain lax); forward mode raises JAX's error."""
    from jax.experimental import sparse

    rng = np.random.default_rng(4)
    x = jnp.asarray(rng.standard_normal((2, 10, 10, 3), np.float32))
    w = jnp.asarray(rng.standard_normal((3, 3, 3, 4), np.float32))
    out = sparse.sparsify(lambda x: conv.conv2d_valid(x, w), use_tracer=True)(x)
    np.testing.assert_allclose(out, _xla(x, w), rtol=1e-4, atol=1e-4)
    with pytest.raises(TypeError, match="forward-mode autodiff"):
        jax.jvp(lambda x: conv.conv2d_valid(x, w), (x,), (x,))
    with pytest.raises(TypeError, match="forward-mode autodiff"):
        jax.jvp(pool.max_pool_2x2, (x[:, :8, :8],), (x[:, :8, :8],))

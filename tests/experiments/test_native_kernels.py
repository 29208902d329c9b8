"""experiments.kernels.native_kernels: the AVX-512 convolution and its gradients, against XLA's."""

from __future__ import annotations

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _conv_cases import xla_case
from _conv_cases import xla_conv as _xla

from experiments.kernels import conv, cpu_kernels, native_kernels, pool

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_built_here_or_says_why():
    """On an AVX-512 Linux machine with g++ (this project's) the kernels must build;
    elsewhere the reason is reported and experiments.conv keeps its JAX gradients."""
    if "avx512f" in cpu_kernels.cpu_flags() and os.environ.get(native_kernels.OPT_OUT) != "0":
        assert native_kernels.available(), native_kernels.unavailable_reason()
        assert native_kernels.unavailable_reason() is None
    else:
        assert not native_kernels.available()
        assert native_kernels.unavailable_reason()


needs_native = pytest.mark.skipif(
    not native_kernels.available(),
    reason=f"native conv unavailable: {native_kernels.unavailable_reason()}",
)


@needs_native
@pytest.mark.parametrize(
    "x_shape, w_shape",
    [
        ((128, 12, 12, 20), (5, 5, 20, 50)),  # LeNet-5's conv2 at batch 128
        ((5, 28, 28, 1), (5, 5, 1, 20)),  # conv1: 5-float rows, 2 channel vectors
        ((3, 9, 11, 3), (3, 5, 3, 7)),  # 7 output columns, 7 channels: partial tiles
        ((17, 7, 8, 16), (2, 8, 16, 3)),  # KW * C = 128 exactly (8 vectors); 17 images
        ((2, 6, 6, 2), (1, 1, 2, 3)),  # 1x1 kernel
        ((2, 5, 7, 2), (5, 7, 2, 33)),  # kernel as large as the input: 1x1 output
        ((1, 10, 10, 6), (3, 3, 6, 1)),  # one output channel
        ((2, 7, 9, 4), (3, 3, 4, 130)),  # 130 channels: blocks of 64, 64 and 2
    ],
)
def test_forward_and_both_gradients_match_xla(x_shape, w_shape):
    x, w, g, (want_dx, want_dw) = xla_case(x_shape, w_shape, seed=0)
    y = jax.jit(native_kernels.forward)(x, w)
    dx = jax.jit(native_kernels.input_grad)(g, w)
    dw = jax.jit(native_kernels.kernel_grad, static_argnums=2)(x, g, w.shape)
    assert y.shape == g.shape and dx.shape == x.shape and dw.shape == w.shape
    for got, want in ((y, _xla(x, w)), (dx, want_dx), (dw, want_dw)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=2e-6 * float(jnp.abs(want).max()))


@needs_native
def test_results_are_bit_identical_run_to_run():
    """Fixed chunks, summed in order: the same bits whichever thread ran which chunk."""
    x, w, g, _ = xla_case((64, 12, 12, 20), (5, 5, 20, 50), seed=1)
    dw = jax.jit(native_kernels.kernel_grad, static_argnums=2)
    dx = jax.jit(native_kernels.input_grad)
    y = jax.jit(native_kernels.forward)
    first = (np.asarray(dw(x, g, w.shape)), np.asarray(dx(g, w)), np.asarray(y(x, w)))
    for _ in range(3):
        np.testing.assert_array_equal(dw(x, g, w.shape), first[0])
        np.testing.assert_array_equal(dx(g, w), first[1])
        np.testing.assert_array_equal(y(x, w), first[2])


@needs_native
def test_vmap_runs_each_example():
    x, w, g, _ = xla_case((3, 8, 8, 4), (3, 3, 4, 5), seed=2)
    per_example = jax.vmap(lambda x, g: native_kernels.kernel_grad(x[None], g[None], w.shape))(x, g)
    want = jnp.stack(
        [jax.vjp(lambda w, i=i: _xla(x[i : i + 1], w), w)[1](g[i : i + 1])[0] for i in range(3)]
    )
    np.testing.assert_allclose(per_example, want, rtol=1e-5, atol=1e-5)


def test_bad_input_is_refused_with_the_shapes():
    with pytest.raises(ValueError, match=r"KW \* C <= 128, got shape \(3, 3, 64, 8\)"):
        native_kernels._check((3, 3, 64, 8), jnp.float32)
    with pytest.raises(ValueError, match="dtype bfloat16"):
        native_kernels._check((3, 3, 4, 8), jnp.bfloat16)
    assert not native_kernels.supports((3, 3, 4, 8), jnp.float16)
    assert native_kernels.supports((5, 5, 20, 50), jnp.float32)
    if native_kernels.available():
        w = jnp.zeros((5, 5, 20, 50))
        with pytest.raises(ValueError, match="does not fit kernel"):
            native_kernels.forward(jnp.zeros((1, 12, 12, 19)), w)
        with pytest.raises(ValueError, match="does not fit kernel"):
            native_kernels.input_grad(jnp.zeros((1, 8, 8, 49)), w)
        with pytest.raises(ValueError, match="do not fit"):
            native_kernels.kernel_grad(
                jnp.zeros((1, 12, 12, 20)), jnp.zeros((1, 7, 8, 50)), w.shape
            )


def test_opt_out_is_reported():
    """ADMMJAX_NATIVE_KERNELS=0 (a fresh process: availability is decided once)."""
    code = (
        "from experiments.kernels import native_kernels as n; "
        "print(n.available(), n.unavailable_reason())"
    )
    env = {**os.environ, native_kernels.OPT_OUT: "0"}
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == f"False switched off by {native_kernels.OPT_OUT}=0"


@pytest.mark.parametrize("native_opt_out", ["1", "0"])
def test_ynnpack_fusion_set_is_dot_reduce_with_or_without_the_native_kernels(native_opt_out):
    """A fresh process picks ``dot,reduce`` whether the native kernels run or not; an
    ``XLA_FLAGS`` that names the option is left alone."""
    code = "import os, experiments.kernels as k; k.configure_cpu(); print(os.environ['XLA_FLAGS'])"
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", cpu_kernels.OPT_OUT)}
    env[cpu_kernels.NATIVE_OPT_OUT] = native_opt_out

    def flags(**extra: str) -> str:
        out = subprocess.run(
            [sys.executable, "-c", code], cwd=REPO, env={**env, **extra},
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        return out.stdout.strip()

    # dot,reduce with or without the native kernels (eltwise fusions refuse some layouts).
    expected = cpu_kernels.YNN_FLAG
    assert flags() == expected and expected.endswith("=dot,reduce")
    by_hand = f"{cpu_kernels.YNN_OPTION}=dot"
    assert flags(XLA_FLAGS=by_hand) == by_hand


@needs_native
def test_conv2d_valid_uses_them_on_cpu_only(monkeypatch):
    """With the kernels switched on (the tests' 4 devices switch them off), the CPU
    lowering of a gradient calls all three targets and the CUDA/TPU lowerings never see
    them; value and gradients through conv2d_valid match XLA's."""
    monkeypatch.setattr(native_kernels, "use_on_cpu", _on_regardless_of_devices)
    x_spec = jax.ShapeDtypeStruct((2, 12, 12, 20), jnp.float32)
    w_spec = jax.ShapeDtypeStruct((5, 5, 20, 50), jnp.float32)
    grad = jax.value_and_grad(lambda x, w: jnp.sum(conv.conv2d_valid(x, w)), (0, 1))
    # jax.export refuses custom calls without a compatibility guarantee unless told.
    checks = [jax.export.DisabledSafetyCheck.custom_call(t) for t in native_kernels.TARGETS]

    def lowered(platform):
        exported = jax.export.export(jax.jit(grad), platforms=[platform], disabled_checks=checks)
        return exported(x_spec, w_spec).mlir_module()

    cpu = lowered("cpu")
    convolution = [t for t in native_kernels.TARGETS if "conv" in t]
    assert all(f"@{target}(" in cpu for target in convolution)
    for platform in ("cuda", "tpu"):
        assert "admmjax_conv" not in lowered(platform)
    x, w, g, (want_dx, want_dw) = xla_case((4, 12, 12, 20), (5, 5, 20, 50), seed=3)
    y, pullback = jax.vjp(lambda x, w: conv.conv2d_valid(x, w), x, w)
    want_y = _xla(x, w)
    np.testing.assert_allclose(y, want_y, rtol=1e-5, atol=2e-6 * float(jnp.abs(want_y).max()))
    dx, dw = jax.jit(pullback)(g)
    np.testing.assert_allclose(dx, want_dx, rtol=1e-5, atol=2e-6 * float(jnp.abs(want_dx).max()))
    np.testing.assert_allclose(dw, want_dw, rtol=1e-5, atol=2e-6 * float(jnp.abs(want_dw).max()))


def test_not_used_with_several_devices():
    """XLA cannot partition the custom calls over a batch-sharded mesh: the tests run
    with 4 CPU devices, so conv2d_valid keeps the pure-JAX gradients here."""
    assert jax.device_count() > 1
    assert not native_kernels.use_on_cpu(jnp.float32, (5, 5, 20, 50))


@needs_native
@pytest.mark.parametrize("shape", [(4, 24, 24, 20), (3, 8, 8, 50), (2, 6, 4, 16), (1, 2, 2, 1)])
def test_max_pool_gradient_is_the_jax_one_bit_for_bit(shape):
    """Ties included: inputs rounded to a few levels make many windows share a maximum."""

    rng = np.random.default_rng(7)
    x = jnp.asarray(np.round(rng.standard_normal(shape) * 2).astype(np.float32))
    g = jnp.asarray(
        rng.standard_normal((shape[0], shape[1] // 2, shape[2] // 2, shape[3]), np.float32)
    )
    want = jax.jit(pool.max_pool_2x2_grad_jax)(x, g)
    got = jax.jit(native_kernels.max_pool_2x2_grad)(x, g)
    np.testing.assert_array_equal(got, want)
    windows = np.asarray(x).reshape(shape[0], shape[1] // 2, 2, shape[2] // 2, 2, shape[3])
    if windows.size > 4:  # many windows share their maximum
        assert (windows == windows.max(axis=(2, 4), keepdims=True)).sum() > windows.size // 4
    with pytest.raises(ValueError, match="do not fit 2x2 pooling"):
        native_kernels.max_pool_2x2_grad(x, g[:, :-1])


@needs_native
def test_lenet5_step_gradients_with_the_kernels_match_without(monkeypatch):
    """The model's gradient with every native kernel on (as in a single-device CPU run)
    against the same model with them off."""
    from experiments import models

    model = models.create_model("lenet5", seed=0)
    _, params, apply = models.functional(model)
    rng = np.random.default_rng(3)
    x = jnp.asarray(rng.random((16, 28, 28, 1), np.float32))
    y = jnp.asarray(rng.integers(0, 10, 16))

    def loss(p):
        logits = apply(p, x)
        return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], 1))

    want = jax.jit(jax.grad(loss))(params)
    monkeypatch.setattr(native_kernels, "use_on_cpu", _on_regardless_of_devices)
    text = jax.jit(jax.grad(loss)).lower(params).as_text()
    assert all(target in text for target in native_kernels.TARGETS)
    got = jax.jit(jax.grad(loss))(params)
    for path, a, b in zip(
        jax.tree.leaves_with_path(got), jax.tree.leaves(got), jax.tree.leaves(want), strict=True
    ):
        np.testing.assert_allclose(
            a, b, rtol=1e-4, atol=1e-6 * float(jnp.abs(b).max()), err_msg=str(path[0])
        )


def _on_regardless_of_devices(dtype, kernel_shape=None):
    ok = jnp.dtype(dtype) == jnp.float32
    return ok and (kernel_shape is None or native_kernels.supports(kernel_shape, dtype))


@needs_native
def test_reverse_over_reverse_matches_the_pure_jax_path(monkeypatch):
    """Each native map's adjoints are the others (and the pooling gradient's is its
    JAX twin's), so a gradient of a gradient through conv + pool works and agrees."""

    x, w, _, _ = xla_case((3, 12, 12, 4), (5, 5, 4, 6), seed=4)

    def gradient_norm(w):
        inner = jax.grad(lambda x: jnp.sum(jnp.sin(pool.max_pool_2x2(conv.conv2d_valid(x, w)))))
        return jnp.sum(inner(x) ** 2)

    want = jax.jit(jax.grad(gradient_norm))(w)
    monkeypatch.setattr(native_kernels, "use_on_cpu", _on_regardless_of_devices)
    text = jax.jit(jax.grad(gradient_norm)).lower(w).as_text()
    assert all(target in text for target in native_kernels.TARGETS)
    got = jax.jit(jax.grad(gradient_norm))(w)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * float(jnp.abs(want).max()))

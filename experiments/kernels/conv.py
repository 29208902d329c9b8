r"""2-D convolution for the experiments' models: XLA's, with a cheaper input gradient on CPU.

XLA:CPU computes the input gradient of a VALID, stride-1 convolution as another
convolution, of the output gradient zero-padded by ``k - 1`` on each side with the
flipped kernel. For LeNet-5's conv2 (20 -> 50 channels, 5x5, 12x12 -> 8x8) that is
2.25x the multiply-adds of the forward pass, and it was the largest single cost of a
training step on the 2-core CPU (about 10 ms of 24 ms at batch 128; see
``experiments/bench/bench_epoch.py``).

:func:`conv2d_valid` keeps XLA's forward pass and, on CPU only, computes the input
gradient as one matrix product with a banded (Toeplitz) matrix
built from the kernel, followed by an overlap-add:

.. math::

    \frac{\partial L}{\partial x}[n, y, x, c]
      = \sum_{i, j, o} g[n, y - i, x - j, o]\, w[i, j, c, o].

The output columns are taken in blocks of ``b``. For one block, the contribution of
``g[n, oy, b\text{-block}, :]`` (``b * O`` numbers) to the ``k_h`` input rows
``oy .. oy + k_h - 1`` and the ``b + k_w - 1`` input columns the block reaches is one
row of ``G @ T``, with ``T[(a, o), (i, x', c)] = w[i, x' - a, c, o]`` for
``0 <= x' - a < k_w`` (zero elsewhere), a ``(b O) x (k_h (b + k_w - 1) C)`` matrix
shared by every block. Summing the shifted pieces (``k_h`` rows times the number of
blocks) gives the gradient. Each output position costs ``k_h (b + k_w - 1) C O``
multiply-adds against the forward's ``k_h k_w C O``: with ``b = 4`` and a 5x5 kernel
``(b + k_w - 1) / k_w`` = 1.6x the forward's, but as one large matrix product, and the
overlap-add reads contiguous runs of ``(b + k_w - 1) C`` numbers. Blocks of 2 and of the
whole width were slower inside LeNet-5's training step (the first makes 20 shifted
pieces, which YNNPACK's elementwise fusion handled slowly; the second
wastes more multiply-adds).

When the kernel has few input taps (``KH * KW * C <= PATCHES_MAX``, LeNet-5's conv1)
the kernel gradient on CPU is one matrix product of the input's shifted views with the
output gradient (:func:`patches_kernel_grad`), instead of XLA's convolution over
transposed copies of both.

In a single-device CPU process where :mod:`experiments.kernels.native_kernels`'s AVX-512 kernels
build (float32, ``KW * C <= 128``), the forward pass of a training step (the
``custom_vjp``'s) and both gradients on CPU are those kernels instead (faster again,
see that module); XLA's forward and the pure-JAX gradients above are the fallback
(``ADMMJAX_NATIVE_KERNELS=0`` forces it, e.g. to reproduce results made before
2026-11-30 bit for bit).

On GPU and TPU (``lax.platform_dependent``) both gradients are XLA's, which cuDNN
and the TPU compiler already handle well. Any other convolution (strides, padding,
dilation, groups, other layouts) goes to ``lax.conv_general_dilated`` unchanged.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from experiments.kernels import native_kernels

__all__ = [
    "BLOCK",
    "PATCHES_MAX",
    "banded_input_grad",
    "conv2d_valid",
    "conv_general_dilated",
    "patches_kernel_grad",
]

# Output columns per block of the banded input gradient (see the module docstring).
BLOCK = 4
# On CPU the kernel gradient is one patch-matrix product when KH * KW * C is at most
# this: LeNet-5's conv1 (25) made whole steps 5-6% faster (three processes, interleaved
# A/B); for conv2 (500) the patch matrix (16 MB at batch 128) made it slower alone
# (6.7 ms against XLA's 4.0 ms), so XLA's convolution stays there.
PATCHES_MAX = 64
_NHWC = ("NHWC", "HWIO", "NHWC")


def _forward(x: jax.Array, w: jax.Array, precision: Any) -> jax.Array:
    return lax.conv_general_dilated(
        x, w, (1, 1), "VALID", dimension_numbers=_NHWC, precision=precision
    )


def banded_input_grad(
    g: jax.Array, w: jax.Array, precision: Any = None, block: int = BLOCK
) -> jax.Array:
    """Input gradient of a VALID stride-1 NHWC/HWIO convolution for output gradient ``g``.

    ``g``: (N, OH, OW, O); ``w``: (KH, KW, C, O). Returns (N, OH + KH - 1, OW + KW - 1, C),
    equal (up to float rounding) to the gradient ``jax.vjp`` gives for
    ``lax.conv_general_dilated(x, w, (1, 1), "VALID")``.
    """
    if block < 1:
        raise ValueError(f"block must be >= 1, got {block}")
    kh, kw, c, o = w.shape
    n, oh, ow, go = g.shape
    if go != o:
        raise ValueError(f"output gradient has {go} channels, the kernel {o}")
    blocks = -(-ow // block)
    if blocks * block != ow:  # zero columns contribute nothing; cropped below
        g = jnp.pad(g, ((0, 0), (0, 0), (0, blocks * block - ow), (0, 0)))
    reach = block + kw - 1  # input columns one block of output columns touches
    taps = w.transpose(3, 0, 1, 2)  # (O, KH, KW, C)
    # band[a, o, i, a + j, c] = w[i, j, c, o]: output column a of a block feeds input
    # columns a .. a + KW - 1 of the block's reach.
    band = jnp.stack(
        [jnp.pad(taps, ((0, 0), (0, 0), (a, reach - kw - a), (0, 0))) for a in range(block)]
    )
    pieces = jnp.matmul(
        g.reshape(n * oh * blocks, block * o),
        band.reshape(block * o, kh * reach * c),
        precision=precision,
    ).reshape(n, oh, blocks, kh, reach, c)
    width = blocks * block + kw - 1
    dx = sum(
        jnp.pad(
            pieces[:, :, b, i],
            ((0, 0), (i, kh - 1 - i), (b * block, width - reach - b * block), (0, 0)),
        )
        for i in range(kh)
        for b in range(blocks)
    )
    return dx[:, :, : ow + kw - 1]


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _conv2d_valid_vjp(x: jax.Array, w: jax.Array, precision: Any = None) -> jax.Array:
    return _forward(x, w, precision)


def _conv2d_valid_fwd(x, w, precision):
    # The forward pass of a training step: on CPU, the native kernel where it applies.
    if native_kernels.use_on_cpu(w.dtype, w.shape):
        y = lax.platform_dependent(
            x,
            w,
            cpu=native_kernels.forward,
            default=functools.partial(_forward, precision=precision),
        )
    else:
        y = _forward(x, w, precision)
    return y, (x, w)


def patches_kernel_grad(
    x: jax.Array, g: jax.Array, kernel_shape: tuple[int, ...], precision: Any = None
) -> jax.Array:
    """Kernel gradient of a VALID stride-1 NHWC/HWIO convolution as one matrix product.

    ``dw[i, j, c, o] = sum_{n, y, x} x[n, y + i, x + j, c] g[n, y, x, o]``: the input's
    ``KH * KW * C`` shifted views (the patch matrix, ``KH KW C x N OH OW``) times the
    output gradient (``N OH OW x O``).
    """
    kh, kw, c, o = kernel_shape
    n, oh, ow, _ = g.shape
    views = jnp.stack([x[:, i : i + oh, j : j + ow, :] for i in range(kh) for j in range(kw)])
    patches = jnp.moveaxis(views, -1, 1).reshape(kh * kw * c, n * oh * ow)
    return jnp.matmul(patches, g.reshape(n * oh * ow, o), precision=precision).reshape(kh, kw, c, o)


def _conv2d_valid_bwd(precision, residuals, g):
    x, w = residuals

    def xla_kernel_grad(g, x):
        return jax.vjp(lambda w: _forward(x, w, precision), w)[1](g)[0]

    def xla_input_grad(g, w):
        return jax.vjp(lambda x: _forward(x, w, precision), x)[1](g)[0]

    native = native_kernels.use_on_cpu(w.dtype, w.shape)

    def cpu_kernel_grad(g, x):
        if native:
            return native_kernels.kernel_grad(x, g, w.shape)
        if math.prod(w.shape[:3]) <= PATCHES_MAX:
            return patches_kernel_grad(x, g, w.shape, precision)
        return xla_kernel_grad(g, x)

    def cpu_input_grad(g, w):
        if native:
            return native_kernels.input_grad(g, w)
        return banded_input_grad(g, w, precision)

    dw = lax.platform_dependent(g, x, cpu=cpu_kernel_grad, default=xla_kernel_grad)
    dx = lax.platform_dependent(g, w, cpu=cpu_input_grad, default=xla_input_grad)
    return dx, dw


_conv2d_valid_vjp.defvjp(_conv2d_valid_fwd, _conv2d_valid_bwd)


@functools.partial(jax.custom_jvp, nondiff_argnums=(2,))
def conv2d_valid(x: jax.Array, w: jax.Array, precision: Any = None) -> jax.Array:
    """``lax.conv_general_dilated(x, w, (1, 1), "VALID")`` for NHWC ``x`` and HWIO ``w``.

    Same forward pass as XLA's; on CPU both gradients are the kernels of
    :mod:`experiments.kernels.native_kernels` where they apply, else the input gradient is
    :func:`banded_input_grad`
    and, for kernels with at most ``PATCHES_MAX`` input taps, the kernel gradient is
    :func:`patches_kernel_grad` (see the module docstring); elsewhere both are XLA's.

    The primal is a plain ``lax`` convolution (so transformations that only evaluate,
    such as ``jax.experimental.sparse.sparsify``, see no custom rule); its derivative
    is that of a ``custom_vjp`` holding the gradient above. Reverse mode (``jax.grad``,
    ``jax.vjp``, also a gradient of a gradient) and ``vmap`` work; forward mode
    (``jax.jvp``, ``jax.hessian``) raises JAX's "can't apply forward-mode autodiff
    (jvp) to a custom_vjp function": pass
    ``conv_general_dilated=lax.conv_general_dilated`` to ``nnx.Conv`` for that.
    """
    return _forward(x, w, precision)


@conv2d_valid.defjvp
def _conv2d_valid_jvp(precision, primals, tangents):
    return jax.jvp(lambda x, w: _conv2d_valid_vjp(x, w, precision), primals, tangents)


def _is_plain(lhs, rhs, strides, padding, lhs_dilation, rhs_dilation, dimension_numbers):
    if lhs.ndim != 4 or rhs.ndim != 4 or tuple(strides) != (1, 1):
        return False
    if isinstance(padding, str):
        if padding != "VALID":
            return False
    elif [tuple(p) for p in padding] != [(0, 0), (0, 0)]:
        return False
    if any(d is not None and tuple(d) != (1, 1) for d in (lhs_dilation, rhs_dilation)):
        return False
    wanted = lax.conv_dimension_numbers(lhs.shape, rhs.shape, _NHWC)
    return lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers) == wanted


def conv_general_dilated(
    lhs: jax.Array,
    rhs: jax.Array,
    window_strides: Sequence[int],
    padding: str | Sequence[tuple[int, int]],
    lhs_dilation: Sequence[int] | None = None,
    rhs_dilation: Sequence[int] | None = None,
    dimension_numbers: Any = None,
    feature_group_count: int = 1,
    batch_group_count: int = 1,
    precision: Any = None,
    preferred_element_type: Any = None,
    **kwargs: Any,
) -> jax.Array:
    """Drop-in ``lax.conv_general_dilated`` (``nnx.Conv(..., conv_general_dilated=...)``).

    VALID, stride-1, undilated, ungrouped NHWC/HWIO convolutions go to
    :func:`conv2d_valid`; everything else to ``lax.conv_general_dilated`` as given.
    """
    if (
        feature_group_count == 1
        and batch_group_count == 1
        and preferred_element_type is None
        and kwargs.get("out_sharding") is None
        and _is_plain(lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation,
                      dimension_numbers)
    ):  # fmt: skip
        return conv2d_valid(lhs, rhs, precision)
    return lax.conv_general_dilated(
        lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation, dimension_numbers,
        feature_group_count, batch_group_count, precision, preferred_element_type, **kwargs,
    )  # fmt: skip

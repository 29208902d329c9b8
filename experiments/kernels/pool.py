"""2x2 max pooling with a hand-written gradient (LeNet-5's pooling layers).

The pure-JAX gradient :func:`max_pool_2x2_grad_jax` is in
:mod:`experiments.kernels.pool_reference`, which the native one-pass CPU gradient
(:mod:`experiments.kernels.native_kernels`) also differentiates: one direction of import.
"""

from __future__ import annotations

import jax
from jax import lax

from experiments.kernels import native_kernels
from experiments.kernels.pool_reference import max_pool_2x2_grad_jax

__all__ = ["max_pool_2x2", "max_pool_2x2_grad_jax"]


def _reshape_max(x: jax.Array) -> jax.Array:
    n, h, w, c = x.shape
    return x.reshape(n, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


@jax.custom_vjp
def _max_pool_2x2_vjp(x: jax.Array) -> jax.Array:
    return _reshape_max(x)


def _max_pool_2x2_fwd(x: jax.Array) -> tuple[jax.Array, jax.Array]:
    return _reshape_max(x), x


def _max_pool_2x2_bwd(x: jax.Array, g: jax.Array) -> tuple[jax.Array]:
    # On a single-device CPU the same arithmetic in one pass (experiments.kernels.native_kernels):
    # XLA splits it into four passes over the pooled input.
    if native_kernels.use_on_cpu(x.dtype):
        cpu = native_kernels.max_pool_2x2_grad
        return (lax.platform_dependent(x, g, cpu=cpu, default=max_pool_2x2_grad_jax),)
    return (max_pool_2x2_grad_jax(x, g),)


_max_pool_2x2_vjp.defvjp(_max_pool_2x2_fwd, _max_pool_2x2_bwd)


@jax.custom_jvp
def max_pool_2x2(x: jax.Array) -> jax.Array:
    """2x2 stride-2 max pooling of NHWC ``x`` with even H and W.

    Same values as ``nnx.max_pool(x, (2, 2), strides=(2, 2))``, but written as a
    reshape + max: on CPU the gradient of ``lax.reduce_window`` (select_and_scatter)
    made LeNet-5's training step ~1.8x slower (59 ms vs 32 ms per batch of 128). On an
    exact tie the gradient is split between the tied inputs instead of going to one.

    The gradient is JAX's own for ``max`` (bit for bit, ties included), written out
    (``_max_pool_2x2_bwd``) so that the backward pass recomputes the window maxima
    from ``x`` instead of keeping a float mask of the maxima from the forward pass:
    4-6% faster LeNet-5 steps on the 2-core CPU (interleaved A/B in one process,
    twice). As in :func:`experiments.kernels.conv.conv2d_valid`, the primal is plain JAX
    (``sparsify`` works) and forward-mode autodiff is not supported.
    """
    return _reshape_max(x)


@max_pool_2x2.defjvp
def _max_pool_2x2_jvp(primals, tangents):
    return jax.jvp(_max_pool_2x2_vjp, primals, tangents)

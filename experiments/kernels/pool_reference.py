"""The pure-JAX gradient of 2x2 stride-2 max pooling (JAX's own for ``max``, ties split).

Both :mod:`experiments.kernels.pool` (its backward pass off the native path) and
:mod:`experiments.kernels.native_kernels` (the VJP of its one-pass CPU twin) use it.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["max_pool_2x2_grad_jax"]


def max_pool_2x2_grad_jax(x: jax.Array, g: jax.Array) -> jax.Array:
    n, h, w, c = x.shape
    windows = x.reshape(n, h // 2, 2, w // 2, 2, c)
    hit = windows == windows.max(axis=(2, 4), keepdims=True)
    ties = hit.sum(axis=(2, 4), keepdims=True).astype(g.dtype)
    share = g[:, :, None, :, None, :] / ties
    return jnp.where(hit, share, jnp.zeros_like(share)).reshape(n, h, w, c)

"""XLA's convolution and its gradients as the reference for the convolution tests."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

HIGHEST = lax.Precision.HIGHEST


def xla_conv(x, w):
    """VALID stride-1 NHWC/HWIO convolution at full float32 precision."""
    return lax.conv_general_dilated(
        x, w, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"), precision=HIGHEST
    )


def xla_case(x_shape, w_shape, seed):
    """Random ``x``, ``w``, an output gradient ``g`` and XLA's ``(dx, dw)`` for it."""
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.standard_normal(x_shape, np.float32))
    w = jnp.asarray(rng.standard_normal(w_shape, np.float32))
    y, pullback = jax.vjp(xla_conv, x, w)
    g = jnp.asarray(rng.standard_normal(y.shape, np.float32))
    return x, w, g, pullback(g)

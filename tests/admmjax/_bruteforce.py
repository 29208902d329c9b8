"""Brute-force NumPy references for the selection and projection tests."""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

DTYPES = {"float32": np.float32, "float16": np.float16, "bfloat16": jnp.bfloat16}


def magnitudes(x) -> np.ndarray:
    """``|x|`` as float64 (exact for float32/16 and bfloat16), flattened."""
    return np.abs(np.asarray(x).astype(np.float64)).ravel()


def ref_mask(x, k: int) -> np.ndarray:
    """Keeps the ``k`` largest ``|x|``; ties go to the lowest flat index."""
    x = np.asarray(x)
    order = np.argsort(-magnitudes(x), kind="stable")
    mask = np.zeros(x.size, bool)
    mask[order[: max(0, min(k, x.size))]] = True
    return mask.reshape(x.shape)


def ref_project(x, k: int) -> np.ndarray:
    x = np.asarray(x)
    return np.where(ref_mask(x, k), x, np.zeros((), x.dtype))


def keep_of(sparsity: float, n: int) -> int:
    """``n - floor(s n)`` in exact Python arithmetic."""
    return n - math.floor(sparsity * n)


def dist(a, b) -> float:
    d = np.asarray(a).astype(np.float64) - np.asarray(b).astype(np.float64)
    return float(np.sqrt(np.sum(d * d)))


# A fixed menu of shapes (1-D to 4-D, sizes 1 to 36): every new shape costs an XLA
# compilation, so drawing from a few keeps the suite fast while values vary freely.
SHAPES = [(1,), (9,), (4, 6), (2, 3, 4), (2, 2, 3, 3)]
shapes = st.sampled_from(SHAPES)

# A small value set makes ties the rule rather than the exception.
tie_values = st.sampled_from([0.0, -0.0, 1.0, -1.0, 0.5, -0.5, 2.0, -2.0])


@st.composite
def arrays(draw, dtype_name=None, ties=None, shape=None, allow_infinity=False):
    """A float array of any dtype in :data:`DTYPES`, often with heavy ties.

    Non-tie values span the dtype's range, subnormals included; float32 draws are
    rounded to bfloat16 for bfloat16 leaves (the references use the rounded values).
    """
    name = dtype_name or draw(st.sampled_from(sorted(DTYPES)))
    shape = shape or draw(shapes)
    if ties is None:
        ties = draw(st.booleans())
    if ties:
        elements = tie_values
    else:
        width = 16 if name == "float16" else 32
        elements = st.floats(width=width, allow_nan=False, allow_infinity=allow_infinity)
    x = draw(hnp.arrays(np.float32, shape, elements=elements))
    with np.errstate(over="ignore"):
        x = x.astype(DTYPES[name])
    if not allow_infinity:
        # bfloat16 rounding can overflow the largest float32 values to inf.
        x = np.where(np.isinf(x), np.zeros((), x.dtype), x)
    return x

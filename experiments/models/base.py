"""What every model here shares: the pure ``apply_fn`` view, abstract params, counts.

Every model takes NHWC float32 images in [0, 1] (see `experiments.data.mnist.to_float`)
and returns logits. The forward pass is ``model(x, *, train=False, rngs=None)``:

* ``train`` switches dropout on; it is a Python bool, so it must be static under
  ``jax.jit`` (the training step fixes it, or use ``static_argnames="train"``).
* ``rngs`` is a ``jax.random`` key (or ``nnx.Rngs``) used only by dropout when
  ``train=True``. Models keep no RNG state of their own, so the whole module state is
  its ``nnx.Param`` variables: ``functional`` gives a pure ``apply_fn(params, x, train,
  rng)`` and the training step splits a fresh key per step (``jax.random.fold_in(key,
  step)``), which also makes dropout reproducible on resume.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

__all__ = ["ApplyFn", "abstract_functional", "count_params", "functional"]

ApplyFn = Callable[..., jax.Array]


def functional(model: nnx.Module) -> tuple[nnx.GraphDef, nnx.State, ApplyFn]:
    """Split ``model`` into ``(graphdef, params, apply_fn)`` for pure JAX code.

    ``params`` is an ``nnx.State`` of the model's ``nnx.Param`` values with the
    ``Param`` wrappers stripped (``nnx.as_pure``), so its leaves are plain arrays and
    paths print as ``fc1/kernel`` with ``jax.tree_util.keystr(path, simple=True,
    separator="/")`` (the wrapped state would print ``fc1/kernel/value``).
    ``apply_fn(params, x, train=False, rng=None) -> logits`` is pure and jit-able; it
    also accepts the wrapped state or ``nnx.to_pure_dict(params)``. ``train`` must be a
    Python bool (static under jit). Non-parameter state (none in the models here) is
    closed over as constants.
    """
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)

    def apply_fn(
        params: nnx.State, x: jax.Array, train: bool = False, rng: jax.Array | None = None
    ) -> jax.Array:
        # merge only runs at trace time under jit; the module is rebuilt around the
        # traced parameters, so gradients flow to `params`.
        module = nnx.merge(graphdef, params, rest)
        return module(x, train=train, rngs=rng)

    return graphdef, nnx.as_pure(params), apply_fn


def abstract_functional(
    constructor: Callable[..., nnx.Module], **kwargs: Any
) -> tuple[nnx.GraphDef, nnx.State, ApplyFn]:
    """:func:`functional` of ``constructor(rngs=..., **kwargs)`` built without initialising it.

    The params leaves are ``jax.ShapeDtypeStruct`` (``nnx.eval_shape``): shapes, dtypes
    and paths at no compute or memory cost (cheap for AlexNet's 61M parameters too), as
    restore templates, sparsity-pattern checks and MAC counts need.
    """
    return functional(nnx.eval_shape(lambda: constructor(rngs=nnx.Rngs(0), **kwargs)))


def count_params(params: Any) -> int:
    """Total number of scalar parameters in a pytree (``nnx.State``, dict, Module...)."""
    if isinstance(params, nnx.Module):
        params = nnx.state(params, nnx.Param)
    return int(sum(jnp.size(leaf) for leaf in jax.tree.leaves(params)))

"""Flax NNX models of the paper: LeNet-300-100, LeNet-5 (Caffe layout) and AlexNet.

AlexNet (BVLC, for ImageNet) lives in :mod:`experiments.alexnet` and is registered here.

Every model takes NHWC float32 images in [0, 1] (see `experiments.data.to_float`) and
returns logits. The forward pass is ``model(x, *, train=False, rngs=None)``:

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

from experiments import kernels
from experiments.alexnet import AlexNet

__all__ = [
    "MODELS",
    "LeNet5",
    "LeNet300100",
    "count_params",
    "create_model",
    "functional",
]

ApplyFn = Callable[..., jax.Array]


class LeNet300100(nnx.Module):
    """784-300-100-10 MLP with ReLU (266,610 parameters).

    Attributes ``fc1``, ``fc2``, ``fc3`` give the parameter paths ``fc1/kernel``,
    ``fc1/bias``, ...; kernels are (in, out).
    """

    def __init__(self, *, rngs: nnx.Rngs, num_classes: int = 10, in_features: int = 784):
        self.fc1 = nnx.Linear(in_features, 300, rngs=rngs)
        self.fc2 = nnx.Linear(300, 100, rngs=rngs)
        self.fc3 = nnx.Linear(100, num_classes, rngs=rngs)

    def __call__(self, x: jax.Array, *, train: bool = False, rngs: Any = None) -> jax.Array:
        """Logits for images (N, 28, 28, 1) or flat inputs (N, 784); no dropout here."""
        del train, rngs  # Same signature as LeNet5 so the training step is model-agnostic.
        x = x.reshape((x.shape[0], -1))
        x = nnx.relu(self.fc1(x))
        x = nnx.relu(self.fc2(x))
        return self.fc3(x)


class LeNet5(nnx.Module):
    """Caffe's LeNet-5: conv 20@5x5, pool, conv 50@5x5, pool, fc 500 + ReLU, fc 10.

    431,080 parameters. As in Caffe's ``lenet_train_test.prototxt`` the convolutions
    have no nonlinearity (only max pooling) and only ``fc1`` (Caffe's ``ip1``) is
    followed by a ReLU. The flatten is over (H, W, C) rather than Caffe's (C, H, W):
    same parameter count, different ``fc1`` row order, so Caffe weights would need a
    permutation.

    ``dropout`` (rate, default 0: not in the Caffe model; the authors' TF recipe used
    0.5) is applied to the ``fc1`` activations when ``train=True``.
    """

    def __init__(self, *, rngs: nnx.Rngs, num_classes: int = 10, dropout: float = 0.0):
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        # experiments.conv: XLA's convolution with a cheaper input gradient on CPU.
        conv_kw = dict(padding="VALID", conv_general_dilated=kernels.conv_general_dilated)
        self.conv1 = nnx.Conv(1, 20, (5, 5), rngs=rngs, **conv_kw)
        self.conv2 = nnx.Conv(20, 50, (5, 5), rngs=rngs, **conv_kw)
        self.fc1 = nnx.Linear(4 * 4 * 50, 500, rngs=rngs)
        self.fc2 = nnx.Linear(500, num_classes, rngs=rngs)
        # No rngs stored: the key comes with each call, so the module has no RNG state
        # and split/merge round-trips only the parameters.
        self.dropout = nnx.Dropout(dropout)

    def __call__(self, x: jax.Array, *, train: bool = False, rngs: Any = None) -> jax.Array:
        """Logits for NHWC images (N, 28, 28, 1); ``rngs`` is needed when dropping out."""
        if train and self.dropout.rate > 0 and rngs is None:
            raise ValueError(
                f"LeNet5(dropout={self.dropout.rate}) called with train=True needs "
                "rngs=<jax.random key> for the dropout mask"
            )
        x = kernels.max_pool_2x2(self.conv1(x))  # (N, 24, 24, 20) -> (N, 12, 12, 20)
        x = kernels.max_pool_2x2(self.conv2(x))  # (N, 8, 8, 50) -> (N, 4, 4, 50)
        x = x.reshape((x.shape[0], -1))
        x = nnx.relu(self.fc1(x))
        x = self.dropout(x, deterministic=not train, rngs=rngs)
        return self.fc2(x)


MODELS: dict[str, type[nnx.Module]] = {
    "lenet300_100": LeNet300100,
    "lenet5": LeNet5,
    "alexnet": AlexNet,  # BVLC AlexNet for ImageNet: experiments/alexnet.py
}


def create_model(name: str, *, seed: int, **kwargs: Any) -> nnx.Module:
    """Build the registered model ``name`` with parameters initialised from ``seed``."""
    try:
        cls = MODELS[name]
    except KeyError:
        raise ValueError(
            f"unknown model {name!r}; valid names: {', '.join(sorted(MODELS))}"
        ) from None
    return cls(rngs=nnx.Rngs(seed), **kwargs)


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


def count_params(params: Any) -> int:
    """Total number of scalar parameters in a pytree (``nnx.State``, dict, Module...)."""
    if isinstance(params, nnx.Module):
        params = nnx.state(params, nnx.Param)
    return int(sum(jnp.size(leaf) for leaf in jax.tree.leaves(params)))

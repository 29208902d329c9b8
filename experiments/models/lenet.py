"""Flax NNX models of the paper's MNIST experiments: LeNet-300-100 and LeNet-5 (Caffe layout).

Conventions shared by every model (input NHWC float32 in [0, 1], ``model(x, *,
train=False, rngs=None)``) are in :mod:`experiments.models.base`. LeNet-5's ``fold_idle``
option (:func:`fold_idle_lenet5`, declared in ``LeNet5.options``) folds the weights
that cannot change its outputs; the reasoning is in the docstring below it.
"""

from __future__ import annotations

import types
from collections.abc import Mapping
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from experiments import schema

try:  # looked up at call time (bench_epoch swaps them for its A/B runs)
    from experiments import kernels
except ImportError:  # without experiments/kernels/: Flax's own ops (same values, slower)
    kernels = types.SimpleNamespace(
        conv_general_dilated=jax.lax.conv_general_dilated,
        max_pool_2x2=lambda x: nnx.max_pool(x, (2, 2), strides=(2, 2)),
    )

__all__ = ["LeNet5", "LeNet300100", "fold_idle_lenet5", "idle_weights"]


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

    ``options`` declares the run options LeNet-5 takes (collected by
    :mod:`experiments.config`): ``dropout`` goes to the constructor, ``fold_idle``
    transforms the loaded dense params (:func:`fold_idle_lenet5`).
    """

    options: ClassVar[Mapping[str, schema.Option]] = {
        "dropout": schema.Option(
            float, 0.0, "LeNet-5: dropout rate on the fc1 activations, a fraction in [0, 1)",
            rule=schema.FRACTION,
        ),
        "fold_idle": schema.Option(
            bool, False,
            "LeNet-5, with --pretrained: first zero the weights that cannot change the "
            "outputs, folding those on constant units into biases (same function), true or false",
            on_pretrained=lambda params: _folded_params(params), needs="pretrained",
        ),
    }  # fmt: skip

    def __init__(self, *, rngs: nnx.Rngs, num_classes: int = 10, dropout: float = 0.0):
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        # experiments.kernels.conv: XLA's convolution with a cheaper input gradient on CPU.
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


# --------------------------------------------------------------------------- fold_idle

_LAYERS = ("conv1", "conv2", "fc1", "fc2")


def _live_masks(params: Any) -> dict[str, np.ndarray]:
    """The nonzero kernel weights of a LeNet-5 that can change its outputs.

    A weight is idle when it reads a unit with no nonzero input weight (a constant) or
    writes a unit that no later nonzero weight reads; dropping one idle weight can
    idle others, so this repeats until nothing changes.
    """
    nz = {k: np.asarray(params[k]["kernel"]) != 0 for k in _LAYERS}
    c2 = nz["conv2"].shape[-1]
    while True:
        before = sum(int(v.sum()) for v in nz.values())
        # Units with some input weight (an input image pixel always varies).
        fed1 = nz["conv1"].any(axis=(0, 1, 2))
        fed2 = nz["conv2"].any(axis=(0, 1, 2))
        fed3 = nz["fc1"].any(axis=0)
        # Units some later weight reads (every logit is read).
        read1 = nz["conv2"].any(axis=(0, 1, 3))
        read2 = nz["fc1"].reshape(4, 4, c2, -1).any(axis=(0, 1, 3))  # flatten order HWC
        read3 = nz["fc2"].any(axis=1)
        nz["conv1"] &= read1
        nz["conv2"] &= fed1[None, None, :, None] & read2
        nz["fc1"] &= (np.tile(fed2, 16)[:, None]) & read3[None, :]
        nz["fc2"] &= fed3[:, None]
        if sum(int(v.sum()) for v in nz.values()) == before:
            return nz


def idle_weights(params: Any) -> dict[str, int]:
    """Per layer, the nonzero kernel weights of a LeNet-5 that cannot change its outputs.

    Those reading a unit with no nonzero input weight (a constant, which the next
    layer's bias can absorb: :func:`fold_idle_lenet5`) or writing a unit that no later
    nonzero weight reads. Unstructured pruning leaves such weights too: a layer's
    projection does not know which units the other layers dropped.
    """
    live = _live_masks(params)
    return {
        f"{k}/kernel": int(np.count_nonzero(params[k]["kernel"])) - int(live[k].sum())
        for k in _LAYERS
    }


def _folded_params(params: Any) -> Any:
    """``fold_idle`` on loaded dense params: the same tree with idle weights zeroed."""
    folded = fold_idle_lenet5(params)  # plain dicts, same leaf order
    return jax.tree.unflatten(jax.tree.structure(params), map(jnp.asarray, jax.tree.leaves(folded)))


def fold_idle_lenet5(params: Any) -> dict[str, dict[str, np.ndarray]]:
    """The same LeNet-5 function with every idle weight zeroed (shapes unchanged).

    Weights on a constant unit are folded into the next layer's bias (as
    :func:`shrink_lenet5` does before it removes units); weights into a unit nothing
    reads are dropped. Exact up to float rounding. A progressive stage that carries
    masks then keeps these weights at zero, so its projections spend the budget on
    units that matter.
    """
    p = _fold_idle(params)
    return {
        k: {n: v.astype(np.asarray(params[k][n]).dtype) for n, v in d.items()} for k, d in p.items()
    }


def _fold_idle(params: Any) -> dict[str, dict[str, np.ndarray]]:
    """:func:`fold_idle_lenet5` in float64."""
    live = _live_masks(params)
    p = {k: {n: np.asarray(v, np.float64).copy() for n, v in params[k].items()} for k in _LAYERS}
    k2, k3, k4 = (p[k]["kernel"] for k in _LAYERS[1:])
    c2 = k2.shape[-1]
    # Constant units: no live input weight. Biases are updated in forward order, so
    # a unit made constant by folds upstream gets its folded value.
    for i in np.flatnonzero(~live["conv1"].any(axis=(0, 1, 2))):
        p["conv2"]["bias"] += p["conv1"]["bias"][i] * k2[:, :, i, :].sum(axis=(0, 1))
        k2[:, :, i, :] = 0.0
    rows = k3.reshape(4, 4, c2, -1)  # a view: flatten order HWC
    for j in np.flatnonzero(~live["conv2"].any(axis=(0, 1, 2))):
        p["fc1"]["bias"] += p["conv2"]["bias"][j] * rows[:, :, j, :].sum(axis=(0, 1))
        rows[:, :, j, :] = 0.0
    for u in np.flatnonzero(~live["fc1"].any(axis=0)):
        p["fc2"]["bias"] += max(p["fc1"]["bias"][u], 0.0) * k4[u, :]
        k4[u, :] = 0.0
    for k in _LAYERS:  # what is left idle writes unread units: drop it
        p[k]["kernel"] *= live[k]
    return p

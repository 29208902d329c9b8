"""BVLC AlexNet in Flax NNX (the paper's ImageNet model), and loading converted weights.

Layers (Caffe's ``bvlc_alexnet/deploy.prototxt``; input 227x227x3)::

    conv1  96 @ 11x11 / 4            -> ReLU -> LRN -> max pool 3x3 / 2   (55 -> 27)
    conv2 256 @ 5x5, pad 2, groups 2 -> ReLU -> LRN -> max pool 3x3 / 2   (27 -> 13)
    conv3 384 @ 3x3, pad 1           -> ReLU
    conv4 384 @ 3x3, pad 1, groups 2 -> ReLU
    conv5 256 @ 3x3, pad 1, groups 2 -> ReLU -> max pool 3x3 / 2          (13 -> 6)
    fc6 9216 -> 4096 -> ReLU -> dropout;  fc7 4096 -> 4096 -> ReLU -> dropout;  fc8 -> 1000

60,965,224 parameters with biases (60,954,656 weights): the grouped convolutions of
the original two-GPU model are kept (``feature_group_count=2``), so conv2, conv4 and
conv5 have kernels of shape ``(kh, kw, in / 2, out)``; the per-layer weight counts
are those of the paper's Tables 3-4 (conv1 34.8K, conv2 307.2K, ..., fc8 4.1M).

LRN is Caffe's ``ACROSS_CHANNELS`` local response normalisation,
``b_c = a_c / (k + alpha / n * sum_{|c' - c| <= n // 2} a_{c'}^2) ** beta`` with
``n = 5, alpha = 1e-4, beta = 0.75, k = 1`` (channels beyond the edges count as 0).
Max pooling is 3x3 stride 2 without padding; Caffe rounds pooled sizes up, but every
pooled size here is exact (55, 27, 13 -> 27, 13, 6), so the two conventions agree.

Input convention: like every model in :mod:`experiments.models`, NHWC float32 **RGB**
in [0, 1]. The model rescales to [0, 255] and subtracts the per-channel ImageNet mean
(BVLC's mean image averaged over pixels, in RGB order; ``std`` 1), which is the
input a Caffe AlexNet was trained on apart from the channel order, so converted
Caffe weights apply unchanged once conv1's input channels are flipped BGR -> RGB
(:func:`convert_caffe` does it). Other normalisations: pass ``mean`` and ``std``.

Dropout (rate ``dropout``, default 0.5 as in BVLC) acts on the fc6 and fc7
activations when ``train=True``; the key comes with each call (``rngs=``), as in
:class:`experiments.models.lenet.LeNet5`. Initialisation is Flax's (LeCun normal kernels,
zero biases) rather than BVLC's Gaussians: the paper starts from pretrained weights.

Pretrained weights (:func:`load_pretrained`) come from a local ``.npz`` whose keys are
the parameter paths, in this module's layout::

    conv1/kernel (11, 11, 3, 96)    conv1/bias (96,)     input channels in RGB order
    conv2/kernel (5, 5, 48, 256)    conv2/bias (256,)    HWIO, I = in / groups
    conv3/kernel (3, 3, 256, 384)   conv3/bias (384,)
    conv4/kernel (3, 3, 192, 384)   conv4/bias (384,)
    conv5/kernel (3, 3, 192, 256)   conv5/bias (256,)
    fc6/kernel (9216, 4096)         fc6/bias (4096,)     rows in (H, W, C) flatten order
    fc7/kernel (4096, 4096)         fc7/bias (4096,)     (in, out)
    fc8/kernel (4096, 1000)         fc8/bias (1000,)

:func:`convert_caffe` produces it from Caffe's blobs (``net.params[layer][0/1].data``
of ``bvlc_alexnet.caffemodel``, saved by pycaffe as ``{"conv1/0": W, "conv1/1": b,
...}``): conv kernels OIHW -> HWIO, conv1's input channels BGR -> RGB, fc6's input
rows from Caffe's (C, H, W) flatten order to ours (H, W, C), fc kernels transposed.
``python -m experiments.alexnet convert CAFFE_BLOBS.npz OUT.npz`` runs it
(the CLI in :mod:`experiments.alexnet`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from experiments import schema
from experiments.models.base import abstract_functional

__all__ = [
    "BVLC_MEAN_RGB",
    "INPUT_SHAPE",
    "NUM_PARAMS",
    "AlexNet",
    "convert_caffe",
    "expected_shapes",
    "load_pretrained",
    "local_response_norm",
    "max_pool_3x3_s2",
]

INPUT_SHAPE = (227, 227, 3)
NUM_PARAMS = 60_965_224
# BVLC's ilsvrc_2012_mean.npy averaged over pixels: (B, G, R) = (104.0, 116.7, 122.7).
BVLC_MEAN_RGB = (122.7, 116.7, 104.0)

LAYERS = ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8")


def local_response_norm(
    x: jax.Array, size: int = 5, alpha: float = 1e-4, beta: float = 0.75, k: float = 1.0
) -> jax.Array:
    """Caffe's across-channel LRN of NHWC ``x``: ``x / (k + alpha/size * S) ** beta``.

    ``S`` is the sum of squares over a window of ``size`` channels centred on each
    channel, zero-padded at the edges (Caffe divides ``alpha`` by ``size``).
    """
    half = size // 2
    window = jax.lax.reduce_window(
        x * x,
        0.0,
        jax.lax.add,
        window_dimensions=(1, 1, 1, size),
        window_strides=(1, 1, 1, 1),
        padding=((0, 0), (0, 0), (0, 0), (half, size - 1 - half)),
    )
    return x * (k + (alpha / size) * window) ** (-beta)


def max_pool_3x3_s2(x: jax.Array) -> jax.Array:
    """Overlapping 3x3 stride-2 max pooling of NHWC ``x``, no padding."""
    return nnx.max_pool(x, (3, 3), strides=(2, 2), padding="VALID")


class AlexNet(nnx.Module):
    """BVLC AlexNet (see the module docstring): 60,965,224 parameters, 227x227x3 input.

    ``num_classes`` (default 1000) sets fc8; ``dropout`` (default 0.5) the rate on fc6
    and fc7; ``lrn`` (default True) switches the two LRN layers; ``mean`` and ``std``
    (per RGB channel, on the 0..255 scale) normalise the [0, 1] input.

    ``options`` declares the run options AlexNet takes (collected by
    :mod:`experiments.config`); a run passes its ``dropout`` (default 0) to the
    constructor.
    """

    options: ClassVar[Mapping[str, schema.Option]] = {
        "dropout": schema.Option(
            float, 0.0,
            "AlexNet: dropout rate on the fc6 and fc7 activations, a fraction in [0, 1)",
            rule=schema.FRACTION,
        ),
    }  # fmt: skip

    def __init__(
        self,
        *,
        rngs: nnx.Rngs,
        num_classes: int = 1000,
        dropout: float = 0.5,
        lrn: bool = True,
        mean: Sequence[float] = BVLC_MEAN_RGB,
        std: Sequence[float] = (1.0, 1.0, 1.0),
    ):
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
            raise ValueError(f"mean and std need 3 RGB values, std > 0; got {mean}, {std}")
        self.conv1 = nnx.Conv(3, 96, (11, 11), strides=(4, 4), padding="VALID", rngs=rngs)
        self.conv2 = nnx.Conv(96, 256, (5, 5), padding=2, feature_group_count=2, rngs=rngs)
        self.conv3 = nnx.Conv(256, 384, (3, 3), padding=1, rngs=rngs)
        self.conv4 = nnx.Conv(384, 384, (3, 3), padding=1, feature_group_count=2, rngs=rngs)
        self.conv5 = nnx.Conv(384, 256, (3, 3), padding=1, feature_group_count=2, rngs=rngs)
        self.fc6 = nnx.Linear(6 * 6 * 256, 4096, rngs=rngs)
        self.fc7 = nnx.Linear(4096, 4096, rngs=rngs)
        self.fc8 = nnx.Linear(4096, num_classes, rngs=rngs)
        self.dropout = nnx.Dropout(dropout)
        self.lrn = lrn
        # Plain tuples (static), not arrays: the module's state stays its nnx.Params.
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)

    def __call__(self, x: jax.Array, *, train: bool = False, rngs: Any = None) -> jax.Array:
        """Logits for NHWC RGB images (N, 227, 227, 3) in [0, 1]."""
        if x.ndim != 4 or tuple(x.shape[1:]) != INPUT_SHAPE:
            raise ValueError(
                f"AlexNet takes NHWC images of shape (N, {', '.join(map(str, INPUT_SHAPE))}), "
                f"got {tuple(x.shape)} (crop ImageNet images to 227x227 as BVLC did)"
            )
        if train and self.dropout.rate > 0 and rngs is None:
            raise ValueError(
                f"AlexNet(dropout={self.dropout.rate}) called with train=True needs "
                "rngs=<jax.random key> for the dropout masks"
            )
        mean = jnp.asarray(self.mean, x.dtype)
        inv_std = 1.0 / jnp.asarray(self.std, x.dtype)
        x = (x * 255.0 - mean) * inv_std
        norm = local_response_norm if self.lrn else (lambda v: v)
        x = max_pool_3x3_s2(norm(nnx.relu(self.conv1(x))))  # (N, 55, 55, 96) -> 27
        x = max_pool_3x3_s2(norm(nnx.relu(self.conv2(x))))  # (N, 27, 27, 256) -> 13
        x = nnx.relu(self.conv3(x))
        x = nnx.relu(self.conv4(x))
        x = max_pool_3x3_s2(nnx.relu(self.conv5(x)))  # (N, 13, 13, 256) -> 6
        x = x.reshape((x.shape[0], -1))  # (H, W, C) order
        if train and self.dropout.rate > 0:
            rng6, rng7 = jax.random.split(rngs)
        else:
            rng6 = rng7 = None
        x = self.dropout(nnx.relu(self.fc6(x)), deterministic=not train, rngs=rng6)
        x = self.dropout(nnx.relu(self.fc7(x)), deterministic=not train, rngs=rng7)
        return self.fc8(x)


# --------------------------------------------------------------------------- weights


def expected_shapes(num_classes: int = 1000) -> dict[str, tuple[int, ...]]:
    """Parameter path -> shape of :class:`AlexNet` (the ``.npz`` layout)."""
    params = abstract_functional(AlexNet, num_classes=num_classes)[1]
    flat = jax.tree_util.tree_flatten_with_path(params)[0]
    return {jax.tree_util.keystr(p, simple=True, separator="/"): tuple(v.shape) for p, v in flat}


def load_pretrained(path: str | os.PathLike, like: Any) -> Any:
    """Params shaped like ``like`` (an ``nnx.State`` or dict) filled from ``path``.

    ``path`` is an ``.npz`` (or a pickled-free ``.npy`` holding a dict, written by
    ``np.save(path, {...})``) whose keys are ``like``'s parameter paths (``conv1/kernel``,
    ``fc8/bias``...; see the module docstring for AlexNet's). Works for any model.
    Every leaf must be present with the exact shape; extra keys are an error too, so a
    file for another model or layout is refused with the list of what differs. Values
    are cast to each leaf's dtype.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"pretrained weights {path!r} do not exist")
    arrays = _read_arrays(path)
    flat, treedef = jax.tree_util.tree_flatten_with_path(like)
    paths = [jax.tree_util.keystr(p, simple=True, separator="/") for p, _ in flat]
    problems = []
    missing = [p for p in paths if p not in arrays]
    if missing:
        problems.append(f"missing keys {missing}")
    extra = sorted(set(arrays) - set(paths))
    if extra:
        problems.append(f"unexpected keys {extra}")
    for p, (_, leaf) in zip(paths, flat, strict=True):
        if p in arrays and tuple(arrays[p].shape) != tuple(leaf.shape):
            problems.append(f"{p} has shape {tuple(arrays[p].shape)}, expected {tuple(leaf.shape)}")
    if problems:
        expected = ", ".join(
            f"{p} {tuple(leaf.shape)}" for p, (_, leaf) in zip(paths, flat, strict=True)
        )
        raise ValueError(
            f"pretrained weights {path}: " + "; ".join(problems) + f". Expected: {expected}"
        )
    leaves = [
        jnp.asarray(arrays[p], dtype=leaf.dtype) for p, (_, leaf) in zip(paths, flat, strict=True)
    ]
    return jax.tree_util.tree_unflatten(treedef, leaves)


def _read_arrays(path: str) -> dict[str, np.ndarray]:
    if path.endswith(".npy"):
        obj = np.load(path, allow_pickle=True)  # a dict saved with np.save needs pickle
        if obj.dtype != object or obj.shape != ():
            raise ValueError(f"{path}: expected a dict saved by np.save, got array {obj.shape}")
        obj = obj.item()
        if not isinstance(obj, Mapping):
            raise ValueError(f"{path}: expected a dict of arrays, got {type(obj).__name__}")
        return {str(k): np.asarray(v) for k, v in obj.items()}
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def convert_caffe(blobs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """This module's layout from Caffe's AlexNet blobs ``{"conv1/0": W, "conv1/1": b, ...}``.

    Caffe stores conv kernels as (out, in / groups, kh, kw) on BGR input, and inner
    product weights as (out, in) with fc6's input in (C, H, W) order. Returns float32
    arrays keyed ``conv1/kernel``, ``conv1/bias``, ... ready for :func:`load_pretrained`.
    """
    shapes = expected_shapes(int(np.shape(blobs.get("fc8/1", np.zeros(1000)))[0]))
    out: dict[str, np.ndarray] = {}
    for layer in LAYERS:
        for i in (0, 1):
            if f"{layer}/{i}" not in blobs:
                raise ValueError(f"Caffe blobs lack {layer}/{i}; keys: {sorted(blobs)}")
        w = np.asarray(blobs[f"{layer}/0"], np.float32)
        b = np.asarray(blobs[f"{layer}/1"], np.float32).reshape(-1)
        if layer.startswith("conv"):
            if w.ndim != 4:
                raise ValueError(f"{layer}/0 must be 4-D (out, in, kh, kw), got {w.shape}")
            w = w.transpose(2, 3, 1, 0)  # OIHW -> HWIO
            if layer == "conv1":
                w = w[:, :, ::-1, :]  # BGR -> RGB input channels
        else:
            w = w.reshape(w.shape[0], -1)  # Caffe may store (out, in, 1, 1)
            if layer == "fc6":
                c, hw = 256, 6
                w = w.reshape(-1, c, hw, hw).transpose(0, 2, 3, 1).reshape(w.shape[0], -1)
            w = w.T  # (out, in) -> (in, out)
        for name, arr in (("kernel", w), ("bias", b)):
            key = f"{layer}/{name}"
            if arr.shape != shapes[key]:
                raise ValueError(
                    f"Caffe {layer} gives {key} of shape {arr.shape}, expected {shapes[key]}"
                )
            out[key] = np.ascontiguousarray(arr)
    return out

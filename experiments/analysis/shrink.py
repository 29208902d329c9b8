"""A structurally pruned LeNet-5 rebuilt as a smaller dense network with the same outputs.

Structured pruning zeros whole filters (``Structured(..., axis=-1)``). A zeroed filter
still emits its bias: a constant channel. Through VALID convolutions, max pooling and
the flatten, a constant channel adds a constant to every output of the next layer, so
it can be folded into that layer's bias and the channel removed:

* conv1 filter ``i`` (bias ``b``): conv2's bias gains ``b * sum_{h,w} K2[h, w, i, :]``;
* conv2 filter ``j``: fc1's bias gains ``b * sum`` of the 16 fc1 rows that read channel
  ``j`` (flatten order (H, W, C) of ``experiments.models.LeNet5``);
* fc1 column ``k``: fc2's bias gains ``relu(b) * W2[k, :]``.

The result is exact up to float rounding (tested against the pruned model's logits).
For any pruned LeNet-5 (unstructured too) the CLI (``python -m experiments.shrink
WORKDIR``) also counts the idle weights (:func:`experiments.models.lenet.idle_weights`):
nonzero weights that cannot change the outputs.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from experiments.models.lenet import fold_idle_lenet5

__all__ = ["count", "lenet5_forward", "shapes", "shrink_lenet5"]

Params = dict[str, dict[str, np.ndarray]]


def _kept(kernel: np.ndarray) -> np.ndarray:
    """Indices of the output slices (last axis) with any nonzero weight."""
    return np.flatnonzero(np.abs(kernel).reshape(-1, kernel.shape[-1]).sum(axis=0) > 0)


def shrink_lenet5(params: Any) -> Params:
    """The smaller dense LeNet-5 (plain numpy dicts ``{layer: {kernel, bias}}``).

    Idle weights are folded first (:func:`experiments.models.lenet.fold_idle_lenet5`),
    then every unit left without a weight is removed.
    """
    p = fold_idle_lenet5(params)
    k1, k2, k3 = (_kept(p[n]["kernel"]) for n in ("conv1", "conv2", "fc1"))
    c2 = p["conv2"]["kernel"].shape[-1]
    rows = p["fc1"]["kernel"].reshape(4, 4, c2, -1)  # (H, W, C, out): flatten order HWC
    small = {
        "conv1": {"kernel": p["conv1"]["kernel"][..., k1], "bias": p["conv1"]["bias"][k1]},
        "conv2": {
            "kernel": p["conv2"]["kernel"][:, :, k1][..., k2],
            "bias": p["conv2"]["bias"][k2],
        },
        "fc1": {
            "kernel": rows[:, :, k2, :].reshape(-1, rows.shape[-1])[:, k3],
            "bias": p["fc1"]["bias"][k3],
        },
        "fc2": {"kernel": p["fc2"]["kernel"][k3, :], "bias": p["fc2"]["bias"]},
    }
    return {k: {n: v.astype(np.float32) for n, v in d.items()} for k, d in small.items()}


def lenet5_forward(p: Params, x: jax.Array) -> jax.Array:
    """LeNet-5's forward pass (as ``experiments.models.LeNet5``) for any channel counts."""
    dn = ("NHWC", "HWIO", "NHWC")

    def pool(h):
        n, hh, ww, c = h.shape
        return h.reshape(n, hh // 2, 2, ww // 2, 2, c).max(axis=(2, 4))

    h = jax.lax.conv_general_dilated(x, p["conv1"]["kernel"], (1, 1), "VALID",
                                     dimension_numbers=dn)  # fmt: skip
    h = pool(h + p["conv1"]["bias"])
    h = jax.lax.conv_general_dilated(h, p["conv2"]["kernel"], (1, 1), "VALID",
                                     dimension_numbers=dn)  # fmt: skip
    h = pool(h + p["conv2"]["bias"]).reshape(x.shape[0], -1)
    h = jax.nn.relu(h @ p["fc1"]["kernel"] + p["fc1"]["bias"])
    return h @ p["fc2"]["kernel"] + p["fc2"]["bias"]


def shapes(p: Params) -> dict[str, list[int]]:
    return {f"{k}/kernel": list(v["kernel"].shape) for k, v in p.items()}


def count(p: Params) -> int:
    return int(sum(v.size for d in p.values() for v in d.values()))

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
For any pruned LeNet-5 (unstructured too) ``smaller_model.json`` also counts the idle
weights (:func:`idle_weights`): nonzero weights that cannot change the outputs.

    python -m experiments.shrink experiments/results/lenet5_structured
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from experiments.kernels import configure_cpu

Params = dict[str, dict[str, np.ndarray]]


def _kept(kernel: np.ndarray) -> np.ndarray:
    """Indices of the output slices (last axis) with any nonzero weight."""
    return np.flatnonzero(np.abs(kernel).reshape(-1, kernel.shape[-1]).sum(axis=0) > 0)


def shrink_lenet5(params: Any) -> Params:
    """The smaller dense LeNet-5 (plain numpy dicts ``{layer: {kernel, bias}}``).

    Idle weights are folded first (:func:`fold_idle_lenet5`), then every unit left
    without a weight is removed.
    """
    p = _fold_idle(params)
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


def fold_idle_lenet5(params: Any) -> Params:
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


def _fold_idle(params: Any) -> Params:
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


def shapes(p: Params) -> dict[str, list[int]]:
    return {f"{k}/kernel": list(v["kernel"].shape) for k, v in p.items()}


def count(p: Params) -> int:
    return int(sum(v.size for d in p.values() for v in d.values()))


def main(argv: list[str] | None = None) -> dict[str, Any]:
    configure_cpu()  # before JAX starts its backend: XLA reads XLA_FLAGS then
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("workdir", help="a finished LeNet-5 run (its pruned/)")
    args = parser.parse_args(argv)
    from experiments import data as data_lib
    from experiments import evaluate

    cfg, params = evaluate.load_params(args.workdir)
    if cfg.model != "lenet5":
        parser.error(f"{args.workdir} holds a {cfg.model} run; shrink rebuilds LeNet-5 only")
    full = {k: {n: np.asarray(v) for n, v in params[k].items()} for k in params}
    small = shrink_lenet5(full)
    x, y = data_lib.load_split("mnist", "test")
    xf = data_lib.to_float(x)
    logits_full = jax.jit(lenet5_forward)(full, xf)
    logits_small = jax.jit(lenet5_forward)(small, xf)
    result = {
        "dense_shapes": shapes(full),
        "smaller_shapes": shapes(small),
        "dense_params": count(full),
        "smaller_params": count(small),
        "test_accuracy_smaller": float(jnp.mean(jnp.argmax(logits_small, -1) == y)),
        "test_accuracy_pruned": float(jnp.mean(jnp.argmax(logits_full, -1) == y)),
        "max_abs_logit_difference": float(jnp.max(jnp.abs(logits_full - logits_small))),
        "nonzero_weights": int(sum(np.count_nonzero(d["kernel"]) for d in full.values())),
        "idle_weights": idle_weights(full),
    }
    with open(os.path.join(args.workdir, "smaller_model.json"), "w") as f:
        json.dump(result, f, indent=2)
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()

"""Coupled groups and ``admmjax.shrink`` on the re-typed Flax ResNet18 and lm1b decoder stack."""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from flax import nnx

import admmjax
from tests.integration._coupling import (
    head_targets,
    randomize_batchnorm,
    resnet_mid_targets,
    resnet_mid_widths,
)
from tests.integration._flax_models import DecoderStack, resnet18


def _resnet_variables(seed: int = 0) -> tuple[Any, Any, Any]:
    model = resnet18()
    x = jax.random.normal(jax.random.key(seed), (2, 32, 32, 3))
    variables = model.init(jax.random.key(seed + 1), x, train=False)
    return model, randomize_batchnorm(variables, jax.random.key(seed + 2)), x


def test_resnet_pruned_filters_zero_bn_and_next_input_channels():
    _, variables, _ = _resnet_variables()
    params, stats = variables["params"], variables["batch_stats"]
    targets, _ = resnet_mid_targets(params, stats, 0.5)
    pruned, _ = admmjax.prune(params, targets)
    jitted = jax.jit(admmjax.prune)(params, targets)[0]
    for a, b in zip(jax.tree.leaves(pruned), jax.tree.leaves(jitted), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    for block in (n for n in pruned if n.startswith("ResNetBlock_")):
        b = jax.tree.map(np.asarray, pruned[block])
        filters = np.abs(b["Conv_0"]["kernel"]).sum((0, 1, 2)) > 0
        assert filters.sum() == filters.size // 2
        np.testing.assert_array_equal(b["BatchNorm_0"]["scale"] != 0, filters)
        np.testing.assert_array_equal(b["BatchNorm_0"]["bias"] != 0, filters)
        np.testing.assert_array_equal(np.abs(b["Conv_1"]["kernel"]).sum((0, 1, 3)) > 0, filters)
        # Everything outside the group is untouched.
        np.testing.assert_array_equal(
            b["BatchNorm_1"]["bias"], np.asarray(params[block]["BatchNorm_1"]["bias"])
        )


def test_resnet_shrink_same_outputs():
    model, variables, x = _resnet_variables(seed=3)
    params, stats = variables["params"], variables["batch_stats"]
    targets, stats_targets = resnet_mid_targets(params, stats, 0.5)
    pruned, _ = admmjax.prune(params, targets)
    small, small_stats = admmjax.shrink(pruned, targets, extra=stats, extra_targets=stats_targets)
    widths = resnet_mid_widths(small)
    assert widths == [w // 2 for w in resnet_mid_widths(params)]
    assert small_stats["ResNetBlock_0"]["BatchNorm_0"]["var"].shape == (widths[0],)
    assert small["ResNetBlock_0"]["Conv_1"]["kernel"].shape[2] == widths[0]
    small_model = resnet18(mid_filters=widths)
    full_out = model.apply({"params": pruned, "batch_stats": stats}, x, train=False)
    small_out = small_model.apply({"params": small, "batch_stats": small_stats}, x, train=False)
    np.testing.assert_allclose(np.asarray(small_out), np.asarray(full_out), rtol=1e-4, atol=1e-5)
    n_full = sum(a.size for a in jax.tree.leaves(params))
    n_small = sum(a.size for a in jax.tree.leaves(small))
    assert n_small < n_full


def _decoder(heads: int, qkv: int, seed: int = 0) -> DecoderStack:
    return DecoderStack(
        vocab=32, embed=16, heads=heads, mlp=32, layers=2, qkv=qkv, rngs=nnx.Rngs(seed)
    )


def test_decoder_heads_coupled_per_layer_and_shrink_same_outputs():
    model = _decoder(heads=4, qkv=16)
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    targets = head_targets(params, admmjax.Keep(2))
    pruned, _ = jax.jit(admmjax.prune)(params, targets)
    attn = {
        n: np.asarray(pruned["blocks"]["attention"][n]["kernel"][...])
        for n in ("query", "key", "value", "out")
    }
    heads = {n: np.abs(attn[n]).sum((1, 3)) > 0 for n in ("query", "key", "value")}
    heads["out"] = np.abs(attn["out"]).sum((2, 3)) > 0
    assert heads["query"].shape == (2, 4) and np.all(heads["query"].sum(1) == 2)
    for n in ("key", "value", "out"):
        np.testing.assert_array_equal(heads[n], heads["query"])

    small_params = admmjax.shrink(pruned, targets)
    assert small_params["blocks"]["attention"]["query"]["kernel"].shape == (2, 16, 2, 4)
    assert small_params["blocks"]["attention"]["out"]["kernel"].shape == (2, 2, 4, 16)
    small_model = _decoder(heads=2, qkv=8, seed=1)
    small_graphdef, _, small_rest = nnx.split(small_model, nnx.Param, ...)
    tokens = jax.random.randint(jax.random.key(4), (3, 7), 0, 32)
    full_out = nnx.merge(graphdef, pruned, rest)(tokens)
    small_out = nnx.merge(small_graphdef, small_params, small_rest)(tokens)
    np.testing.assert_allclose(np.asarray(small_out), np.asarray(full_out), rtol=1e-4, atol=1e-5)

"""Coupled-group targets for the models of ``_flax_models`` (shared by tests and the bench).

* ResNet: in every block, the first conv's filters, its BatchNorm scale and bias and
  the second conv's input channels are one group (``<block>/mid``); the BatchNorm's
  ``batch_stats`` (``mean``, ``var``) follow that group in ``admmjax.shrink``.
* DecoderStack: in every layer, the heads of the query/key/value kernels ``(L, embed,
  heads, head_dim)`` and of the out kernel ``(L, heads, head_dim, embed)`` are one
  group, one selection per layer (``Stacked``).
"""

from __future__ import annotations

from typing import Any

import jax

import admmjax


def randomize_batchnorm(variables: Any, key: jax.Array) -> Any:
    """BatchNorm ``scale``/``bias``/``mean`` ~ N(0, 1) and ``var`` ~ U(0.5, 2), the rest kept.

    At init every block's last BN scale is 0, so a block's inner channels would not
    reach the output at all and an output comparison would prove nothing.
    """
    leaves, treedef = jax.tree.flatten(variables)
    keys = jax.random.split(key, len(leaves))
    out = []
    for path, leaf, k in zip(admmjax.leaf_paths(variables), leaves, keys, strict=True):
        if path.endswith("/var"):
            leaf = jax.random.uniform(k, leaf.shape, minval=0.5, maxval=2.0)
        elif path.endswith(("/mean", "/scale", "/bias")):
            leaf = jax.random.normal(k, leaf.shape)
        out.append(leaf)
    return jax.tree.unflatten(treedef, out)


def resnet_mid_targets(params: Any, batch_stats: Any, sparsity: Any) -> tuple[Any, Any]:
    """``(targets, stats_targets)`` coupling each block's inner channels; ``None`` elsewhere."""
    blocks = sorted(name for name in params if name.startswith("ResNetBlock_"))
    patterns, stats = {}, {}
    for block in blocks:
        group = f"{block}/mid"

        def member(axis: int, group: str = group) -> admmjax.Structured:
            return admmjax.Structured(sparsity, axis=axis, group=group)

        patterns[f"{block}/Conv_0/kernel"] = member(-1)  # HWIO: filters
        patterns[f"{block}/BatchNorm_0/*"] = member(0)  # scale, bias
        patterns[f"{block}/Conv_1/kernel"] = member(-2)  # the next conv's input channels
        stats[f"{block}/BatchNorm_0/*"] = member(0)  # mean, var
    return (
        admmjax.sparsity_by_path(params, patterns),
        admmjax.sparsity_by_path(batch_stats, stats),
    )


def resnet_mid_widths(params: Any) -> list[int]:
    """Each block's first-conv width, in block order (for ``resnet18(mid_filters=...)``)."""
    blocks = sorted((n for n in params if n.startswith("ResNetBlock_")), key=lambda n: int(n[12:]))
    return [int(params[b]["Conv_0"]["kernel"].shape[-1]) for b in blocks]


def head_targets(params: Any, sparsity: Any) -> Any:
    """Heads of every scanned layer coupled across q/k/v and the out projection."""

    def member(axis: int) -> admmjax.Stacked:
        return admmjax.Stacked(admmjax.Structured(sparsity, axis=axis, group="heads"), axis=0)

    qkv = member(1)  # (L, embed, heads, head_dim): heads is axis 1 of a layer
    return admmjax.sparsity_by_path(
        params,
        {
            "blocks/attention/query/kernel": qkv,
            "blocks/attention/key/kernel": qkv,
            "blocks/attention/value/kernel": qkv,
            "blocks/attention/out/kernel": member(0),  # (L, heads, head_dim, embed)
        },
    )

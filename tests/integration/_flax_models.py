"""Small re-typings of three Flax example models, for integration tests.

* :class:`CNN`: the Linen CNN of flax ``examples/mnist/train.py`` (Conv 32 3x3, relu,
  avg_pool 2x2, Conv 64 3x3, relu, avg_pool, flatten, Dense 256, relu, Dense 10).
* :class:`ResNet` / :func:`resnet18`: the Linen ResNet of flax
  ``examples/imagenet/models.py`` (``ResNetBlock`` with BatchNorm and the 1x1
  projection shortcut, bias-free convs with Flax's default init, the stem conv named
  ``conv_init``, zero-initialised last BN scale of each block), here for small inputs
  (e.g. 32x32) and few classes. One addition: ``mid_filters`` sets the width of each
  block's first conv (default: the block's width, i.e. Flax's model), so a model can
  be built at the sizes ``admmjax.shrink`` leaves.
* :class:`DecoderStack`: the pre-LN decoder block of flax ``examples/lm1b_nnx``
  (``EncoderDecoder1DBlock``: LayerNorm, ``nnx.MultiHeadAttention`` with
  ``use_bias=False``, ``(embed, heads, head_dim)`` query/key/value kernels and a
  ``(heads, head_dim, embed)`` out kernel, ``qkv_features = qkv``; ``MlpBlock`` with
  ``linear1``/``linear2``), stacked with ``nnx.vmap`` (create) and ``nnx.scan``
  (apply) as in Flax's scan-over-layers guide, so every kernel carries a leading
  layer axis. As in lm1b_nnx, kernels and embeddings carry logical sharding names
  (``nnx.with_partitioning``; ``eager_sharding=False`` so no mesh is needed), and the
  vmap/scan name the added axis ``"layers"`` (``transform_metadata``), the metadata
  :func:`admmjax.stacked_axes_from_nnx` reads. Dropout (rate 0 in these tests) and
  position embeddings are left out.

Re-typed from the published layouts, tiny sizes; not imported by the library.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn
from flax import nnx


class CNN(nn.Module):
    """flax examples/mnist: two conv + avg-pool stages, then two dense layers."""

    num_classes: int = 10

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = nn.Conv(features=32, kernel_size=(3, 3))(x)
        x = nn.relu(x)
        x = nn.avg_pool(x, window_shape=(2, 2), strides=(2, 2))
        x = nn.Conv(features=64, kernel_size=(3, 3))(x)
        x = nn.relu(x)
        x = nn.avg_pool(x, window_shape=(2, 2), strides=(2, 2))
        x = x.reshape((x.shape[0], -1))
        x = nn.Dense(features=256)(x)
        x = nn.relu(x)
        return nn.Dense(features=self.num_classes)(x)


class ResNetBlock(nn.Module):
    """Two 3x3 convs with BatchNorm; a 1x1 conv + BN projection when shapes change."""

    filters: int
    conv: Callable[..., Any]
    norm: Callable[..., Any]
    act: Callable[[jax.Array], jax.Array]
    strides: tuple[int, int] = (1, 1)
    mid_filters: int | None = None  # not in Flax: the first conv's width (shrunk models)

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        residual = x
        y = self.conv(self.mid_filters or self.filters, (3, 3), self.strides)(x)
        y = self.norm()(y)
        y = self.act(y)
        y = self.conv(self.filters, (3, 3))(y)
        y = self.norm(scale_init=nn.initializers.zeros_init())(y)
        if residual.shape != y.shape:
            residual = self.conv(self.filters, (1, 1), self.strides, name="conv_proj")(residual)
            residual = self.norm(name="norm_proj")(residual)
        return self.act(residual + y)


class ResNet(nn.Module):
    """flax examples/imagenet ResNet: stem conv 7x7/2 + BN + max-pool, block stages."""

    stage_sizes: Sequence[int]
    num_classes: int
    num_filters: int = 64
    dtype: Any = jnp.float32
    mid_filters: Sequence[int] | None = None  # not in Flax: per-block first-conv widths

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = True) -> jax.Array:
        conv = functools.partial(nn.Conv, use_bias=False, dtype=self.dtype)
        norm = functools.partial(
            nn.BatchNorm, use_running_average=not train, momentum=0.9, epsilon=1e-5,
            dtype=self.dtype,
        )  # fmt: skip
        x = conv(self.num_filters, (7, 7), (2, 2), padding=[(3, 3), (3, 3)], name="conv_init")(x)
        x = norm(name="bn_init")(x)
        x = nn.relu(x)
        x = nn.max_pool(x, (3, 3), strides=(2, 2), padding="SAME")
        block = 0
        for i, block_size in enumerate(self.stage_sizes):
            for j in range(block_size):
                strides = (2, 2) if i > 0 and j == 0 else (1, 1)
                mid = None if self.mid_filters is None else self.mid_filters[block]
                x = ResNetBlock(
                    self.num_filters * 2**i, conv=conv, norm=norm, act=nn.relu,
                    strides=strides, mid_filters=mid,
                )(x)  # fmt: skip
                block += 1
        x = jnp.mean(x, axis=(1, 2))
        x = nn.Dense(self.num_classes, dtype=self.dtype)(x)
        return jnp.asarray(x, self.dtype)


def resnet18(
    num_classes: int = 4, num_filters: int = 8, mid_filters: Sequence[int] | None = None
) -> ResNet:
    """ResNet18's stage sizes (2, 2, 2, 2), narrow (``num_filters`` in the stem)."""
    return ResNet(
        stage_sizes=(2, 2, 2, 2), num_classes=num_classes, num_filters=num_filters,
        mid_filters=None if mid_filters is None else tuple(mid_filters),
    )  # fmt: skip


LAYERS = "layers"  # the logical name of the stacked axis
_KERNEL_INIT = nnx.initializers.xavier_uniform()


def _named(names: tuple[str, ...], init: Callable[..., Any] = _KERNEL_INIT) -> Callable[..., Any]:
    """``init`` with lm1b_nnx's logical axis names (no mesh: ``eager_sharding=False``)."""
    return nnx.with_partitioning(init, names, eager_sharding=False)


class MlpBlock(nnx.Module):
    """lm1b_nnx MlpBlock: ``linear1`` (embed -> mlp), relu, ``linear2`` (mlp -> embed)."""

    def __init__(self, embed: int, mlp: int, *, rngs: nnx.Rngs):
        self.linear1 = nnx.Linear(embed, mlp, kernel_init=_named(("embed", "mlp")), rngs=rngs)
        self.linear2 = nnx.Linear(mlp, embed, kernel_init=_named(("mlp", "embed")), rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.linear2(nnx.relu(self.linear1(x)))


class DecoderBlock(nnx.Module):
    """Pre-LN decoder block: x + attn(LN(x)) (causal), then y + mlp(LN(y))."""

    def __init__(self, embed: int, heads: int, mlp: int, qkv: int, *, rngs: nnx.Rngs):
        ones = nnx.initializers.ones_init()
        self.ln1 = nnx.LayerNorm(embed, scale_init=_named(("embed",), ones), rngs=rngs)
        self.attention = nnx.MultiHeadAttention(
            num_heads=heads, in_features=embed, qkv_features=qkv, use_bias=False,
            broadcast_dropout=False, decode=False,
            kernel_init=_named(("embed", "heads", "kv")),
            out_kernel_init=_named(("heads", "kv", "embed")), rngs=rngs,
        )  # fmt: skip
        self.ln2 = nnx.LayerNorm(embed, scale_init=_named(("embed",), ones), rngs=rngs)
        self.mlp = MlpBlock(embed, mlp, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        mask = nnx.make_causal_mask(jnp.ones(x.shape[:2], jnp.int32))
        y = self.ln1(x)
        x = x + self.attention(y, mask=mask)
        return x + self.mlp(self.ln2(x))


class DecoderStack(nnx.Module):
    """Token embedding, ``layers`` DecoderBlocks stacked on a leading axis, logits."""

    def __init__(
        self, vocab: int = 32, embed: int = 16, heads: int = 2, mlp: int = 32,
        layers: int = 2, qkv: int | None = None, *, rngs: nnx.Rngs,
    ):  # fmt: skip
        self.embed = nnx.Embed(
            vocab, embed, embedding_init=_named(("vocab", "embed"), nnx.initializers.normal(1.0)),
            rngs=rngs,
        )  # fmt: skip

        @nnx.split_rngs(splits=layers)
        @nnx.vmap(in_axes=(0,), out_axes=0, transform_metadata={nnx.PARTITION_NAME: LAYERS})
        def create_block(rngs: nnx.Rngs) -> DecoderBlock:
            return DecoderBlock(embed, heads, mlp, qkv or embed, rngs=rngs)

        self.blocks = create_block(rngs)
        self.ln_final = nnx.LayerNorm(embed, rngs=rngs)
        self.logits = nnx.Linear(embed, vocab, rngs=rngs)

    def __call__(self, tokens: jax.Array) -> jax.Array:
        @nnx.scan(
            in_axes=(nnx.Carry, 0), out_axes=nnx.Carry,
            transform_metadata={nnx.PARTITION_NAME: LAYERS},
        )  # fmt: skip
        def forward(x: jax.Array, block: DecoderBlock) -> jax.Array:
            return block(x)

        x = forward(self.embed(tokens), self.blocks)
        return self.logits(self.ln_final(x))

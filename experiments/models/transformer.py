"""A small decoder-only NNX transformer with scanned layers (a model module, no training).

``TinyLM``: token embedding, ``layers`` pre-LN blocks (causal ``nnx.MultiHeadAttention``
with ``(embed, heads, head_dim)`` q/k/v kernels and a ``(heads, head_dim, embed)`` out
kernel, a relu MLP) created by ``nnx.vmap`` and applied by ``nnx.scan``, so each block
kernel is one leaf with a leading layer axis named ``"layers"`` in its sharding
metadata (what :func:`admmjax.stacked_axes_from_nnx` reads), then a final LayerNorm
and the output projection. For the notebooks and README recipes: tiny and fast on CPU.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx

LAYERS = "layers"


def _init(names: tuple[str, ...]) -> Any:
    # Logical axis names without a mesh (eager_sharding=False), so vmap can name its axis.
    return nnx.with_partitioning(nnx.initializers.lecun_normal(), names, eager_sharding=False)


class Block(nnx.Module):
    """x + attention(LN(x)), then + mlp(LN(.)); causal."""

    def __init__(self, embed: int, heads: int, mlp: int, qkv: int, *, rngs: nnx.Rngs):
        self.norm1 = nnx.LayerNorm(embed, rngs=rngs)
        self.attention = nnx.MultiHeadAttention(
            num_heads=heads, in_features=embed, qkv_features=qkv, decode=False,
            kernel_init=_init(("embed", "heads", "kv")),
            out_kernel_init=_init(("heads", "kv", "embed")), rngs=rngs,
        )  # fmt: skip
        self.norm2 = nnx.LayerNorm(embed, rngs=rngs)
        self.up = nnx.Linear(embed, mlp, kernel_init=_init(("embed", "mlp")), rngs=rngs)
        self.down = nnx.Linear(mlp, embed, kernel_init=_init(("mlp", "embed")), rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        causal = nnx.make_causal_mask(jnp.ones(x.shape[:2], jnp.int32))
        x = x + self.attention(self.norm1(x), mask=causal)
        return x + self.down(nnx.relu(self.up(self.norm2(x))))


class TinyLM(nnx.Module):
    """Embedding, ``layers`` scanned :class:`Block` s, LayerNorm, logits.

    ``qkv`` is the attention's total query/key/value width (``heads * head_dim``;
    default ``embed``): a model with heads removed by ``admmjax.shrink`` keeps the
    head size, so it is built with fewer ``heads`` and ``qkv = heads * head_dim``.
    """

    def __init__(
        self, vocab: int = 64, embed: int = 32, heads: int = 4, mlp: int = 64,
        layers: int = 4, qkv: int | None = None, *, rngs: nnx.Rngs,
    ):  # fmt: skip
        self.embed = nnx.Embed(vocab, embed, rngs=rngs)

        @nnx.split_rngs(splits=layers)
        @nnx.vmap(in_axes=(0,), out_axes=0, transform_metadata={nnx.PARTITION_NAME: LAYERS})
        def blocks(rngs: nnx.Rngs) -> Block:
            return Block(embed, heads, mlp, qkv or embed, rngs=rngs)

        self.blocks = blocks(rngs)
        self.norm = nnx.LayerNorm(embed, rngs=rngs)
        self.head = nnx.Linear(embed, vocab, rngs=rngs)

    def __call__(self, tokens: jax.Array) -> jax.Array:
        @nnx.scan(
            in_axes=(nnx.Carry, 0), out_axes=nnx.Carry,
            transform_metadata={nnx.PARTITION_NAME: LAYERS},
        )  # fmt: skip
        def run(x: jax.Array, block: Block) -> jax.Array:
            return block(x)

        return self.head(self.norm(run(self.embed(tokens), self.blocks)))


def next_token_loss(model: TinyLM, tokens: jax.Array) -> jax.Array:
    """Mean cross-entropy of predicting ``tokens[:, 1:]`` from ``tokens[:, :-1]``."""
    logits = model(tokens[:, :-1])
    return optax.softmax_cross_entropy_with_integer_labels(logits, tokens[:, 1:]).mean()


def copy_task(seed: int, batch: int, length: int, vocab: int) -> jax.Array:
    """Token batches whose second half repeats the first: learnable by attention."""
    half = jax.random.randint(jax.random.key(seed), (batch, length // 2), 0, vocab)
    return jnp.concatenate([half, half], axis=1)

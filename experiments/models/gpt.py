r"""A GPT (decoder-only transformer) in Flax NNX with stacked layers, and its loss in bits.

``GPT``: about nanoGPT's CPU "baby GPT" by default (4 layers, 4 heads, width 128,
context 256, vocabulary 256 = bytes, no dropout): token and learned position
embeddings, ``layers`` pre-LN blocks, a final LayerNorm and the logits, either by the
token embedding itself (``tie_embedding=True``, the default, as in GPT-2 and nanoGPT)
or by a separate output embedding ``lm_head``. A block is

.. math::
   h = x + \mathrm{drop}(\mathrm{Attn}(\mathrm{LN}_1(x))), \qquad
   y = h + \mathrm{drop}(W_2\, \mathrm{gelu}(W_1\, \mathrm{LN}_2(h)))

with causal multi-head attention (``nnx.MultiHeadAttention``: q/k/v kernels
``(embed, heads, head_dim)``, out kernel ``(heads, head_dim, embed)``, heads an axis
as in the lm1b decoder) and an MLP ``embed -> mlp_ratio * embed -> embed``.

Stacking (Flax's scan-over-layers guide): the blocks are created by ``nnx.vmap`` over
split RNG streams and applied by ``nnx.scan``, so every block parameter is one leaf
with a leading axis of size ``layers``, named ``"layers"`` in its sharding metadata
(``transform_metadata={nnx.PARTITION_NAME: "layers"}``);
:func:`admmjax.stacked_axes_from_nnx` reads that axis and ``admmjax.Stacked`` then
gives every layer its own budget.

What admmjax's default selection prunes (``admmjax.uniform_sparsity(params, s)``): the
attention's query/key/value/out kernels and the MLP's ``fc``/``proj`` kernels; the
embeddings (``token_embed``, ``position_embed``, ``lm_head``: all ``nnx.Embed``, the
untied output layer too, applied by ``attend``), LayerNorms and biases stay dense.

Init as GPT-2 / nanoGPT: normal(0.02) for kernels and embeddings, normal(0.02 /
sqrt(2 layers)) for the two projections that write the residual stream, zero biases.
Dropout (``dropout`` rate, default 0) is nanoGPT's residual dropout: on the embedding
sum and on the attention and MLP outputs (not on the attention probabilities).

The forward pass follows :mod:`experiments.models.base`: ``model(tokens, *,
train=False, rngs=None)`` with integer tokens ``(B, T)``, ``T <= context``; ``rngs`` is a
``jax.random`` key (or ``nnx.Rngs``), needed only when dropping out. The model holds no RNG state.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Mapping
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from experiments import schema

__all__ = ["GPT", "LAYERS", "SIZES", "bits_per_char", "causal_mask", "next_token_loss"]

LAYERS = "layers"  # the logical name of the stacked axis


def _init(names: tuple[str, ...], std: float) -> Any:
    # Logical axis names without a mesh (eager_sharding=False), so vmap can name its axis.
    return nnx.with_partitioning(nnx.initializers.normal(std), names, eager_sharding=False)


def causal_mask(tokens: jax.Array) -> jax.Array:
    """The attention mask of :class:`GPT` for tokens ``(B, T)``: ``(B, 1, T, T)``, t sees <= t."""
    return nnx.make_causal_mask(jnp.ones(tokens.shape[:2], jnp.int32))


class MLP(nnx.Module):
    """``proj(gelu(fc(x)))``: embed -> hidden -> embed."""

    def __init__(
        self, embed: int, hidden: int, *, bias: bool, proj_std: float, rngs: nnx.Rngs
    ):  # fmt: skip
        self.fc = nnx.Linear(
            embed, hidden, use_bias=bias, kernel_init=_init(("embed", "mlp"), 0.02), rngs=rngs
        )
        self.proj = nnx.Linear(
            hidden, embed, use_bias=bias, kernel_init=_init(("mlp", "embed"), proj_std), rngs=rngs
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.proj(nnx.gelu(self.fc(x), approximate=True))


class Block(nnx.Module):
    """Pre-LN block: ``x + drop(attn(ln1(x)))``, then ``+ drop(mlp(ln2(.)))``."""

    def __init__(
        self, embed: int, heads: int, hidden: int, *, bias: bool, dropout: float,
        proj_std: float, rngs: nnx.Rngs,
    ):  # fmt: skip
        self.ln1 = nnx.LayerNorm(embed, use_bias=bias, rngs=rngs)
        self.attention = nnx.MultiHeadAttention(
            num_heads=heads, in_features=embed, use_bias=bias, decode=False,
            kernel_init=_init(("embed", "heads", "kv"), 0.02),
            out_kernel_init=_init(("heads", "kv", "embed"), proj_std),
            keep_rngs=False, rngs=rngs,
        )  # fmt: skip
        self.ln2 = nnx.LayerNorm(embed, use_bias=bias, rngs=rngs)
        self.mlp = MLP(embed, hidden, bias=bias, proj_std=proj_std, rngs=rngs)
        self.dropout = nnx.Dropout(dropout)

    def __call__(
        self, x: jax.Array, mask: jax.Array, *, train: bool, key: jax.Array | None
    ) -> jax.Array:
        k1, k2 = jax.random.split(key) if key is not None else (None, None)
        y = self.attention(self.ln1(x), mask=mask)
        x = x + self.dropout(y, deterministic=not train, rngs=k1)
        return x + self.dropout(self.mlp(self.ln2(x)), deterministic=not train, rngs=k2)


class GPT(nnx.Module):
    """Token + position embeddings, ``layers`` stacked :class:`Block` s, LayerNorm, logits.

    ``task = "language"``: the pipeline (:mod:`experiments.train`) feeds it windows of
    bytes, trains on the next-byte cross-entropy and scores bits per character.
    ``options`` (set below the class, from the constructor's own defaults) declares its
    sizes and ``dropout`` as run options.
    """

    task: ClassVar[str] = "language"
    options: ClassVar[Mapping[str, schema.Option]]

    def __init__(
        self, *, rngs: nnx.Rngs, vocab: int = 256, context: int = 256, embed: int = 128,
        heads: int = 4, layers: int = 4, mlp_ratio: int = 4, dropout: float = 0.0,
        tie_embedding: bool = True, bias: bool = True,
    ):  # fmt: skip
        sizes = dict(vocab=vocab, context=context, embed=embed, heads=heads, layers=layers,
                     mlp_ratio=mlp_ratio)  # fmt: skip
        for name, value in sizes.items():
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"GPT: {name} must be a positive integer, got {value!r}")
        if embed % heads:
            raise ValueError(f"GPT: embed {embed} must be a multiple of heads {heads}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"GPT: dropout must be in [0, 1), got {dropout}")
        self.context = context
        self.layers = layers
        embed_init = _init(("vocab", "embed"), 0.02)
        self.token_embed = nnx.Embed(vocab, embed, embedding_init=embed_init, rngs=rngs)
        self.position_embed = nnx.Embed(
            context, embed, embedding_init=_init(("context", "embed"), 0.02), rngs=rngs
        )
        # GPT-2: the projections into the residual stream scaled by 1/sqrt(2 * layers),
        # so the stream's variance does not grow with depth at init.
        proj_std = 0.02 / math.sqrt(2 * layers)

        @nnx.split_rngs(splits=layers)
        @nnx.vmap(in_axes=(0,), out_axes=0, transform_metadata={nnx.PARTITION_NAME: LAYERS})
        def create_blocks(rngs: nnx.Rngs) -> Block:
            return Block(embed, heads, mlp_ratio * embed, bias=bias, dropout=dropout,
                         proj_std=proj_std, rngs=rngs)  # fmt: skip

        self.blocks = create_blocks(rngs)
        self.ln_final = nnx.LayerNorm(embed, use_bias=bias, rngs=rngs)
        self.lm_head = (
            None if tie_embedding else nnx.Embed(vocab, embed, embedding_init=embed_init, rngs=rngs)
        )
        self.dropout = nnx.Dropout(dropout)

    def __call__(self, tokens: jax.Array, *, train: bool = False, rngs: Any = None) -> jax.Array:
        """Logits ``(B, T, vocab)`` for integer tokens ``(B, T)``; position t sees tokens <= t."""
        if tokens.ndim != 2 or not jnp.issubdtype(tokens.dtype, jnp.integer):
            raise ValueError(
                f"GPT takes integer tokens of shape (batch, time), got {tokens.dtype} "
                f"{tokens.shape}"
            )
        if tokens.shape[1] > self.context:
            raise ValueError(f"GPT: {tokens.shape[1]} tokens exceed the context {self.context}")
        dropping = train and self.dropout.rate > 0
        if dropping and rngs is None:
            raise ValueError(
                f"GPT(dropout={self.dropout.rate}) called with train=True needs "
                "rngs=<jax.random key> for the dropout masks"
            )
        embed_key = layer_keys = None
        if dropping:
            key = rngs() if isinstance(rngs, nnx.Rngs) else rngs
            # One key for the embedding dropout, one per layer (split in two in the block).
            embed_key, layers_key = jax.random.split(key)
            layer_keys = jax.random.split(layers_key, self.layers)
        x = self.dropout(self.embed(tokens), deterministic=not dropping, rngs=embed_key)
        mask = causal_mask(tokens)

        @nnx.scan(
            in_axes=(nnx.Carry, 0, 0, None), out_axes=nnx.Carry,
            transform_metadata={nnx.PARTITION_NAME: LAYERS},
        )  # fmt: skip
        def run(x: jax.Array, block: Block, key: jax.Array | None, mask: jax.Array) -> jax.Array:
            return block(x, mask, train=dropping, key=key)

        x = self.ln_final(run(x, self.blocks, layer_keys, mask))
        head = self.token_embed if self.lm_head is None else self.lm_head
        return head.attend(x)

    def embed(self, tokens: jax.Array) -> jax.Array:
        """The first block's input ``(B, T, embed)``: token plus position embeddings (no
        dropout); a layer-by-layer driver (:mod:`experiments.oneshot`) starts here."""
        return self.token_embed(tokens) + self.position_embed(jnp.arange(tokens.shape[1]))


#: The constructor's size arguments, declared as run options (the pipeline's config and
#: the one-shot driver's take them by these names).
SIZES = ("layers", "heads", "embed", "context", "mlp_ratio", "tie_embedding", "bias")


def _default(name: str) -> Any:
    # The constructor's default, so the options never restate it.
    return inspect.signature(GPT.__init__).parameters[name].default


GPT.options = {
    "layers": schema.Option(
        int, _default("layers"), "GPT: blocks, a count", rule=schema.POSITIVE
    ),
    "heads": schema.Option(
        int, _default("heads"), "GPT: attention heads, a count", rule=schema.POSITIVE
    ),
    "embed": schema.Option(
        int, _default("embed"), "GPT: width (features per byte), a count", rule=schema.POSITIVE
    ),
    "context": schema.Option(
        int, _default("context"), "GPT: context, in bytes (the training windows' length)",
        rule=schema.POSITIVE,
    ),
    "mlp_ratio": schema.Option(
        int, _default("mlp_ratio"), "GPT: MLP hidden width over the width, an integer",
        rule=schema.POSITIVE,
    ),
    "tie_embedding": schema.Option(
        bool, _default("tie_embedding"), "GPT: logits by the token embedding, true or false"
    ),
    "bias": schema.Option(
        bool, _default("bias"), "GPT: biases in linears and norms, true or false"
    ),
    "dropout": schema.Option(
        float, _default("dropout"),
        "GPT: residual dropout rate (embeddings, attention and MLP outputs), a fraction in [0, 1)",
        rule=schema.FRACTION,
    ),
}  # fmt: skip


def bits_per_char(
    logits: jax.Array, targets: jax.Array, weights: jax.Array | None = None
) -> jax.Array:
    r"""Mean next-token cross-entropy in bits: :math:`-\frac{1}{\sum w}\sum w \log_2 p(y)`.

    ``logits`` ``(..., vocab)``, integer ``targets`` ``(...)``, optional ``weights``
    ``(...)`` (e.g. the padding mask of :func:`experiments.data.text.iterate_eval`). With
    byte tokens of ASCII text this is bits per character.
    """
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, targets.astype(jnp.int32))
    w = jnp.ones_like(ce) if weights is None else jnp.asarray(weights, ce.dtype)
    return jnp.sum(ce * w) / jnp.sum(w) / jnp.log(2.0)


def next_token_loss(
    model: GPT, windows: jax.Array, train: bool = False, rngs: Any = None
) -> jax.Array:
    """Mean cross-entropy (nats) of ``windows[:, 1:]`` given ``windows[:, :-1]``.

    ``train`` and ``rngs`` are positional-or-keyword on purpose: ``nnx.grad`` refuses
    functions with keyword-only parameters.
    """
    logits = model(windows[:, :-1], train=train, rngs=rngs)
    targets = windows[:, 1:].astype(jnp.int32)
    return optax.softmax_cross_entropy_with_integer_labels(logits, targets).mean()

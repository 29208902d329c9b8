"""The README's "what the default selection prunes" table, row by row, on real layers.

Each row names a framework and a layer; the test builds that layer (Linen, NNX, an
``nnx.vmap``-stacked NNX layer, or the plain dict the row spells out), takes its
parameter paths, and checks that ``uniform_sparsity``'s default selection prunes
exactly the leaves in the "pruned" column and leaves exactly those in the "dense"
column dense. Every row must have a builder and every builder a row.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn
from flax import nnx

import admmjax

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()
KEY = jax.random.key(0)


def _linen(module: nn.Module, x: jax.Array) -> Any:
    return module.init(KEY, x)["params"]


def _nnx(make: Callable[[nnx.Rngs], nnx.Module]) -> Any:
    return nnx.state(make(nnx.Rngs(0)), nnx.Param)


def _stacked(make: Callable[[nnx.Rngs], nnx.Module]) -> Any:
    @nnx.split_rngs(splits=3)
    @nnx.vmap(in_axes=(0,), out_axes=0)
    def create(rngs: nnx.Rngs) -> nnx.Module:
        return make(rngs)

    return nnx.state(create(nnx.Rngs(0)), nnx.Param)


def _ones(**shapes: tuple[int, ...]) -> dict[str, jax.Array]:
    return {name: jnp.ones(shape) for name, shape in shapes.items()}


x2, x4 = jnp.ones((2, 4)), jnp.ones((2, 8, 8, 3))
BUILDERS: dict[tuple[str, str], Callable[[], Any]] = {
    ("Linen", "`nn.Dense`"): lambda: _linen(nn.Dense(3), x2),
    ("Linen", "`nn.Conv`"): lambda: _linen(nn.Conv(3, (3, 3)), x4),
    ("Linen", "`nn.BatchNorm`"): lambda: _linen(nn.BatchNorm(use_running_average=True), x4),
    ("Linen", "`nn.LayerNorm`"): lambda: _linen(nn.LayerNorm(), x2),
    ("Linen", "`nn.Embed`"): lambda: _linen(nn.Embed(10, 4), jnp.zeros((2,), jnp.int32)),
    ("NNX", "`nnx.Linear`"): lambda: _nnx(lambda r: nnx.Linear(4, 3, rngs=r)),
    ("NNX", "`nnx.Conv`"): lambda: _nnx(lambda r: nnx.Conv(3, 4, (3, 3), rngs=r)),
    ("NNX", "`nnx.MultiHeadAttention`"): lambda: _nnx(
        lambda r: nnx.MultiHeadAttention(num_heads=2, in_features=8, decode=False, rngs=r)
    ),
    ("NNX", "`nnx.BatchNorm`"): lambda: _nnx(lambda r: nnx.BatchNorm(4, rngs=r)),
    ("NNX", "`nnx.LayerNorm`"): lambda: _nnx(lambda r: nnx.LayerNorm(4, rngs=r)),
    ("NNX", "`nnx.Embed`"): lambda: _nnx(lambda r: nnx.Embed(10, 4, rngs=r)),
    ("NNX, stacked by `nnx.vmap`", "`nnx.Linear`"): lambda: _stacked(
        lambda r: nnx.Linear(4, 3, rngs=r)
    ),
    ("NNX, stacked by `nnx.vmap`", "`nnx.LayerNorm`"): lambda: _stacked(
        lambda r: nnx.LayerNorm(4, rngs=r)
    ),
    ("plain dict", '`{"weight": (4, 3), "bias": (4,)}`'): lambda: _ones(weight=(4, 3), bias=(4,)),
    ("plain dict", '`{"weight": (4,), "bias": (4,)}` (a norm)'): lambda: _ones(
        weight=(4,), bias=(4,)
    ),
    ("plain dict", '`{"w": (4, 3), "embedding": (10, 4), "wte": (10, 4)}`'): lambda: _ones(
        w=(4, 3), embedding=(10, 4), wte=(10, 4)
    ),
}


def _rows() -> list[list[str]]:
    table = README.split("<!-- default-selection-table -->", 1)[1]
    table = table.split("<!-- /default-selection-table -->", 1)[0]
    lines = [line for line in table.strip().splitlines()[2:] if line.startswith("|")]
    return [[cell.strip() for cell in line.strip().strip("|").split("|")] for line in lines]


def _names(cell: str) -> set[str]:
    return set(re.findall(r"`([^`]+)`", cell))


def test_every_row_has_a_builder_and_every_builder_a_row():
    rows = {(r[0], r[1]) for r in _rows()}
    assert rows == set(BUILDERS), (rows - set(BUILDERS), set(BUILDERS) - rows)


def test_the_default_selection_is_what_the_table_says():
    for framework, layer, pruned, dense in _rows():
        params = BUILDERS[(framework, layer)]()
        targets = admmjax.uniform_sparsity(params, 0.5)
        selected = set(admmjax.targeted_leaves(params, targets))
        paths = set(admmjax.leaf_paths(params))
        where = f"{framework} {layer}"
        assert paths == _names(pruned) | _names(dense), (where, paths)
        assert selected == _names(pruned), (where, selected)

"""Per-leaf sparsity tables, as in the paper's Tables 1-2."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import numpy as np

from admmjax._sparsity import _include_fn, path_str, resolve_targets
from admmjax._stacked import Stacked

PyTree = Any


@dataclasses.dataclass(frozen=True)
class LeafRow:
    """One row of a :class:`SparsityReport`."""

    path: str
    shape: tuple[int, ...]
    weights: int
    nonzero: int

    @property
    def kept_percent(self) -> float:
        return 100.0 * self.nonzero / self.weights if self.weights else 0.0

    @property
    def compression(self) -> float:
        """``weights / nonzero`` (``inf`` for an all-zero leaf)."""
        return self.weights / self.nonzero if self.nonzero else math.inf


@dataclasses.dataclass(frozen=True)
class SparsityReport:
    """Per-leaf weight counts and the totals over the reported leaves.

    ``str(report)`` is a markdown table; :meth:`to_dict` gives JSON-ready values.
    """

    rows: tuple[LeafRow, ...]

    @property
    def weights(self) -> int:
        return sum(r.weights for r in self.rows)

    @property
    def nonzero(self) -> int:
        return sum(r.nonzero for r in self.rows)

    @property
    def kept_percent(self) -> float:
        return 100.0 * self.nonzero / self.weights if self.weights else 0.0

    @property
    def compression(self) -> float:
        """Total weights over total nonzero weights of the reported leaves."""
        return self.weights / self.nonzero if self.nonzero else math.inf

    def to_dict(self) -> dict[str, Any]:
        def row(r: LeafRow) -> dict[str, Any]:
            return {
                "path": r.path,
                "shape": list(r.shape),
                "weights": r.weights,
                "nonzero": r.nonzero,
                "kept_percent": r.kept_percent,
                "compression": r.compression,
            }

        return {
            "layers": [row(r) for r in self.rows],
            "weights": self.weights,
            "nonzero": self.nonzero,
            "kept_percent": self.kept_percent,
            "compression": self.compression,
        }

    def to_markdown(self) -> str:
        lines = [
            "| layer | shape | weights | nonzero | kept % | compression |",
            "|---|---|---:|---:|---:|---:|",
        ]
        for r in self.rows:
            lines.append(
                f"| {r.path} | {'x'.join(map(str, r.shape))} | {r.weights:,} | {r.nonzero:,} "
                f"| {r.kept_percent:.2f}% | {r.compression:.1f}x |"
            )
        lines.append(
            f"| **total** | | {self.weights:,} | {self.nonzero:,} | {self.kept_percent:.2f}% "
            f"| {self.compression:.1f}x |"
        )
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.to_markdown()


def sparsity_report(
    params: PyTree, targets: PyTree = None, *, include=None, per_slice: bool = False
) -> SparsityReport:
    """Counts weights and nonzeros per leaf.

    Rows cover the targeted leaves when ``targets`` is given (the pruned layers, as
    in the paper's tables), else the leaves selected by ``include`` (default:
    ``kernel``/``weight`` leaves, as in :func:`admmjax.uniform_sparsity`). Totals and
    ``compression`` are over those rows. With ``per_slice=True`` a leaf whose target
    is :class:`admmjax.Stacked` gets one row per slice, ``path[i]`` (``path[i,j]``
    for several stacked axes), instead of one row. Host-side: it reads concrete
    arrays.
    """
    if targets is not None:
        _, leaves = resolve_targets(params, targets)
        chosen = [(t.path, t.leaf) for t in leaves if t.spec is not None]
        stacked = {t.path: t.spec for t in leaves if isinstance(t.spec, Stacked)}
    else:
        select = _include_fn(include)
        chosen = [
            (path_str(p), leaf)
            for p, leaf in jax.tree_util.tree_flatten_with_path(params)[0]
            if select(path_str(p), leaf)
        ]
        stacked = {}
    rows = []
    for path, leaf in chosen:
        arr = np.asarray(leaf)
        if per_slice and path in stacked:
            slices, lead = stacked[path].slices(arr)
            for index, part in zip(np.ndindex(*lead), slices, strict=True):
                name = f"{path}[{','.join(map(str, index))}]"
                rows.append(LeafRow(name, part.shape, int(part.size), int(np.count_nonzero(part))))
            continue
        rows.append(LeafRow(path, tuple(arr.shape), int(arr.size), int(np.count_nonzero(arr))))
    return SparsityReport(tuple(rows))

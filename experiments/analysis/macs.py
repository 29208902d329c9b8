"""Multiply-accumulates per layer, before and after pruning, for any JAX model.

The forward pass ``apply_fn(params, x)`` is traced once with an abstract input of
batch 1 (``jax.make_jaxpr``: shapes only, nothing runs). Every ``dot_general`` and
``conv_general_dilated`` in the trace (inside ``jit``, ``custom_jvp``, ``remat``,
``scan``... too) is counted and attributed to the parameter leaf it multiplies:

* ``dot_general``: ``MACs = |out| * prod(contracted sizes)``; a dense layer
  ``x @ W`` with ``W`` of shape (in, out) costs ``in * out`` per example;
* ``conv_general_dilated``: ``MACs = |out| * |kernel| / out_features``, i.e. every
  output position times ``kh * kw * in / groups`` (positions over padding count, the
  usual convention), so a conv kernel costs ``H_out * W_out * |kernel|``.

A parameter is followed through layout-only ops (reshape, transpose, casts,
broadcasts...) to the product that consumes it; products of two activations (e.g.
attention scores) are reported as *unattributed*. After pruning, a layer whose
kernel keeps ``nnz`` of its ``n`` weights costs ``MACs * nnz / n``: each zero weight
removes exactly the multiplications it takes part in (the same count at every
output position), the accounting of the paper's Tables 3-4. Counts are per example.

:func:`mac_report` is the library entry point; it depends on JAX and ``admmjax``
only. The CLI (a run's table, or a config's planned budgets) is :mod:`experiments.macs`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend import core as jcore

import admmjax

__all__ = ["MacReport", "MacRow", "count_macs", "mac_report", "planned_kept"]

# Ops that only move or re-type a parameter: its provenance passes through them.
_LAYOUT_OPS = frozenset({
    "convert_element_type", "reshape", "transpose", "squeeze", "expand_dims",
    "broadcast_in_dim", "copy", "copy_p", "rev", "reduce_precision", "sharding_constraint",
    "device_put", "mesh_cast", "reshard", "optimization_barrier",
})  # fmt: skip
UNATTRIBUTED = "(unattributed)"


# --------------------------------------------------------------------------- counting


def _is_jaxpr(x: Any) -> bool:
    return isinstance(x, jcore.ClosedJaxpr | jcore.Jaxpr)


def _open(x: Any) -> jcore.Jaxpr:
    return x.jaxpr if isinstance(x, jcore.ClosedJaxpr) else x


def _product_macs(eqn: Any) -> int:
    out = eqn.outvars[0].aval.shape
    lhs, rhs = (v.aval.shape for v in eqn.invars[:2])
    if eqn.primitive.name == "dot_general":
        (contract_lhs, _), _ = eqn.params["dimension_numbers"]
        return math.prod(out) * math.prod(lhs[i] for i in contract_lhs)
    dims = eqn.params["dimension_numbers"]  # ConvDimensionNumbers(lhs, rhs, out specs)
    out_features = rhs[dims.rhs_spec[0]]
    return math.prod(out) * math.prod(rhs) // out_features


def _walk(jaxpr: jcore.Jaxpr, origin: dict[Any, int], scale: int, macs: dict[int, int]) -> None:
    """Adds the MACs of ``jaxpr`` (times ``scale``) to ``macs[leaf index]`` (-1: none)."""

    def src(v: Any) -> int | None:
        return None if isinstance(v, jcore.Literal) else origin.get(v)

    for eqn in jaxpr.eqns:
        name = eqn.primitive.name
        if name in ("dot_general", "conv_general_dilated"):
            lhs, rhs = src(eqn.invars[0]), src(eqn.invars[1])
            owner = rhs if rhs is not None else lhs
            key = -1 if owner is None else owner
            macs[key] = macs.get(key, 0) + scale * _product_macs(eqn)
            continue
        if name in _LAYOUT_OPS and eqn.invars and src(eqn.invars[0]) is not None:
            for out in eqn.outvars:
                origin[out] = src(eqn.invars[0])
            continue
        subs = _sub_jaxprs(eqn)
        for sub, invars, times in subs:
            inner = _open(sub)
            mapping = {
                iv: src(ov)
                for iv, ov in zip(inner.invars, invars, strict=False)
                if src(ov) is not None
            }
            _walk(inner, mapping, scale * times, macs)


def _sub_jaxprs(eqn: Any) -> list[tuple[Any, Sequence[Any], int]]:
    """(sub-jaxpr, the outer values bound to its inputs, repetitions) of a call-like eqn."""
    name, params = eqn.primitive.name, eqn.params
    if name == "scan":
        return [(params["jaxpr"], eqn.invars, int(params["length"]))]
    if name == "cond":  # count the most expensive branch
        branches = params["branches"]
        costs = []
        for b in branches:
            tally: dict[int, int] = {}
            _walk(_open(b), {}, 1, tally)
            costs.append(sum(tally.values()))
        return [(branches[int(np.argmax(costs))], eqn.invars[1:], 1)]
    if name == "while":  # trip count unknown when tracing: the body counts once
        return [(params["body_jaxpr"], eqn.invars[params["cond_nconsts"] :], 1)]
    found = []
    for value in params.values():
        candidates = value if isinstance(value, tuple | list) else (value,)
        for sub in candidates:
            if _is_jaxpr(sub) and len(_open(sub).invars) == len(eqn.invars):
                found.append((sub, eqn.invars, 1))
                return found  # one body per call-like eqn (jit, custom_jvp, remat...)
    return found


def count_macs(
    apply_fn: Callable[[Any, jax.Array], Any], params: Any, input_shape: Sequence[int],
    dtype: Any = jnp.float32,
) -> tuple[dict[str, int], int]:  # fmt: skip
    """Dense MACs per example: ``({leaf path: MACs}, unattributed MACs)``.

    ``apply_fn(params, x)`` is traced with ``x`` of shape ``(1, *input_shape)``;
    ``params`` may be concrete or abstract (``jax.ShapeDtypeStruct`` leaves). Only
    leaves that some product consumes appear in the dict.
    """
    leaves = jax.tree.leaves(params)
    paths = admmjax.leaf_paths(params)
    abstract = jax.tree.map(lambda a: jax.ShapeDtypeStruct(np.shape(a), a.dtype), params)
    x = jax.ShapeDtypeStruct((1, *input_shape), dtype)
    closed = jax.make_jaxpr(apply_fn)(abstract, x)
    n_leaves = len(leaves)
    origin = {v: i for i, v in enumerate(closed.jaxpr.invars[:n_leaves])}
    tally: dict[int, int] = {}
    _walk(closed.jaxpr, origin, 1, tally)
    per_leaf = {paths[i]: tally[i] for i in sorted(k for k in tally if k >= 0)}
    return per_leaf, tally.get(-1, 0)


# --------------------------------------------------------------------------- report


@dataclasses.dataclass(frozen=True)
class MacRow:
    """One layer (parameter leaf) of a :class:`MacReport`; MACs are per example."""

    path: str
    shape: tuple[int, ...]
    weights: int
    kept: int
    macs: int

    @property
    def pruned_macs(self) -> int:
        """``macs * kept / weights`` (exact: ``macs`` is a multiple of ``weights``)."""
        if self.weights and self.macs % self.weights == 0:
            return self.macs // self.weights * self.kept
        return round(self.macs * self.kept / self.weights) if self.weights else 0

    @property
    def kept_percent(self) -> float:
        return 100.0 * self.kept / self.weights if self.weights else 0.0

    @property
    def mac_reduction(self) -> float:
        return self.macs / self.pruned_macs if self.pruned_macs else math.inf


@dataclasses.dataclass(frozen=True)
class MacReport:
    """Weights and MACs per layer before and after pruning (paper Tables 3-4)."""

    rows: tuple[MacRow, ...]
    unattributed: int = 0  # MACs of products between two activations

    def total(self, field: str, layers: str | None = None) -> int:
        """Sum of ``field`` (weights, kept, macs, pruned_macs) over rows whose path
        starts with one of the comma-separated prefixes ``layers`` (default: all)."""
        prefixes = tuple(layers.split(",")) if layers else ("",)
        return sum(getattr(r, field) for r in self.rows if r.path.startswith(prefixes))

    @property
    def macs(self) -> int:
        return self.total("macs") + self.unattributed

    @property
    def pruned_macs(self) -> int:
        return self.total("pruned_macs") + self.unattributed

    def to_dict(self) -> dict[str, Any]:
        return {
            "layers": [
                {
                    "path": r.path,
                    "shape": list(r.shape),
                    "weights": r.weights,
                    "kept": r.kept,
                    "macs": r.macs,
                    "pruned_macs": r.pruned_macs,
                }
                for r in self.rows
            ],
            "weights": self.total("weights"),
            "kept": self.total("kept"),
            "unattributed_macs": self.unattributed,
            "macs": self.macs,
            "pruned_macs": self.pruned_macs,
            "mac_reduction": self.macs / self.pruned_macs if self.pruned_macs else math.inf,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MacReport:
        """Inverse of :meth:`to_dict` (e.g. from a run's summary.json)."""
        rows = tuple(
            MacRow(r["path"], tuple(r["shape"]), r["weights"], r["kept"], r["macs"])
            for r in d["layers"]
        )
        return cls(rows, d.get("unattributed_macs", 0))

    def to_markdown(self) -> str:
        def ratio(a: int, b: int) -> str:
            return f"{a / b:.1f}x" if b else "inf"

        lines = [
            "| layer | weights | kept | kept % | MACs | MACs after pruning | MAC reduction |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for r in self.rows:
            lines.append(
                f"| {r.path} | {r.weights:,} | {r.kept:,} | {r.kept_percent:.2f}% | "
                f"{r.macs:,} | {r.pruned_macs:,} | {ratio(r.macs, r.pruned_macs)} |"
            )
        if self.unattributed:
            u = self.unattributed
            lines.append(f"| {UNATTRIBUTED} | | | | {u:,} | {u:,} | 1.0x |")
        w, k = self.total("weights"), self.total("kept")
        lines.append(
            f"| **total** | {w:,} | {k:,} | {100 * k / w if w else 0:.2f}% | {self.macs:,} | "
            f"{self.pruned_macs:,} | {ratio(self.macs, self.pruned_macs)} |"
        )
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.to_markdown()


def planned_kept(params: Any, targets: Any) -> dict[str, int]:
    """Entries kept per targeted leaf under ``targets`` (``k = n - floor(s n)``)."""
    counts = admmjax.target_counts(params, targets)
    paths = admmjax.leaf_paths(counts)
    return {p: int(c) for p, c in zip(paths, jax.tree.leaves(counts), strict=True)}


def mac_report(
    apply_fn: Callable[[Any, jax.Array], Any],
    params: Any,
    input_shape: Sequence[int],
    *,
    kept: Mapping[str, int] | None = None,
    dtype: Any = jnp.float32,
) -> MacReport:
    """Per-layer weights and MACs of ``apply_fn(params, x)``, dense and after pruning.

    The kept count of each layer is ``kept[path]`` when given (e.g. the planned
    budgets of :func:`planned_kept`), else the nonzeros of the concrete ``params``
    leaf (abstract leaves count as dense). Rows are the leaves some product consumes
    (kernels), in tree order.
    """
    per_leaf, unattributed = count_macs(apply_fn, params, input_shape, dtype)
    kept = dict(kept or {})
    flat = dict(zip(admmjax.leaf_paths(params), jax.tree.leaves(params), strict=True))
    rows = []
    for path, macs in per_leaf.items():
        leaf = flat[path]
        size = int(np.prod(np.shape(leaf), dtype=np.int64))
        if path in kept:
            nnz = int(kept[path])
        elif isinstance(leaf, jax.ShapeDtypeStruct):
            nnz = size
        else:
            nnz = int(np.count_nonzero(np.asarray(leaf)))
        rows.append(MacRow(path, tuple(np.shape(leaf)), size, nnz, int(macs)))
    return MacReport(tuple(rows), int(unattributed))

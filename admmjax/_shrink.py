r"""``shrink``: remove the pruned slices of structured targets, for a really smaller model.

After :func:`admmjax.prune` with ``Structured`` targets, whole slices are zero but the
arrays keep their shapes. :func:`shrink` deletes them: every ``Structured`` leaf and
every member of a coupled group (``Structured(..., group=...)``, also inside
``Stacked``) keeps only its selected slices along its axis, in ascending index order,
so a model built at the smaller sizes computes the same function. The selection is
the projection's (:mod:`admmjax._coupled`): on pruned params it is exactly the
nonzero slices (a kept slice that happens to be all zero still counts, so shapes
follow from the targets alone).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from admmjax._coupled import Member, group_keep, inner_structured, member_spec, slice_shape
from admmjax._projections import check_finite
from admmjax._sparsity import LeafTarget, resolve_targets
from admmjax._stacked import Stacked

PyTree = Any


def _axis(t: LeafTarget) -> int:
    """The one slice axis of a member, within its slice; a tuple of axes is an error."""
    inner = inner_structured(t.spec)
    shape = slice_shape(t.spec, tuple(jnp.shape(t.leaf)))
    axes, _ = inner._groups(shape, t.path)
    if len(axes) != 1:
        raise ValueError(
            f"shrink: target for '{t.path}' slices several axes {inner.axis}; removing "
            "slices needs one axis (a Structured target with an int axis)"
        )
    return axes[0]


def _take(spec: Member, x: jax.Array, axis: int, kept: jax.Array) -> jax.Array:
    """``x`` with only the ``kept`` slices along ``axis`` (per layer inside Stacked)."""
    if not isinstance(spec, Stacked):
        return jnp.take(x, kept[0], axis=axis)
    flat, _ = spec.slices(x)
    small = jax.vmap(lambda s, i: jnp.take(s, i, axis=axis))(flat, kept)
    shape = list(jnp.shape(x))
    stacked_axes, _, _ = spec.split_shape(tuple(shape))
    rest_axes = [a for a in range(len(shape)) if a not in stacked_axes]
    shape[rest_axes[axis]] = kept.shape[1]
    return spec.unslices(small, tuple(shape))


def _selections(leaves: list[LeafTarget]) -> dict[Any, jax.Array]:
    """``{group key: (layers, kept) slice indices}``: a name, or a leaf index if ungrouped."""
    members: dict[Any, list[LeafTarget]] = {}
    for i, t in enumerate(leaves):
        if member_spec(t.spec):
            members.setdefault(t.spec.group if t.spec.group is not None else i, []).append(t)
    out = {}
    for key, ts in members.items():
        for t in ts:
            _axis(t)
            check_finite(t.path, t.leaf)
        keep = group_keep(tuple(t.spec for t in ts), tuple(jnp.asarray(t.leaf) for t in ts))
        first = ts[0]
        num_kept = inner_structured(first.spec).num_kept(
            slice_shape(first.spec, tuple(jnp.shape(first.leaf)))
        )
        # Stable argsort of ~keep lists the kept indices first, ascending.
        out[key] = jnp.argsort(~keep, axis=-1, stable=True)[:, :num_kept]
    return out


def _signatures(leaves: list[LeafTarget]) -> dict[str, tuple[str, Any]]:
    return {
        t.spec.group: (t.path, t.spec.group_signature(tuple(jnp.shape(t.leaf))))
        for t in leaves
        if member_spec(t.spec) and t.spec.group is not None
    }


def _shrunk(treedef: Any, leaves: list[LeafTarget], kept: dict[Any, jax.Array]) -> PyTree:
    out = []
    for i, t in enumerate(leaves):
        if not member_spec(t.spec):
            out.append(t.leaf)
            continue
        key = t.spec.group if t.spec.group is not None else i
        out.append(_take(t.spec, jnp.asarray(t.leaf), _axis(t), kept[key]))
    return treedef.unflatten(out)


def _check_extra(extra: list[LeafTarget], groups: dict[str, tuple[str, Any]]) -> None:
    for t in extra:
        if t.spec is None:
            continue
        if not member_spec(t.spec) or t.spec.group is None:
            raise ValueError(
                f"shrink: extra target for '{t.path}' is {t.spec!r}; an extra leaf follows a "
                "coupled group of the params: Structured(target, axis, group=name) "
                "(optionally in Stacked), or None"
            )
        if t.spec.group not in groups:
            raise ValueError(
                f"shrink: extra target for '{t.path}' names group {t.spec.group!r}, which no "
                f"params target has; groups: {sorted(groups)}"
            )
        path, sig = groups[t.spec.group]
        own = t.spec.group_signature(tuple(jnp.shape(t.leaf)))
        if own != sig:
            raise ValueError(
                f"shrink: extra leaf '{t.path}' does not fit group {t.spec.group!r}: "
                f"(stacked, slices, target) {own} vs {sig} of '{path}'"
            )


def shrink(
    params: PyTree, targets: PyTree, *, extra: PyTree = None, extra_targets: PyTree = None
) -> PyTree | tuple[PyTree, PyTree]:
    r"""Removes the pruned slices of every ``Structured`` target and coupled group.

    Each leaf whose target is ``Structured(target, axis)`` (or ``Stacked`` of one)
    keeps only its ``k`` selected slices along ``axis`` (``axis`` must be one int):
    its shape there goes from ``G`` to ``k``. The members of a coupled group keep the
    same indices, each along its own axis: e.g. heads from the query/key/value kernels
    ``(embed, heads, head_dim)`` and the output kernel ``(heads, head_dim, embed)``; a
    conv's filters, its BatchNorm scale and bias, and the next conv's input channels.
    Inside ``Stacked`` each layer keeps its own ``k`` slices. The selection is that
    of :func:`admmjax.project` on ``params`` (exactly the nonzero slices of pruned
    params), kept slices are copied unchanged, and all other leaves pass through.

    Args:
      params: the parameter pytree (usually the output of :func:`admmjax.prune`).
      targets: its target tree, as for :func:`admmjax.prune`.
      extra: an optional second pytree of arrays that follow the params' groups
        without being scored, e.g. a Linen model's ``batch_stats`` (BatchNorm ``mean``
        and ``var``, which must lose the same channels).
      extra_targets: ``extra``'s target tree: ``None`` for leaves to keep, and
        ``Structured(target, axis, group=name)`` (optionally in ``Stacked``) naming a
        group of ``targets``, with the same target, number of slices and stacked axes.

    Returns:
      The dense smaller params, or ``(params, extra)`` when ``extra`` is given.
      Eager (the output shapes depend on the targets only, so it also runs under
      ``jit``).
    """
    treedef, leaves = resolve_targets(params, targets)
    kept = _selections(leaves)
    small = _shrunk(treedef, leaves, kept)
    if extra is None:
        if extra_targets is not None:
            raise ValueError("shrink: extra_targets given without extra")
        return small
    if extra_targets is None:
        raise ValueError("shrink: extra needs extra_targets (its Structured group members)")
    extra_def, extra_leaves = resolve_targets(extra, extra_targets)
    _check_extra(extra_leaves, _signatures(leaves))
    return small, _shrunk(extra_def, extra_leaves, kept)

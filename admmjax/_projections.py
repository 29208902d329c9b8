r"""Euclidean projections onto sparsity sets (the ADMM Z-step).

For a leaf :math:`V` with :math:`n` entries and budget :math:`k`,

.. math::
   \Pi_S(V) = \arg\min_{Z:\ \mathrm{card}(Z) \le k} \|Z - V\|_F

keeps the :math:`k` entries of largest :math:`|V|` and zeros the rest: any other
choice drops a larger square from :math:`\|Z - V\|^2`. Ties are broken by flat
index (lowest index kept), so exactly :math:`\min(k, \mathrm{nnz}(V))` entries
are nonzero. The selection is an ``O(n)`` radix select (see ``_select``).

A target leaf may also be a constraint (``admmjax.Structured``, ``admmjax.NM``,
``admmjax.Quantized``, ``admmjax.SparseQuantized``, see ``_constraints``): the leaf is
then projected onto that set by the constraint's own exact projection.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from admmjax._coupled import coupled_projections
from admmjax._select import keep_mask, keep_mask_from_keys, magnitude_keys
from admmjax._sparsity import (
    Constraint,
    Include,
    Keep,
    _check_spec,
    _include_fn,
    keep_count,
    path_str,
    resolve_targets,
)

PyTree = Any


def check_finite(path: str, leaf: Any) -> None:
    """Raises on NaN in a concrete leaf; traced leaves are left alone (see module doc).

    A concrete leaf closed over inside ``jax.jit`` is checked too: the check runs
    eagerly (``jax.ensure_compile_time_eval``), so it never becomes a traced bool.
    """
    if isinstance(leaf, jax.core.Tracer) or not jnp.issubdtype(jnp.result_type(leaf), jnp.inexact):
        return
    with jax.ensure_compile_time_eval():
        has_nan = bool(jnp.isnan(leaf).any())
    if has_nan:
        raise ValueError(
            f"leaf '{path}' contains NaN; magnitudes of NaN have no order. Under jax.jit "
            "no check runs and NaN entries rank above +inf, so they are kept and propagate."
        )


def leaf_masks(
    tree: PyTree, targets: PyTree, mask_fn: Callable[[Any, Any], jax.Array] = keep_mask
) -> tuple[Any, list]:
    """Per-leaf keep masks (``None`` for dense leaves) for ``tree`` under ``targets``.

    ``mask_fn(leaf, k)`` selects the ``k`` kept entries of one cardinality leaf
    (default :func:`keep_mask`; ``admmjax.parallel`` passes its sharded variant).
    Constraint leaves get their projection's mask.
    """
    treedef, proj = leaf_projections(tree, targets, mask_fn)
    return treedef, [None if p is None else p[1] for p in proj]


def leaf_projections(
    tree: PyTree, targets: PyTree, mask_fn: Callable[[Any, Any], jax.Array] = keep_mask
) -> tuple[Any, list]:
    """Per-leaf ``(projected_leaf, mask)`` (``None`` for dense leaves) under ``targets``.

    Cardinality targets (fractions, ``Keep``) use ``mask_fn`` as in :func:`leaf_masks`
    and zero the unkept entries; a :class:`Constraint` leaf uses its own projection,
    whose mask marks the kept support (the nonzeros for quantized sets). The members
    of a coupled group (``Structured(..., group=...)``) are projected together, onto
    one shared selection of slices (``admmjax._coupled``); this is the one place where
    the projection is not per leaf.
    """
    treedef, leaves = resolve_targets(tree, targets)
    for t in leaves:
        if t.spec is not None:
            check_finite(t.path, t.leaf)
    coupled = coupled_projections(leaves)
    out = []
    for i, t in enumerate(leaves):
        if t.spec is None:
            out.append(None)
            continue
        if i in coupled:
            out.append(coupled[i])
            continue
        if isinstance(t.spec, Constraint):
            out.append(t.spec.project(t.leaf))
            continue
        mask = mask_fn(t.leaf, keep_count(t.spec, int(np.prod(jnp.shape(t.leaf)))))
        out.append((_apply([t.leaf], [mask])[0], mask))
    return treedef, out


def _apply(leaves: list, masks: list) -> list:
    return [
        leaf if mask is None else jnp.where(mask, leaf, jnp.zeros((), jnp.result_type(leaf)))
        for leaf, mask in zip(leaves, masks, strict=True)
    ]


def project(tree: PyTree, targets: PyTree) -> PyTree:
    r"""Projects each targeted leaf onto its constraint set; dense leaves pass through.

    Each leaf with target ``s`` keeps exactly ``k = n - floor(s n)`` entries of
    largest magnitude (``Keep(k)`` states ``k`` directly), fewer only when the leaf
    has fewer nonzeros. A constraint leaf (``Structured``, ``NM``, ``Quantized``,
    ``SparseQuantized``) is projected onto its set. Idempotent; jittable (``k`` may
    be traced; traced targets are counted and clamped as :func:`keep_count` states);
    dtype and shape preserved. Magnitudes are ranked exactly in the leaf's dtype
    (integers and ``float64`` included, see ``admmjax._select``). NaN: a concrete leaf
    raises ``ValueError``; under ``jit`` NaN entries rank as the largest magnitudes and
    are kept.
    """
    treedef, proj = leaf_projections(tree, targets)
    leaves = treedef.flatten_up_to(tree)
    return treedef.unflatten([x if p is None else p[0] for x, p in zip(leaves, proj, strict=True)])


def global_masks(tree: PyTree, sparsity: float, include: Include = None) -> tuple[Any, list]:
    """Masks for one budget over all selected leaves (see :func:`project_global`)."""
    flat, treedef = jax.tree_util.tree_flatten_with_path(tree)
    select = _include_fn(include)
    chosen = [i for i, (p, leaf) in enumerate(flat) if select(path_str(p), leaf)]
    if not chosen:
        raise ValueError("project_global: `include` selects no leaf of the tree")
    sizes = [int(np.prod(jnp.shape(flat[i][1]))) for i in chosen]
    total = sum(sizes)
    spec = _check_spec("<global>", sparsity, total)
    for i in chosen:
        check_finite(path_str(flat[i][0]), flat[i][1])
    # One key array over all selected leaves, in flattening order: the tie-break
    # by flat index then runs over this concatenation. Keys compare across leaves
    # only in one dtype, so mixed leaves are ranked in their promoted dtype.
    common = jnp.result_type(*[flat[i][1] for i in chosen])
    keys = jnp.concatenate([magnitude_keys(jnp.asarray(flat[i][1], common)) for i in chosen])
    keep = keep_mask_from_keys(keys, keep_count(spec, total))
    masks: list = [None] * len(flat)
    offsets = np.cumsum([0, *sizes])
    for j, i in enumerate(chosen):
        masks[i] = keep[offsets[j] : offsets[j + 1]].reshape(jnp.shape(flat[i][1]))
    return treedef, masks


def project_global(tree: PyTree, sparsity: float | Any, include: Include = None) -> PyTree:
    r"""Projection onto one total budget over all selected leaves (the paper's total ``l``).

    Keeps the ``k = N - floor(s N)`` entries of largest magnitude among the ``N``
    entries of the selected leaves, wherever they are: layers compete for the
    budget. ``sparsity`` may also be ``Keep(k)``. ``include`` selects leaves as in
    :func:`uniform_sparsity` (default: ``kernel``/``weight`` leaves, never biases,
    norm parameters or embeddings). Ties break by position in
    the flattened concatenation of the selected leaves. Leaves of one dtype are ranked
    exactly in it; leaves of mixed dtypes in their promoted dtype
    (``jnp.result_type``).
    """
    treedef, masks = global_masks(tree, sparsity, include)
    return treedef.unflatten(_apply(treedef.flatten_up_to(tree), masks))


def global_to_targets(tree: PyTree, sparsity: float | Any, include: Include = None) -> PyTree:
    """Per-leaf ``Keep`` targets equal to the allocation of :func:`project_global`.

    Useful to freeze the global allocation found for one tree (e.g. at hard prune)
    into ordinary per-leaf targets. Needs concrete leaves.
    """
    treedef, masks = global_masks(tree, sparsity, include)
    return treedef.unflatten([None if m is None else Keep(int(m.sum())) for m in masks])

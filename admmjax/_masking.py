"""Hard pruning and masked retraining."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from admmjax._projections import _apply, leaf_projections

PyTree = Any


def prune(params: PyTree, targets: PyTree) -> tuple[PyTree, PyTree]:
    """Hard prune: keep the largest ``|W|`` of each targeted leaf, zero the rest.

    Returns ``(pruned_params, masks)``. ``masks`` mirrors the params with a boolean
    array (``True`` = kept) at each targeted leaf and ``None`` at dense leaves. Each
    mask holds exactly ``k`` ``True`` entries (ties broken by index), even where the
    leaf has fewer than ``k`` nonzeros, so retraining may use the whole budget.

    Constraint leaves are projected onto their sets: ``Structured`` and ``NM`` masks
    mark the kept slices / the ``n`` of every ``m`` entries; for ``Quantized`` and
    ``SparseQuantized`` the pruned leaf lies on its levels and the mask marks its
    nonzeros (pass ``admmjax.freeze_quantized(masks, targets)`` to
    :func:`keep_pruned` to keep quantized values fixed while the rest retrains).
    """
    treedef, proj = leaf_projections(params, targets)
    leaves = treedef.flatten_up_to(params)
    pruned = [x if p is None else p[0] for x, p in zip(leaves, proj, strict=True)]
    masks = [None if p is None else p[1] for p in proj]
    return treedef.unflatten(pruned), treedef.unflatten(masks)


def apply_masks(tree: PyTree, masks: PyTree) -> PyTree:
    """Zeros the entries of ``tree`` where ``masks`` is ``False``; ``None`` masks pass."""
    treedef = jax.tree.structure(tree)
    leaves = treedef.flatten_up_to(tree)
    return treedef.unflatten(_apply(leaves, treedef.flatten_up_to(masks)))


class KeepPrunedState(NamedTuple):
    """State of :func:`keep_pruned`: the wrapped optimizer's state and the masks."""

    inner_state: Any
    masks: PyTree


def keep_pruned(
    tx: optax.GradientTransformation, masks: PyTree
) -> optax.GradientTransformationExtraArgs:
    """Wraps ``tx`` so pruned weights stay exactly zero through any optimizer.

    Masking only the gradient is not enough: momentum, Adam's moments and decoupled
    weight decay all produce nonzero updates for pruned entries. This wrapper zeros
    the incoming gradient (so moment estimates stay clean) *and* the final update,
    so a weight that starts at 0.0 stays 0.0. The masks are kept in the state, so
    they travel through ``jit`` as arrays and are checkpointed with the optimizer.

    Args:
      tx: any optax transformation (extra keyword arguments are passed through).
      masks: as returned by :func:`prune`: booleans, ``None`` for dense leaves.
    """
    inner = optax.with_extra_args_support(tx)

    def init_fn(params: PyTree) -> KeepPrunedState:
        # A copy: a train step that donates its optimizer state (make_train_step's
        # default) would otherwise delete the caller's mask arrays.
        return KeepPrunedState(inner.init(params), jax.tree.map(jnp.array, masks))

    def update_fn(updates, state, params=None, **extra):
        updates = apply_masks(updates, state.masks)
        updates, inner_state = inner.update(updates, state.inner_state, params, **extra)
        return apply_masks(updates, state.masks), KeepPrunedState(inner_state, state.masks)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)

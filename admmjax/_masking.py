"""Hard pruning and masked retraining."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from admmjax._projections import _apply, leaf_projections
from admmjax._sparsity import path_str, structure_error

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


def _none(x: Any) -> bool:
    return x is None


def _check_mask_dtypes(masks: PyTree) -> None:
    """Raises ``TypeError`` naming the path of the first mask leaf that is not boolean."""
    for path, mask in jax.tree_util.tree_flatten_with_path(masks)[0]:
        if jnp.result_type(mask) != jnp.bool_:
            raise TypeError(
                f"mask for '{path_str(path)}' has dtype {jnp.result_type(mask)}; expected "
                "bool (True = kept), e.g. the masks returned by admmjax.prune"
            )


def check_masks(tree: PyTree, masks: PyTree) -> list:
    """``masks`` flattened up to ``tree``'s leaves, after checking they fit it.

    Each mask leaf must be ``None`` or a boolean array with exactly its leaf's shape
    (no broadcasting). Raises ``ValueError`` / ``TypeError`` naming the leaf path.
    """
    treedef = jax.tree.structure(tree)
    try:
        flat_masks = treedef.flatten_up_to(masks)
    except (ValueError, TypeError) as err:
        raise structure_error("masks", tree, masks, _none, err) from None
    _check_mask_dtypes(masks)
    flat = jax.tree_util.tree_flatten_with_path(tree)[0]
    for (path, leaf), mask in zip(flat, flat_masks, strict=True):
        if mask is not None and jnp.shape(mask) != jnp.shape(leaf):
            raise ValueError(
                f"mask for '{path_str(path)}' has shape {jnp.shape(mask)}; expected the "
                f"leaf's shape {jnp.shape(leaf)} (masks are not broadcast)"
            )
    return flat_masks


def apply_masks(tree: PyTree, masks: PyTree) -> PyTree:
    """Zeros the entries of ``tree`` where ``masks`` is ``False``; ``None`` masks pass.

    ``masks`` must fit ``tree`` leaf for leaf (see :func:`check_masks`).
    """
    treedef = jax.tree.structure(tree)
    return treedef.unflatten(_apply(treedef.flatten_up_to(tree), check_masks(tree, masks)))


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

    Raises (naming the leaf path) on a mask that is not boolean when ``keep_pruned``
    is called, and on one whose shape or structure does not match the params at
    ``init``, before any work.
    """
    _check_mask_dtypes(masks)
    inner = optax.with_extra_args_support(tx)

    def init_fn(params: PyTree) -> KeepPrunedState:
        check_masks(params, masks)
        # A copy: a train step that donates its optimizer state (make_train_step's
        # default) would otherwise delete the caller's mask arrays.
        return KeepPrunedState(inner.init(params), jax.tree.map(jnp.array, masks))

    def update_fn(updates, state, params=None, **extra):
        updates = apply_masks(updates, state.masks)
        updates, inner_state = inner.update(updates, state.inner_state, params, **extra)
        return apply_masks(updates, state.masks), KeepPrunedState(inner_state, state.masks)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)

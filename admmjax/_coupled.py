r"""Coupled structured groups: one selection of slices shared by several leaves.

Leaves whose targets are ``Structured(target, axis, group="g")`` (also inside
``Stacked``) form group ``g``. Member ``j`` is sliced along its own ``axis`` into
:math:`G` slices :math:`V_{j,1}, \dots, V_{j,G}` (e.g. the heads of the query, key,
value and output kernels; a conv's filters, its BatchNorm scale and bias, and the
next conv's input channels). The coupled set keeps the same ``k`` slice indices in
every member:

.. math::
   S = \{(Z_1, \dots, Z_m) : \exists I \subseteq \{1..G\},\ |I| = k,\
         Z_{j,i} = 0 \ \forall j,\ \forall i \notin I\}.

For a fixed index set :math:`I` the closest point keeps :math:`Z_{j,i} = V_{j,i}` for
:math:`i \in I`, so the squared distance is
:math:`\sum_{i \notin I} \sum_j \|V_{j,i}\|_F^2`. It is smallest when :math:`I` holds
the ``k`` indices of largest score :math:`s_i = \sum_j \|V_{j,i}\|_F^2`: keeping those
is the exact Euclidean projection onto :math:`S` (ties to the lowest index). Inside
``Stacked`` the set is a product over layers and each layer selects on its own. The
scores are summed in float32 after one exact power-of-two rescaling shared by the
whole group (relative weights of the members are unchanged).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from admmjax._constraints import Structured, power_of_two_scale
from admmjax._select import keep_mask
from admmjax._sparsity import LeafTarget, group_members
from admmjax._stacked import Stacked

Member = Structured | Stacked


def inner_structured(spec: Member) -> Structured:
    """The ``Structured`` of a member target (unwrapping ``Stacked``)."""
    return spec.target if isinstance(spec, Stacked) else spec


def _rows(spec: Member, x: jax.Array) -> jax.Array:
    """``x`` as ``(layers, slices, entries)``; ``layers`` is 1 outside ``Stacked``."""
    if isinstance(spec, Stacked):
        flat, _ = spec.slices(x)
        return jax.vmap(spec.target.slice_rows)(flat)
    return spec.slice_rows(x)[None]


def member_mask(spec: Member, keep: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """The entry mask of a member leaf of ``shape`` from ``keep`` of ``(layers, slices)``."""
    if isinstance(spec, Stacked):
        _, _, rest = spec.split_shape(shape)
        return spec.unslices(jax.vmap(lambda k: spec.target.slice_mask(k, rest))(keep), shape)
    return spec.slice_mask(keep[0], shape)


def slice_shape(spec: Member, shape: tuple[int, ...]) -> tuple[int, ...]:
    """The shape ``Structured`` sees: the leaf without its stacked axes."""
    return spec.split_shape(shape)[2] if isinstance(spec, Stacked) else shape


@jax.jit(static_argnums=0)
def group_keep(specs: tuple[Member, ...], xs: tuple[jax.Array, ...]) -> jax.Array:
    """``(layers, slices)`` bools: the slices the group keeps (the top-``k`` summed scores)."""
    rows = [_rows(s, x) for s, x in zip(specs, xs, strict=True)]
    layers, slices = rows[0].shape[:2]
    num_kept = inner_structured(specs[0]).num_kept(slice_shape(specs[0], xs[0].shape))
    peaks = [jnp.max(jnp.abs(r)) for r in rows if r.size]
    if not peaks or slices == 0:
        return jnp.broadcast_to(jnp.arange(slices) < num_kept, (layers, slices))
    dtype = jnp.result_type(*rows)
    scale = power_of_two_scale(jnp.max(jnp.stack(peaks).astype(dtype)))
    score = sum(jnp.sum(jnp.square(r.astype(dtype) * scale), axis=-1) for r in rows)
    return jax.vmap(lambda s: keep_mask(s, num_kept))(score)


@jax.jit(static_argnums=0)
def _project_group(specs: tuple[Member, ...], xs: tuple[jax.Array, ...]) -> list:
    keep = group_keep(specs, xs)
    out = []
    for spec, x in zip(specs, xs, strict=True):
        mask = member_mask(spec, keep, x.shape)
        out.append((jnp.where(mask, x, jnp.zeros((), x.dtype)), mask))
    return out


def coupled_projections(leaves: list[LeafTarget]) -> dict[int, tuple[jax.Array, jax.Array]]:
    """``{leaf index: (z, mask)}`` for every member of a coupled group in ``leaves``."""
    out: dict[int, tuple[jax.Array, jax.Array]] = {}
    for idx in group_members(leaves).values():
        specs = tuple(leaves[i].spec for i in idx)
        xs = tuple(jnp.asarray(leaves[i].leaf) for i in idx)
        out.update(zip(idx, _project_group(specs, xs), strict=True))
    return out


def member_spec(spec: Any) -> bool:
    """Whether a target is ``Structured`` (optionally inside ``Stacked``)."""
    return isinstance(spec, Structured) or (
        isinstance(spec, Stacked) and isinstance(spec.target, Structured)
    )

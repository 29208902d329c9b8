r"""``Stacked``: one target applied independently to every slice along stacked axes.

Scanned / vmapped layers (``nnx.scan``, ``nnx.vmap``, ``flax.linen.scan``) store ``L``
layers in one leaf of shape ``(L, *slice_shape)``. ``Stacked(target, axis=0)`` is the set

.. math::
   S = S_1 \times \dots \times S_L, \qquad S_l = \text{the set of ``target`` on slice } l,

so :math:`\Pi_S(V) = (\Pi_{S_1}(V_1), \dots, \Pi_{S_L}(V_L))` exactly: the squared
distance is a sum over slices and each slice is minimised on its own. The projection
is ``jax.vmap`` of the inner projection over the stacked axes (several axes are
flattened to one index in C order first). Inside ``Stacked`` the inner target's axes
refer to one slice, i.e. to the leaf with its stacked axes removed.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp

from admmjax._constraints import _axes, _check_target, _target, axis_arg
from admmjax._select import keep_mask
from admmjax._sparsity import Constraint, keep_count, path_str


@dataclasses.dataclass(frozen=True)
class Stacked(Constraint):
    """Apply ``target`` independently to every index along ``axis`` (an int or a tuple).

    ``target`` is any target leaf: a sparsity fraction (each slice keeps
    ``n - floor(s n)`` of its ``n`` entries), ``Keep(k)`` (``k`` entries per slice), or
    a constraint (``Structured``, ``NM``, ``Quantized``, ``SparseQuantized``) whose
    axes refer to one slice. E.g. a scanned attention kernel ``(L, embed, heads,
    head_dim)`` with ``Stacked(admmjax.Structured(0.5, axis=1))`` prunes half of the
    heads of every layer, never a whole layer.
    """

    target: Any
    axis: int | tuple[int, ...] = 0

    def __post_init__(self):
        axis = axis_arg("Stacked", self.axis)
        object.__setattr__(self, "axis", axis if isinstance(axis, tuple) else (axis,))
        if isinstance(self.target, Stacked):
            raise TypeError("Stacked: nest axes in one Stacked(target, axis=(0, 1)) instead")
        if not isinstance(self.target, Constraint):
            object.__setattr__(self, "target", _target("Stacked", self.target))

    @property
    def quantized(self) -> bool:  # type: ignore[override]
        return isinstance(self.target, Constraint) and self.target.quantized

    @property
    def group(self) -> str | None:  # type: ignore[override]
        return self.target.group if isinstance(self.target, Constraint) else None

    def group_signature(self, shape: tuple[int, ...]) -> tuple[tuple[int, ...], int, Any]:
        """The inner target's signature with this leaf's stacked shape (one selection per layer)."""
        _, stacked, rest = self.split_shape(shape)
        return (stacked, *self.target.group_signature(rest)[1:])

    def split_shape(
        self, shape: tuple[int, ...], path: str = "<leaf>"
    ) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
        """``(stacked_axes, stacked_shape, slice_shape)`` of a leaf of ``shape``."""
        axes = _axes(path, "Stacked", self.axis, shape)
        rest = tuple(d for i, d in enumerate(shape) if i not in axes)
        return axes, tuple(shape[a] for a in axes), rest

    def slice_path(self, path: str) -> str:
        return f"{path} (one slice of Stacked axis {self.axis})"

    def validate(self, path: str, shape: tuple[int, ...]) -> None:
        _, _, rest = self.split_shape(shape, path)
        if isinstance(self.target, Constraint):
            self.target.validate(self.slice_path(path), rest)
        else:
            _check_target(path, "Stacked", self.target, math.prod(rest), "entries per slice")

    def slice_max_nonzero(self, slice_shape: tuple[int, ...]) -> int:
        """The most nonzeros one projected slice can have."""
        if isinstance(self.target, Constraint):
            return self.target.max_nonzero(slice_shape)
        return int(keep_count(self.target, math.prod(slice_shape)))

    def max_nonzero(self, shape: tuple[int, ...]) -> int:
        _, stacked, rest = self.split_shape(shape)
        return math.prod(stacked) * self.slice_max_nonzero(rest)

    def slices(self, x: Any) -> tuple[Any, tuple[int, ...]]:
        """``x`` as ``(L, *slice_shape)`` (stacked axes first, flattened in C order)."""
        axes, stacked, rest = self.split_shape(tuple(jnp.shape(x)))
        lead = list(range(len(axes)))
        moved = jnp.moveaxis(x, axes, lead)
        return moved.reshape((math.prod(stacked), *rest)), stacked

    def _project_slice(self, v: jax.Array) -> tuple[jax.Array, jax.Array]:
        if isinstance(self.target, Constraint):
            return self.target._project(v)
        mask = keep_mask(v, keep_count(self.target, v.size))
        return jnp.where(mask, v, jnp.zeros((), v.dtype)), mask

    def unslices(self, a: jax.Array, shape: tuple[int, ...]) -> jax.Array:
        """The inverse of :meth:`slices`: ``(L, *slice_shape)`` back to a leaf of ``shape``."""
        axes, stacked, rest = self.split_shape(shape)
        return jnp.moveaxis(a.reshape((*stacked, *rest)), list(range(len(axes))), axes)

    def _project(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        flat, _ = self.slices(x)
        if flat.size == 0:
            return x, jnp.zeros(x.shape, bool)
        z, mask = jax.vmap(self._project_slice)(flat)
        return self.unslices(z, x.shape), self.unslices(mask, x.shape)


def stacked_axes_from_nnx(state: Any, partition_name: str = "layers") -> dict[str, int]:
    """``{path: axis}`` of the leaves of an NNX ``State`` stacked under ``partition_name``.

    ``nnx.vmap`` / ``nnx.scan`` with ``transform_metadata={nnx.PARTITION_NAME:
    partition_name}`` insert ``partition_name`` into each Variable's ``out_sharding``
    metadata at the axis they add; that index is the stacked axis. The result feeds
    ``uniform_sparsity(..., stacked=...)`` (paths are exact, so they are globs that
    match themselves). Duck-typed on ``get_metadata()``, so the core imports no Flax;
    Variables without that metadata are not listed.
    """

    def is_variable(x: Any) -> bool:
        return callable(getattr(x, "get_metadata", None))

    found = {}
    for path, var in jax.tree_util.tree_flatten_with_path(state, is_leaf=is_variable)[0]:
        if not is_variable(var):
            continue
        names = var.get_metadata().get("out_sharding") or ()
        if partition_name in tuple(names):
            found[path_str(path)] = tuple(names).index(partition_name)
    return found

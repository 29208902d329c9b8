r"""Constraint sets beyond plain cardinality, each with its exact Euclidean projection.

A target leaf may be one of these objects instead of a sparsity fraction or
``Keep(n)``; :func:`admmjax.project`, :func:`admmjax.init` / :func:`admmjax.update`
(the Z-step), :func:`admmjax.prune` and :func:`admmjax.sparsity_report` then use the
projection :math:`\Pi_S(V) = \arg\min_{Z \in S} \|Z - V\|_F` of the leaf's set ``S``
in the same ADMM loop. All are frozen dataclasses, hashable and registered as static
pytree nodes, so target trees holding them pass through ``jax.jit``; the projections
are jittable (static shapes, no host round trip). Ties are broken deterministically
(lowest index kept, nearest level of smaller magnitude).

* :class:`Structured` ``(target, axis)``: whole slices along ``axis`` (filters /
  output channels, input channels, rows, columns) are kept or zeroed. Keeping the
  slices of largest :math:`\ell_2` norm is exact: a kept slice costs 0, a zeroed one
  its squared norm.
* :class:`NM` ``(n, m, axis)``: at most ``n`` nonzeros in each run of ``m``
  consecutive entries along ``axis`` (2:4 sparsity). The set is a product of
  per-group cardinality sets, so keeping the ``n`` largest magnitudes of every group
  is exact.
* :class:`Quantized` ``(levels, scale)``: every entry on a finite level set
  (ADMM-NN's weight quantization). For a fixed set the projection is "nearest level",
  entry by entry. With ``scale="learned"`` the set is the union over :math:`s \ge 0`
  of :math:`s B` for base levels ``B`` and the projection minimises over ``s`` too,
  exactly (see :class:`Quantized`). ``Quantized(num_levels=K)`` learns ``K`` levels
  by Lloyd's k-means (a local optimum, not an exact projection).
* :class:`SparseQuantized` ``(target, levels, scale)``: at most ``k`` nonzeros, each on
  the level set (pruning and quantization jointly). Exact for given levels: keep the
  ``k`` entries of largest gain :math:`w^2 - (w - q(w))^2`.

Computation is in ``float32`` (``float64`` leaves under ``jax_enable_x64``); results
are cast back to the leaf's dtype, so levels of a ``bfloat16`` leaf are rounded to
``bfloat16``.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Sequence
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np

from admmjax._select import keep_mask, magnitude_keys
from admmjax._sparsity import Constraint, Keep, _check_spec, keep_count

Target = float | Keep


def _compute_dtype(x: jax.Array) -> Any:
    return jnp.promote_types(jnp.result_type(x), jnp.float32)


def _int(owner: str, name: str, value: Any, lo: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral | np.integer):
        raise TypeError(f"{owner}: {name} must be an integer, got {value!r}")
    if int(value) < lo:
        raise ValueError(f"{owner}: {name} must be >= {lo}, got {int(value)}")
    return int(value)


def _target(owner: str, target: Any) -> Target:
    """A sparsity fraction in ``[0, 1)`` or a concrete ``Keep(n)``, normalised."""
    if isinstance(target, Keep):
        if isinstance(target.n, jax.core.Tracer):
            raise TypeError(f"{owner}: Keep(n) inside a constraint needs a concrete n")
        return Keep(int(target.n))
    if isinstance(target, numbers.Integral) and not isinstance(target, bool) and target >= 1:
        raise ValueError(
            f"{owner}: target {target!r} is a sparsity in [0, 1) (the fraction pruned); "
            f"write Keep({target}) for an exact count"
        )
    return _check_spec(owner, target, math.inf)


def _check_target(path: str, owner: str, target: Target, size: int, unit: str) -> None:
    if isinstance(target, Keep) and target.n > size:
        raise ValueError(
            f"target for '{path}': {owner} keeps Keep({target.n}) {unit} "
            f"but the leaf has only {size}"
        )


def _axes(path: str, owner: str, axis: int | tuple[int, ...], shape: tuple[int, ...]) -> tuple:
    axes = (axis,) if isinstance(axis, int) else axis
    ndim = len(shape)
    out = []
    for a in axes:
        if not -ndim <= a < ndim:
            raise ValueError(
                f"target for '{path}': {owner} axis {a} is out of range for shape {shape}"
            )
        out.append(a % ndim)
    if len(set(out)) != len(out):
        raise ValueError(f"target for '{path}': {owner} repeats an axis in {axis}")
    return tuple(out)


def axis_arg(owner: str, axis: Any) -> int | tuple[int, ...]:
    """A constraint's ``axis`` argument normalised: an int, or a non-empty tuple of ints."""
    if isinstance(axis, Sequence) and not isinstance(axis, str):
        if not axis:
            raise ValueError(f"{owner}: axis must name at least one axis")
        return tuple(_int(owner, "axis", a, -(2**31)) for a in axis)
    return _int(owner, "axis", axis, -(2**31))


def _levels(owner: str, levels: Any) -> tuple[float, ...]:
    """Sorted distinct finite levels; an int ``L`` is the uniform grid ``{-L, ..., L}``."""
    if isinstance(levels, numbers.Integral | np.integer) and not isinstance(levels, bool):
        L = _int(owner, "levels", levels, 1)
        return tuple(float(i) for i in range(-L, L + 1))
    try:
        values = [float(v) for v in np.asarray(levels, dtype=np.float64).ravel()]
    except (TypeError, ValueError):
        raise TypeError(
            f"{owner}: levels must be a sequence of numbers or an int L, got {levels!r}"
        ) from None
    if not values or not all(math.isfinite(v) for v in values):
        raise ValueError(f"{owner}: levels must be a non-empty set of finite numbers: {levels!r}")
    return tuple(sorted({v + 0.0 for v in values}))  # + 0.0 merges -0.0 into 0.0


def nearest_level(v: jax.Array, levels: jax.Array) -> jax.Array:
    """Index of the level nearest each entry of ``v``; ``levels`` sorted ascending.

    Of the two levels around ``v`` the closer wins; an exact tie goes to the level of
    smaller magnitude, then to the lower one. The distances are rounded subtractions,
    which rounding preserves in order, so the choice is exact up to ties in the
    rounded distances.
    """
    k = levels.shape[0]
    hi = jnp.clip(jnp.searchsorted(levels, v, side="left"), 0, k - 1)
    lo = jnp.clip(hi - 1, 0, k - 1)
    d_lo, d_hi = jnp.abs(v - levels[lo]), jnp.abs(levels[hi] - v)
    tie_lo = (d_lo == d_hi) & (jnp.abs(levels[lo]) <= jnp.abs(levels[hi]))
    return jnp.where((d_lo < d_hi) | tie_lo, lo, hi)


def optimal_scale(v: jax.Array, base: jax.Array) -> jax.Array:
    r"""The exact :math:`s^* = \arg\min_{s \ge 0} \min_{b \in B^n} \|v - s b\|^2`.

    For a fixed assignment ``b`` the best scale is :math:`\langle v, b\rangle /
    \|b\|^2` (0 if negative) and the cost :math:`\|v\|^2 - \max(\langle v, b\rangle,
    0)^2 / \|b\|^2`. As ``s`` grows from 0, the nearest level of :math:`v_i / s`
    changes only where :math:`v_i / s` crosses a midpoint :math:`m_j` of two
    consecutive base levels of the sign of :math:`v_i`, i.e. at :math:`s = v_i / m_j`.
    Sorting these ``n (K - 1)`` events and updating :math:`\langle v, b\rangle` and
    :math:`\|b\|^2` by cumulative sums gives the assignment of every interval between
    events. The optimum lies in one interval, and for each interval the closed-form
    cost of its assignment is an upper bound attained by a feasible point, so the
    smallest closed-form cost over all intervals is the global minimum. Its scale is
    then refined once on the nearest assignment with exact sums (never worse).
    ``O(n K log(n K))`` time and ``O(n K)`` memory.
    """
    dt = v.dtype
    k = base.shape[0]
    zero_idx = nearest_level(jnp.zeros((), dt), base)
    idx0 = jnp.where(v > 0, k - 1, jnp.where(v < 0, 0, zero_idx))
    b0 = base[idx0]
    num0, den0 = jnp.sum(v * b0), jnp.sum(b0 * b0)
    if k > 1:
        lo, hi = base[:-1], base[1:]
        mid = (lo + hi) / 2
        vv = v[:, None]
        pos = (vv > 0) & (mid > 0)
        neg = (vv < 0) & (mid < 0)
        s_ev = jnp.where(pos | neg, vv / jnp.where(mid == 0, 1, mid), jnp.inf)
        # v > 0 moves from hi down to lo; v < 0 from lo up to hi.
        d_num = jnp.where(pos, vv * (lo - hi), jnp.where(neg, vv * (hi - lo), 0))
        d_den = jnp.where(pos, lo * lo - hi * hi, jnp.where(neg, hi * hi - lo * lo, 0))
        # Equal event scales of one entry (merged by rounding) must still be applied in
        # the order of its level moves: j descending for v > 0, ascending for v < 0.
        j = jnp.arange(k - 1)
        step = jnp.broadcast_to(jnp.where(vv > 0, -j, j), s_ev.shape)
        _, _, d_num, d_den = jax.lax.sort(
            (s_ev.ravel(), step.ravel(), d_num.ravel(), d_den.ravel()), num_keys=2
        )
        num = num0 + jnp.concatenate([jnp.zeros(1, dt), jnp.cumsum(d_num)])
        den = den0 + jnp.concatenate([jnp.zeros(1, dt), jnp.cumsum(d_den)])
    else:
        num, den = num0[None], den0[None]
    ok = (num > 0) & (den > 0)
    gain = jnp.where(ok, num * num / jnp.where(ok, den, 1), 0)
    t = jnp.argmax(gain)
    s = jnp.where(ok[t], num[t] / jnp.where(ok[t], den[t], 1), 0)
    # One exact refinement: the nearest assignment at s, then its own best scale.
    b = base[nearest_level(v, s * base)]
    num_r, den_r = jnp.sum(v * b), jnp.sum(b * b)
    s_r = jnp.where((num_r > 0) & (den_r > 0), num_r / jnp.where(den_r > 0, den_r, 1), 0)
    return jnp.where(s > 0, s_r, 0).astype(dt)


def kmeans_levels(v: jax.Array, num_levels: int, iters: int) -> jax.Array:
    """``num_levels`` sorted centers by Lloyd's algorithm from quantile initialisation.

    Centers start at the ``(i + 1/2) / K`` quantiles of ``v``; each iteration assigns
    every entry to its nearest center and moves each center to the mean of its cell
    (an empty cell keeps its center). The squared error never increases, but the
    result is a local optimum, not the global one (exact 1-D k-means needs dynamic
    programming over the sorted values).
    """
    n = v.shape[0]
    srt = jnp.sort(v)
    init = srt[np.minimum(((np.arange(num_levels) + 0.5) * n / num_levels).astype(int), n - 1)]

    def body(_, centers):
        idx = nearest_level(v, centers)
        sums = jnp.zeros(num_levels, v.dtype).at[idx].add(v)
        counts = jnp.zeros(num_levels, v.dtype).at[idx].add(1)
        return jnp.sort(jnp.where(counts > 0, sums / jnp.maximum(counts, 1), centers))

    return jax.lax.fori_loop(0, iters, body, init)


@dataclasses.dataclass(frozen=True)
class Structured(Constraint):
    r"""Keep whole slices along ``axis`` (filters, channels, rows, columns), zero the rest.

    Slice ``i`` is every entry whose index along ``axis`` is ``i``; with a tuple of
    axes, a slice is one index tuple over those axes (``axis=(0, 1)`` on an HWIO
    kernel groups by spatial position). ``target`` is the library's usual one: a
    sparsity ``s`` prunes ``floor(s G)`` of the ``G`` slices, ``Keep(n)`` keeps
    exactly ``n`` slices. The projection keeps the slices of largest
    :math:`\|V_i\|_2` (squared norms summed in float32, float64 for float64 leaves,
    after an exact power-of-two rescaling of the leaf, so exact up to that rounding
    of the norms; integer leaves are converted to float32 first); equal norms
    go to the lowest slice index (C order over ``axis``). The mask marks every entry
    of the kept slices.

    Flax layouts: a ``Linear`` kernel is ``(in, out)``: ``axis=-1`` prunes output
    neurons (columns), ``axis=0`` inputs (rows). A ``Conv`` kernel is ``(H, W, in,
    out)``: ``axis=-1`` prunes filters (output channels), ``axis=-2`` input channels.

    ``group="name"`` couples leaves: all leaves whose target is ``Structured`` with the
    same group (also inside :class:`admmjax.Stacked`) share one selection of slice
    indices, each member sliced along its own ``axis`` (see ``admmjax._coupled``).
    Members must agree on ``target`` and on the number of slices.
    """

    target: Target
    axis: int | tuple[int, ...] = -1
    group: str | None = None

    def __post_init__(self):
        object.__setattr__(self, "axis", axis_arg("Structured", self.axis))
        object.__setattr__(self, "target", _target("Structured", self.target))
        if self.group is not None and not (isinstance(self.group, str) and self.group):
            raise TypeError(
                f"Structured: group must be a non-empty string naming the coupled group, "
                f"got {self.group!r}"
            )

    def group_signature(self, shape: tuple[int, ...]) -> tuple[tuple[int, ...], int, Target]:
        """``(stacked_shape, slices, target)``: what every member of a group must share."""
        return (), self._groups(shape)[1], self.target

    def _groups(self, shape: tuple[int, ...], path: str = "<leaf>") -> tuple[tuple, int]:
        axes = _axes(path, "Structured", self.axis, shape)
        return axes, math.prod(shape[a] for a in axes)

    def validate(self, path: str, shape: tuple[int, ...]) -> None:
        _, groups = self._groups(shape, path)
        _check_target(path, "Structured", self.target, groups, "slices")

    def num_kept(self, shape: tuple[int, ...]) -> int:
        """Slices kept in a leaf of ``shape``."""
        return int(keep_count(self.target, self._groups(shape)[1]))

    def max_nonzero(self, shape: tuple[int, ...]) -> int:
        _, groups = self._groups(shape)
        return self.num_kept(shape) * (math.prod(shape) // groups if groups else 0)

    def slice_rows(self, x: jax.Array) -> jax.Array:
        """``x`` as ``(slices, entries per slice)``, compute dtype; row ``i`` is slice ``i``."""
        axes, groups = self._groups(x.shape)
        moved = jnp.moveaxis(x, axes, list(range(len(axes))))
        return moved.reshape(groups, -1).astype(_compute_dtype(x))

    def slice_mask(self, keep: jax.Array, shape: tuple[int, ...]) -> jax.Array:
        """The entry mask of a leaf of ``shape`` from ``keep``, one bool per slice."""
        axes, _ = self._groups(shape)
        lead = list(range(len(axes)))
        moved_shape = tuple(shape[a] for a in axes) + tuple(
            d for i, d in enumerate(shape) if i not in axes
        )
        keep = jnp.broadcast_to(
            keep.reshape(moved_shape[: len(axes)] + (1,) * (len(shape) - len(axes))), moved_shape
        )
        return jnp.moveaxis(keep, lead, axes)

    def _project(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        if x.size == 0:
            return x, jnp.zeros(x.shape, bool)
        v = self.slice_rows(x)
        v = v * power_of_two_scale(jnp.max(jnp.abs(v)))
        sq = jnp.sum(v * v, axis=1)
        mask = self.slice_mask(keep_mask(sq, self.num_kept(x.shape)), x.shape)
        return jnp.where(mask, x, jnp.zeros((), x.dtype)), mask


def power_of_two_scale(peak: jax.Array) -> jax.Array:
    """The exact power of two that brings ``peak`` into ``[0.5, 1)`` (clipped to the
    dtype's exponent range: 2^±126 for float32, 2^±1022 for float64).

    Scaling by it before squaring keeps squared norms of tiny weights from
    underflowing and of large ones from overflowing, and changes no comparison.
    """
    _, e = jnp.frexp(peak)
    lim = jnp.finfo(peak.dtype).maxexp - 2  # 126 for float32, 1022 for float64
    return jnp.ldexp(jnp.ones((), peak.dtype), jnp.clip(-e, -lim, lim))


@dataclasses.dataclass(frozen=True)
class NM(Constraint):
    """``n:m`` sparsity: at most ``n`` nonzeros in each run of ``m`` consecutive entries.

    Runs are taken along ``axis``: an int, or a tuple of axes, in which case those
    axes are moved to the end in the given order and flattened in C order (the last
    listed axis varies fastest), and runs are ``m`` consecutive entries of that
    flattened index, for every index of the other axes. E.g. ``axis=(0, 1)`` on an
    attention output kernel ``(heads, head_dim, embed)`` groups along its
    ``heads * head_dim`` contraction. The grouped length must be a multiple of ``m``.
    Default (``axis=None``): the input axis for rank-2 ``(in, out)`` and rank-4 HWIO
    ``(H, W, in, out)`` kernels (axis ``-2``, as in 2:4 sparse tensor cores); any
    other rank has no default and needs an explicit ``axis=``. Each group keeps its
    ``n`` largest magnitudes, the lowest positions on ties, so every mask has exactly
    ``n`` of every ``m`` entries (the projection's nonzeros are fewer only where a
    group has fewer nonzeros). NaN ranks above every magnitude, as in
    ``admmjax.project``.
    """

    n: int
    m: int
    axis: int | tuple[int, ...] | None = None

    def __post_init__(self):
        n = _int("NM", "n", self.n, 0)
        m = _int("NM", "m", self.m, 1)
        if n > m:
            raise ValueError(f"NM(n, m) needs n <= m, got NM({n}, {m})")
        object.__setattr__(self, "n", n)
        object.__setattr__(self, "m", m)
        if self.axis is not None:
            object.__setattr__(self, "axis", axis_arg("NM", self.axis))

    def _group_axes(self, shape: tuple[int, ...], path: str = "<leaf>") -> tuple[int, ...]:
        owner = f"NM({self.n}, {self.m})"
        if self.axis is None:
            if len(shape) not in (2, 4):
                raise ValueError(
                    f"target for '{path}': {owner} has no default axis for a rank-"
                    f"{len(shape)} leaf of shape {shape} (the default, the input axis, "
                    f"is defined for rank-2 (in, out) and rank-4 (H, W, in, out) kernels "
                    f"only); pass the contraction axis, e.g. NM({self.n}, {self.m}, "
                    f"axis=0) or a tuple such as axis=(0, 1)"
                )
            return (len(shape) - 2,)
        return _axes(path, owner, self.axis, shape)

    def validate(self, path: str, shape: tuple[int, ...]) -> None:
        axes = self._group_axes(shape, path)
        length = math.prod(shape[a] for a in axes)
        if length % self.m:
            raise ValueError(
                f"target for '{path}': NM({self.n}, {self.m}) groups axis {self.axis} of "
                f"shape {shape} in runs of {self.m}, but its length {length} is not "
                f"a multiple of {self.m}"
            )

    def max_nonzero(self, shape: tuple[int, ...]) -> int:
        return math.prod(shape) // self.m * self.n

    def _project(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        if x.size == 0:
            return x, jnp.zeros(x.shape, bool)
        axes = self._group_axes(x.shape)
        tail = list(range(x.ndim - len(axes), x.ndim))
        keys = jnp.moveaxis(magnitude_keys(x).reshape(x.shape), axes, tail)
        moved_shape = keys.shape
        keys = keys.reshape(-1, self.m)
        if self.m <= 16:
            # rank_i = #{j : key_j > key_i, or key_j == key_i and j < i}: O(m^2) per group.
            a, b = keys[:, :, None], keys[:, None, :]
            earlier = np.arange(self.m)[None, :] < np.arange(self.m)[:, None]
            rank = jnp.sum((b > a) | ((b == a) & earlier), axis=-1)
        else:
            order = jnp.argsort(~keys, axis=-1, stable=True)  # descending, ties by index
            rank = jnp.argsort(order, axis=-1)
        mask = jnp.moveaxis((rank < self.n).reshape(moved_shape), tail, axes)
        return jnp.where(mask, x, jnp.zeros((), x.dtype)), mask


@dataclasses.dataclass(frozen=True)
class Quantized(Constraint):
    r"""Every entry on a finite set of levels (ADMM-NN's weight quantization).

    Three kinds of level set:

    * fixed: ``Quantized(levels, scale=s)`` with ``levels`` a sequence of numbers
      (``0`` need not be one of them) or an int ``L`` meaning the uniform grid
      :math:`\{-L, \dots, L\}` (``2L + 1`` levels), times a fixed ``scale`` ``s > 0``.
      The projection rounds each entry to its nearest level (exact; equidistant
      entries go to the level of smaller magnitude);
    * learned scale: ``Quantized(levels, scale="learned")``: the set is
      :math:`\bigcup_{s \ge 0} (s B)^n` for the base levels ``B``, e.g.
      ``Quantized(1, scale="learned")`` is ternary :math:`\{-s, 0, s\}` with ``s`` free.
      The projection finds the optimal ``s`` exactly per call (see
      :func:`optimal_scale`) and rounds to ``s B``;
    * k-means: ``Quantized(num_levels=K)`` learns ``K`` levels per call by ``iters``
      rounds of Lloyd's algorithm from quantile initialisation, then rounds to them.
      This is a heuristic (Lloyd's finds a local optimum), not an exact projection.

    :meth:`levels_for` returns the levels a leaf is projected onto. The mask of a
    quantized leaf marks its nonzero entries. Quantized weights should stay fixed in
    retraining: see :func:`admmjax.freeze_quantized`.
    """

    levels: tuple[float, ...] | int | None = None
    scale: float | Literal["learned"] = 1.0
    num_levels: int | None = None
    iters: int = 30

    quantized = True

    def __post_init__(self):
        owner = "Quantized"
        if (self.levels is None) == (self.num_levels is None):
            raise ValueError(
                f"{owner}: give exactly one of levels (a level set or an int L for "
                "{-L, ..., L}) and num_levels (k-means levels)"
            )
        if self.num_levels is not None:
            object.__setattr__(self, "num_levels", _int(owner, "num_levels", self.num_levels, 1))
            if self.scale != 1.0:
                raise ValueError(f"{owner}: k-means levels (num_levels) take no scale")
        else:
            object.__setattr__(self, "levels", _levels(owner, self.levels))
        object.__setattr__(self, "iters", _int(owner, "iters", self.iters, 0))
        if isinstance(self.scale, str):
            if self.scale != "learned":
                raise ValueError(
                    f"{owner}: scale must be a number > 0 or 'learned', got {self.scale!r}"
                )
            if not any(b != 0 for b in self.levels):
                raise ValueError(f"{owner}: a learned scale needs a nonzero level in {self.levels}")
        else:
            scale = float(self.scale)
            if not (math.isfinite(scale) and scale > 0):
                raise ValueError(f"{owner}: scale must be finite and > 0, got {self.scale!r}")
            object.__setattr__(self, "scale", scale)

    def levels_for(self, x: jax.Array) -> jax.Array:
        """The sorted levels leaf ``x`` is projected onto (compute dtype); jittable."""
        return _levels_jit(self, jnp.asarray(x))

    def _levels_for(self, x: jax.Array) -> jax.Array:
        v = jnp.ravel(x).astype(_compute_dtype(x))
        if self.num_levels is not None:
            if v.size == 0:
                return jnp.zeros(self.num_levels, v.dtype)
            return kmeans_levels(v, self.num_levels, self.iters)
        base = jnp.asarray(self.levels, v.dtype)
        if self.scale == "learned":
            if v.size == 0:
                return base
            return optimal_scale(v, base) * base
        return base * jnp.asarray(self.scale, v.dtype)

    def _project(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        if x.size == 0:
            return x, jnp.zeros(x.shape, bool)
        v = x.astype(_compute_dtype(x))
        levels = self._levels_for(v)
        z = levels[nearest_level(v, levels)].astype(x.dtype)
        return z, z != 0


@jax.jit(static_argnums=0)
def _levels_jit(constraint: Quantized, x: jax.Array) -> jax.Array:
    return constraint._levels_for(x)


@dataclasses.dataclass(frozen=True)
class SparseQuantized(Constraint):
    r"""Pruning and quantization jointly: at most ``k`` nonzeros, each on the level set.

    The set is :math:`\{Z : \mathrm{card}(Z) \le k,\ Z_i \in \{0\} \cup sQ\}` with ``k``
    from ``target`` (a sparsity or ``Keep(n)``, as for plain pruning) and the levels
    ``Q`` times a fixed ``scale`` ``s`` as in :class:`Quantized` (an int ``L`` is
    :math:`\{-L, \dots, L\}`). The cost is separable: entry ``i`` costs :math:`w_i^2`
    when zeroed and :math:`(w_i - q(w_i))^2` when kept at its nearest level
    :math:`q(w_i)`. So the exact projection keeps the ``k`` entries of largest gain
    :math:`g_i = w_i^2 - (w_i - q(w_i))^2 = q(w_i)(2 w_i - q(w_i))` among those with
    :math:`g_i > 0`, ties to the lowest index, and zeros the rest. The mask marks the
    nonzeros. A learned scale is not supported here (the joint minimisation over the
    scale and the support has no exact method of this kind).
    """

    target: Target
    levels: tuple[float, ...] | int
    scale: float = 1.0

    quantized = True

    def __post_init__(self):
        owner = "SparseQuantized"
        object.__setattr__(self, "target", _target(owner, self.target))
        object.__setattr__(self, "levels", _levels(owner, self.levels))
        if isinstance(self.scale, str):
            raise ValueError(
                f"{owner}: scale must be a fixed number > 0 (a learned scale is only "
                f"supported by Quantized), got {self.scale!r}"
            )
        scale = float(self.scale)
        if not (math.isfinite(scale) and scale > 0):
            raise ValueError(f"{owner}: scale must be finite and > 0, got {self.scale!r}")
        object.__setattr__(self, "scale", scale)

    def validate(self, path: str, shape: tuple[int, ...]) -> None:
        _check_target(path, "SparseQuantized", self.target, math.prod(shape), "entries")

    def max_nonzero(self, shape: tuple[int, ...]) -> int:
        return int(keep_count(self.target, math.prod(shape)))

    def levels_for(self, x: jax.Array) -> jax.Array:
        """The sorted nonzero-capable levels ``s Q`` (compute dtype of ``x``)."""
        dt = _compute_dtype(x)
        return jnp.asarray(self.levels, dt) * jnp.asarray(self.scale, dt)

    def _project(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        if x.size == 0:
            return x, jnp.zeros(x.shape, bool)
        v = x.astype(_compute_dtype(x))
        levels = self.levels_for(v)
        q = levels[nearest_level(v, levels)]
        gain = q * (2 * v - q)
        top = keep_mask(jnp.maximum(gain, 0), self.max_nonzero(x.shape))
        keep = top & (gain > 0)
        z = jnp.where(keep, q, 0).astype(x.dtype)
        return z, z != 0


def freeze_quantized(masks: Any, targets: Any) -> Any:
    """Masks for :func:`admmjax.keep_pruned` that also hold quantized leaves fixed.

    ``masks`` is the second output of :func:`admmjax.prune`. Leaves whose target is
    :class:`Quantized` or :class:`SparseQuantized` get an all-``False`` mask, so
    ``keep_pruned(tx, freeze_quantized(masks, targets))`` zeros their whole update and
    they keep their level values exactly; other leaves keep their masks (pruned
    entries stay 0, the rest train).
    """
    treedef = jax.tree.structure(masks, is_leaf=lambda m: m is None)
    flat_masks = treedef.flatten_up_to(masks)
    try:
        flat_targets = treedef.flatten_up_to(targets)
    except (ValueError, TypeError) as err:
        raise ValueError(
            f"freeze_quantized: targets do not have the masks' structure: {err}"
        ) from None
    out = [
        jnp.zeros_like(m) if m is not None and isinstance(t, Constraint) and t.quantized else m
        for m, t in zip(flat_masks, flat_targets, strict=True)
    ]
    return treedef.unflatten(out)

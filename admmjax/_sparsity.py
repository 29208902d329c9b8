"""Sparsity targets: which leaves to prune and by how much.

A *target* is a pytree with the structure of the params. Each leaf is one of

* a float ``s`` in ``[0, 1)``: prune a fraction ``s`` of the leaf, i.e. keep exactly
  ``k = n - floor(s * n)`` entries of an ``n``-entry leaf (the float64 product, on the
  host: :func:`keep_count` states the rule, also for traced targets);
* :class:`Keep` ``(k)``: keep exactly ``k`` entries (the paper's budget ``l_i``);
* ``None``: leave the leaf dense (biases, norms, embeddings you do not want pruned);
* a :class:`Constraint`: any other constraint set with an exact Euclidean projection
  (structured, N:M, quantization; see ``admmjax._constraints``).

The same pytree may be written by hand, built by :func:`uniform_sparsity` or
:func:`sparsity_by_path`, and is accepted everywhere a target is.
"""

from __future__ import annotations

import fnmatch
import math
import numbers
from collections.abc import Callable, Iterable, Mapping
from typing import Any, ClassVar, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

PyTree = Any
Include = Callable[[str, Any], bool] | str | Iterable[str] | None


@jax.tree_util.register_pytree_node_class
class Keep:
    """Target leaf that keeps exactly ``n`` entries of largest magnitude.

    ``Keep(6_050)`` on a leaf of 400,000 entries keeps 6,050 of them. It is a
    pytree node whose single child is ``n``, so targets holding it can be passed
    through ``jax.jit`` (``n`` then becomes a traced integer).
    """

    __slots__ = ("n",)

    def __init__(self, n: int | jax.Array):
        if not isinstance(n, jax.core.Tracer):
            if isinstance(n, bool) or not isinstance(n, numbers.Integral | np.integer):
                if not (
                    isinstance(n, np.ndarray | jax.Array) and jnp.issubdtype(n.dtype, jnp.integer)
                ):
                    raise TypeError(f"Keep(n) needs an integer count, got {n!r}")
            if int(n) < 0:
                raise ValueError(f"Keep(n) needs n >= 0, got {int(n)}")
        self.n = n

    def tree_flatten(self):
        return (self.n,), None

    @classmethod
    def tree_unflatten(cls, aux, children):
        obj = object.__new__(cls)
        obj.n = children[0]
        return obj

    def __repr__(self) -> str:
        return f"Keep({self.n!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Keep) and self.n == other.n

    def __hash__(self) -> int:
        return hash(("Keep", int(self.n)))


class Constraint:
    """Base class of constraint-set targets: a static, hashable description of a set S.

    A subclass describes one set per leaf (e.g. "at most 2 nonzeros in every 4
    consecutive entries") and implements its exact Euclidean projection
    :math:`\\Pi_S(V) = \\arg\\min_{Z \\in S} \\|Z - V\\|_F`. Subclasses are
    registered as static pytree nodes (no children): a target tree holding them passes
    through ``jax.jit`` as part of its structure, so they must be hashable and compare
    by value (frozen dataclasses).

    Subclasses implement :meth:`validate`, :meth:`max_nonzero` and :meth:`_project`.
    """

    #: Whether projected leaves lie on a finite set of levels (retraining should freeze them).
    quantized: ClassVar[bool] = False
    #: The coupled group of the target (``Structured(..., group=...)``), else ``None``.
    group: ClassVar[str | None] = None

    def __init_subclass__(cls, **kwargs: Any):
        super().__init_subclass__(**kwargs)
        jax.tree_util.register_static(cls)

    def validate(self, path: str, shape: tuple[int, ...]) -> None:
        """Raises ``ValueError`` naming ``path`` if the constraint does not fit ``shape``."""

    def max_nonzero(self, shape: tuple[int, ...]) -> int:
        """The most nonzero entries a projected leaf of ``shape`` can have."""
        return math.prod(shape)

    def project(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """``(z, mask)``: the projection of ``x`` (same shape and dtype) and its support.

        Jitted with the constraint static, so eager calls compile once per leaf shape.
        """
        return _project_jit(self, jnp.asarray(x))

    def _project(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        raise NotImplementedError


@jax.jit(static_argnums=0)
def _project_jit(constraint: Constraint, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    return constraint._project(x)


def path_str(path: tuple) -> str:
    """``'fc1/kernel'`` for a key path; a trailing NNX ``.value`` is dropped."""
    if path and isinstance(path[-1], jax.tree_util.GetAttrKey) and path[-1].name == "value":
        path = path[:-1]
    return jax.tree_util.keystr(path, simple=True, separator="/")


def leaf_paths(tree: PyTree) -> list[str]:
    """Path strings of every leaf of ``tree``, in flattening order."""
    return [path_str(p) for p, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]


class LeafTarget(NamedTuple):
    """One params leaf with its resolved target (internal)."""

    path: str
    leaf: Any
    spec: Any  # None, a float in [0, 1), Keep or a Constraint


def unbox(x: Any) -> Any:
    """The value of an NNX ``Variable`` box (duck-typed on ``get_value``), else ``x``.

    ``nnx.Optimizer`` hands the transform pure arrays while targets (and its own
    ``opt_state``) built from ``nnx.state(model)`` hold boxed ``Param(value=...)``
    leaves, so a target flattened up to pure params arrives boxed.
    """
    return x.get_value() if callable(getattr(x, "get_value", None)) else x


def _is_target_leaf(x: Any) -> bool:
    return x is None or isinstance(x, Keep | Constraint)


def _check_spec(path: str, spec: Any, size: int) -> Any:
    """Validates one target leaf against its params leaf; returns it normalised."""
    if spec is None:
        return None
    if isinstance(spec, Keep):
        if not isinstance(spec.n, jax.core.Tracer) and int(spec.n) > size:
            raise ValueError(
                f"target for '{path}': Keep({int(spec.n)}) exceeds the leaf's {size} entries"
            )
        return spec
    if isinstance(spec, jax.core.Tracer):
        return spec
    if isinstance(spec, bool) or isinstance(spec, np.bool_):
        raise TypeError(f"target for '{path}' is a bool ({spec}); expected a float in [0, 1)")
    if isinstance(spec, np.ndarray | jax.Array) and spec.ndim == 0:
        spec = spec.item()
    if not isinstance(spec, numbers.Real):
        raise TypeError(
            f"target for '{path}' is {spec!r} of type {type(spec).__name__}; "
            "expected a float sparsity in [0, 1), Keep(n), a constraint (admmjax.NM, "
            "admmjax.Structured, admmjax.Quantized, ...) or None"
        )
    spec = float(spec)
    if not math.isfinite(spec):
        raise ValueError(f"target for '{path}' is {spec}; expected a finite float in [0, 1)")
    if not 0.0 <= spec < 1.0:
        raise ValueError(
            f"target for '{path}' is {spec}; expected a sparsity in [0, 1) "
            "(the fraction of entries to prune; use Keep(n) for an exact count)"
        )
    return spec


def structure_error(
    what: str,
    params: PyTree,
    other: PyTree,
    is_leaf: Callable[[Any], bool],
    err: Exception,
    hint: str = "",
) -> ValueError:
    """The error for a tree (``what``) that should mirror the params' structure but does
    not: the params paths it misses and the paths it has that the params lack."""
    got = [path_str(p) for p, _ in jax.tree_util.tree_flatten_with_path(other, is_leaf=is_leaf)[0]]
    want = leaf_paths(params)
    missing = [p for p in want if p not in got]
    extra = sorted(p for p in got if p not in want)
    hint = f" ({hint})" if hint else ""
    return ValueError(
        f"{what} do not have the structure of the params: missing paths {missing[:8]}, "
        f"unexpected paths {extra[:8]}{hint}. Details: {err}"
    )


def resolve_targets(params: PyTree, targets: PyTree) -> tuple[Any, list[LeafTarget]]:
    """Aligns ``targets`` with the leaves of ``params`` and validates every leaf.

    Returns the params treedef and one :class:`LeafTarget` per params leaf.
    Raises ``ValueError`` naming the offending path on a structure mismatch,
    an out-of-range or non-finite sparsity, or a ``Keep`` larger than its leaf.
    """
    flat, treedef = jax.tree_util.tree_flatten_with_path(params)
    try:
        specs = treedef.flatten_up_to(targets)
    except (ValueError, TypeError) as err:
        raise structure_error(
            "targets", params, targets, _is_target_leaf, err,
            "build targets with admmjax.uniform_sparsity or admmjax.sparsity_by_path, "
            "or give a leaf per params leaf, None for dense",
        ) from None  # fmt: skip
    out = []
    for (path, leaf), spec in zip(flat, specs, strict=True):
        p = path_str(path)
        spec = unbox(spec)
        if not _is_target_leaf(spec) and isinstance(spec, Mapping | list | tuple):
            raise ValueError(f"target for '{p}' is a container {spec!r}; expected a leaf")
        if isinstance(spec, Constraint):
            spec.validate(p, tuple(jnp.shape(leaf)))
            out.append(LeafTarget(p, leaf, spec))
            continue
        out.append(LeafTarget(p, leaf, _check_spec(p, spec, int(np.prod(jnp.shape(leaf))))))
    check_groups(out)
    return treedef, out


def group_members(leaves: list[LeafTarget]) -> dict[str, list[int]]:
    """``{group: [leaf indices]}`` of the coupled targets, in flattening order."""
    members: dict[str, list[int]] = {}
    for i, t in enumerate(leaves):
        if isinstance(t.spec, Constraint) and t.spec.group is not None:
            members.setdefault(t.spec.group, []).append(i)
    return members


def check_groups(leaves: list[LeafTarget]) -> None:
    """Raises ``ValueError`` naming the paths if members of a group disagree.

    Every member must have the same stacked shape, number of slices and target (its
    ``group_signature``), so that one selection of slice indices fits them all.
    """
    for group, idx in group_members(leaves).items():
        sigs = {leaves[i].path: leaves[i].spec.group_signature(tuple(jnp.shape(leaves[i].leaf)))
                for i in idx}  # fmt: skip
        if len(set(sigs.values())) > 1:
            detail = ", ".join(
                f"'{p}': {sl} slices, target {tg!r}" + (f", stacked {st}" if st else "")
                for p, (st, sl, tg) in sigs.items()
            )
            raise ValueError(
                f"coupled group {group!r}: members must agree on the number of slices, "
                f"the target and the stacked axes, got {detail}"
            )


def keep_count(spec: Any, size: int) -> int | jax.Array:
    r"""Entries kept by ``spec`` in a leaf of ``size`` entries: the one counting rule.

    A concrete sparsity ``s`` (a Python or NumPy float, also one closed over inside
    ``jax.jit`` or held by a static constraint such as ``Structured(s)``) keeps

    .. math::
       k = n - \lfloor \mathrm{fl}_{64}(s \cdot n) \rfloor,

    computed on the host: :math:`\mathrm{fl}_{64}(s n)` is the float64 product of
    ``float(s)`` and ``n`` rounded to nearest (Python's ``float`` multiply; ``n`` is
    exact in float64 for every leaf the library accepts), then floored exactly. So
    ``0.29`` on 100 entries keeps 72 (``0.29 * 100 == 28.999999999999996``), ``0.53``
    on 100 keeps 47. ``Keep(k)`` keeps ``k``; ``None`` keeps all.

    A *traced* sparsity (a float leaf of a targets pytree passed as a ``jax.jit``
    argument becomes one) is computed on the device in the tracer's dtype, float32
    unless ``jax_enable_x64``: :math:`k = n - \lfloor \mathrm{fl}_{32}(\mathrm{fl}_{32}(s)
    \cdot \mathrm{fl}_{32}(n)) \rfloor`, which can keep one entry fewer or more than the
    concrete rule (0.29 on 100 keeps 71 in float32) and, beyond 2^24 entries, rounds
    ``n`` itself. Convert targets with :func:`as_keep_counts` before passing them to
    a jitted function: ``Keep`` counts are integers and trace exactly.

    Traced targets out of range never raise (there is no host check under ``jit``);
    they are clamped, NaN-safely: a traced sparsity is clipped to ``[0, 1]`` with NaN
    read as 0 (keep everything), and a traced ``Keep(k)`` keeps ``clip(k, 0, n)``
    (``Keep(201)`` on 200 entries keeps 200, ``Keep(-5)`` keeps 0). Concrete
    out-of-range targets are refused by :func:`resolve_targets` before any work.
    """
    if spec is None:
        return size
    if isinstance(spec, Keep):
        n = spec.n
        if isinstance(n, jax.core.Tracer):
            return jnp.clip(n, 0, size).astype(jnp.int32)
        return int(n)
    if isinstance(spec, jax.core.Tracer):
        s = spec if jnp.issubdtype(spec.dtype, jnp.inexact) else spec.astype(jnp.float32)
        s = jnp.where(jnp.isnan(s), 0, jnp.clip(s, 0, 1))
        k = size - jnp.floor(s * size).astype(jnp.int32)
        return jnp.clip(k, 0, size)  # fl32(n) may round above n
    return size - math.floor(float(spec) * size)


def target_counts(params: PyTree, targets: PyTree) -> PyTree:
    """The exact number of entries each target keeps; ``None`` for dense leaves.

    For a :class:`Constraint` leaf it is the most nonzeros the constraint allows
    (``Constraint.max_nonzero``: the whole leaf for pure quantization).
    """
    treedef, leaves = resolve_targets(params, targets)
    counts = []
    for t in leaves:
        shape = tuple(jnp.shape(t.leaf))
        if t.spec is None:
            counts.append(None)
        elif isinstance(t.spec, Constraint):
            counts.append(t.spec.max_nonzero(shape))
        else:
            counts.append(keep_count(t.spec, math.prod(shape)))
    return treedef.unflatten(counts)


def as_keep_counts(params: PyTree, targets: PyTree) -> PyTree:
    """``targets`` with every sparsity leaf replaced by ``Keep(k)``, ``k`` by :func:`keep_count`.

    Counted once, on the host, by the concrete rule. Pass the result (not fractions)
    to a jitted function that takes targets as an argument, e.g.
    ``jax.jit(admmjax.update)(state, params, as_keep_counts(params, targets))``: a
    float leaf would be traced and counted in float32, a ``Keep`` count is traced as
    an exact integer, so ``init``, ``jit(update)``, ``prune`` and
    :func:`target_counts` keep the same number of entries. ``Keep``, ``None`` and
    constraint leaves are returned as they are.
    """
    treedef, leaves = resolve_targets(params, targets)
    out = []
    for t in leaves:
        if isinstance(t.spec, jax.core.Tracer):
            raise TypeError(
                f"as_keep_counts: the target for '{t.path}' is traced; call it on the "
                "host, with concrete targets, before jax.jit"
            )
        fraction = not (t.spec is None or isinstance(t.spec, Keep | Constraint))
        size = math.prod(jnp.shape(t.leaf))
        out.append(Keep(keep_count(t.spec, size)) if fraction else t.spec)
    return treedef.unflatten(out)


def targeted_leaves(params: PyTree, targets: PyTree) -> dict[str, Any]:
    """``{path: leaf}`` for the leaves of ``params`` that ``targets`` prunes, in order."""
    _, leaves = resolve_targets(params, targets)
    return {t.path: t.leaf for t in leaves if t.spec is not None}


#: Last path components the default selection prunes: dense and convolution weights.
DEFAULT_WEIGHT_NAMES = ("kernel", "weight")


def is_layer_weight(path: str, leaf: Any, stacked_axes: int = 0) -> bool:
    """The default selection: a leaf named ``kernel`` or ``weight`` with ``ndim >= 2``.

    The name is the last ``/``-separated path component, so Linen's ``Dense_0/kernel``,
    NNX's ``linear/kernel`` (trailing ``value`` dropped) and a plain dict's
    ``fc1/weight`` are selected, stacked or not; biases, norm scales and offsets
    (``scale``, ``bias``, a 1-D PyTorch-style norm ``weight``) and embeddings
    (``embedding``, ``embed``, ``wte``, ``wpe``) are not. ``stacked_axes`` layer axes
    are not counted in the rank, so a stacked norm ``weight`` (layers, width) stays
    dense too.
    """
    name_ok = path.rsplit("/", 1)[-1] in DEFAULT_WEIGHT_NAMES
    return name_ok and jnp.ndim(leaf) - stacked_axes >= 2


StackedAxes = Mapping[str, int | tuple[int, ...]] | None


def _stacked_match(path: str, stacked: StackedAxes) -> str | None:
    """The first ``stacked`` glob matching ``path`` (``None``: not stacked)."""
    return next((pat for pat in stacked or () if fnmatch.fnmatchcase(path, pat)), None)


def _include_fn(include: Include, stacked: StackedAxes = None) -> Callable[[str, Any], bool]:
    if include is None and stacked:

        def is_slice_layer_weight(path: str, leaf: Any) -> bool:
            match = _stacked_match(path, stacked)
            axes = 0 if match is None else len(np.atleast_1d(stacked[match]))
            return is_layer_weight(path, leaf, axes)

        return is_slice_layer_weight
    if include is None:
        return is_layer_weight
    if callable(include):
        return include
    patterns = [include] if isinstance(include, str) else list(include)
    return lambda path, leaf: any(fnmatch.fnmatchcase(path, pat) for pat in patterns)


def _wrap_stacked(paths: list[str], specs: list, stacked: StackedAxes) -> list:
    """Wraps the targets of paths matching a ``stacked`` glob in ``Stacked(spec, axis)``."""
    if not stacked:
        return specs
    from admmjax._stacked import Stacked  # _stacked builds on this module

    unused = [pat for pat in stacked if not any(fnmatch.fnmatchcase(p, pat) for p in paths)]
    if unused:
        raise ValueError(f"stacked pattern(s) {unused} match no parameter path; paths: {paths}")
    out = []
    for p, spec in zip(paths, specs, strict=True):
        match = _stacked_match(p, stacked)
        wrap = match is not None and spec is not None and not isinstance(spec, Stacked)
        out.append(Stacked(spec, stacked[match]) if wrap else spec)
    return out


def uniform_sparsity(
    params: PyTree,
    sparsity: float | Keep | Constraint,
    include: Include = None,
    *,
    stacked: StackedAxes = None,
) -> PyTree:
    """The same sparsity on every selected leaf, ``None`` (dense) elsewhere.

    Args:
      params: the parameter pytree (NNX ``State``, Linen dict, nested dicts...).
      sparsity: fraction in ``[0, 1)`` to prune from each selected leaf, or any
        target leaf (``Keep(n)``, a :class:`Constraint` such as ``admmjax.NM(2, 4)``).
      include: which leaves to prune. ``None`` (default) selects the weights of
        dense and convolution layers: leaves whose last path component is ``kernel``
        or ``weight`` and ``ndim >= 2`` (:func:`is_layer_weight`; for a leaf matched
        by ``stacked``, the rank of one slice); biases, norm
        scales/offsets and embeddings stay dense (select them by path to prune
        them). Or a callable ``(path, leaf) -> bool``, or glob pattern(s) over
        paths like ``'fc1/kernel'``.
      stacked: ``{glob: axis}``: selected leaves whose path matches a glob hold
        layers stacked along ``axis`` (an int or a tuple, e.g. ``{'layers/*': 0}``
        for ``nnx.scan``); their target becomes ``Stacked(sparsity, axis)``, one
        budget per layer (see :func:`stacked_axes_from_nnx`).
    """
    flat, treedef = jax.tree_util.tree_flatten_with_path(params)
    select = _include_fn(include, stacked)
    paths = [path_str(p) for p, _ in flat]
    leaves = [leaf for _, leaf in flat]
    specs = [sparsity if select(p, x) else None for p, x in zip(paths, leaves, strict=True)]
    targets = treedef.unflatten(_wrap_stacked(paths, specs, stacked))
    resolve_targets(params, targets)  # validates the value once per leaf
    return targets


def sparsity_by_path(
    params: PyTree,
    patterns: Mapping[str, float | Keep | Constraint | None],
    default: Any = None,
    *,
    stacked: StackedAxes = None,
) -> PyTree:
    """Targets from glob patterns over leaf paths, e.g. ``{'conv*/kernel': 0.8}``.

    Values are any target leaves, so constraints mix freely per leaf:
    ``{'conv*/kernel': admmjax.Structured(0.5, axis=-1), 'fc1/kernel': admmjax.NM(2, 4),
    'fc2/kernel': 0.9}``.

    Paths are ``'/'``-joined keys such as ``'Dense_0/kernel'`` (NNX's trailing
    ``value`` is dropped). ``*`` matches any characters, ``/`` included. The first
    matching pattern (in dict order) wins; unmatched leaves get ``default``.
    A pattern that matches no leaf is an error naming it. ``stacked`` wraps the
    targets of matching paths in ``Stacked`` as in :func:`uniform_sparsity`.
    """
    flat, treedef = jax.tree_util.tree_flatten_with_path(params)
    paths = [path_str(p) for p, _ in flat]
    unused = [pat for pat in patterns if not any(fnmatch.fnmatchcase(p, pat) for p in paths)]
    if unused:
        raise ValueError(
            f"sparsity pattern(s) {unused} match no parameter path; available paths: {paths}"
        )
    specs = []
    for p in paths:
        match = next((pat for pat in patterns if fnmatch.fnmatchcase(p, pat)), None)
        specs.append(default if match is None else patterns[match])
    targets = treedef.unflatten(_wrap_stacked(paths, specs, stacked))
    resolve_targets(params, targets)
    return targets

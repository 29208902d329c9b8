r"""ADMM for cardinality-constrained training (Zhang et al., ECCV 2018).

Any constraint set with a Euclidean projection runs in the same loop: a target leaf
may be a ``Structured``, ``NM``, ``Quantized`` or ``SparseQuantized`` constraint, and
the Z-step then projects onto that set (ADMM-NN's pruning and quantization).

The problem :math:`\min_W f(W)` s.t. :math:`\mathrm{card}(W_i) \le l_i` is split as
:math:`W = Z` with the scaled augmented Lagrangian

.. math::
   L_\rho(W, Z, U) = f(W) + \sum_i \frac{\rho_i}{2} \|W_i - Z_i + U_i\|_F^2 .

One ADMM iteration ``k`` is

1. W-step: a few epochs of SGD/Adam on :math:`L_\rho` in :math:`W` (the
   :func:`penalty` transform adds :math:`\rho_i (W_i - Z_i + U_i)` to the gradients);
2. Z-step: :math:`Z^{k+1} = \Pi_S(W^{k+1} + U^k)` (:func:`admmjax.project`);
3. U-step: :math:`U^{k+1} = U^k + W^{k+1} - Z^{k+1}`.

Steps 2-3 are :func:`update`. Convention: the penalty is
:math:`\frac{\rho}{2}\|\cdot\|_F^2` with the Frobenius norm (a TensorFlow
``rho * tf.nn.l2_loss``); ports that use the unhalved norm have twice our ``rho``.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from admmjax._projections import leaf_projections

PyTree = Any
Rho = float | jax.Array | Callable[[jax.Array], jax.Array] | PyTree


class ADMMState(NamedTuple):
    """ADMM variables; ``z`` and ``u`` mirror the params with ``None`` at dense leaves.

    Attributes:
      z: the projected copy :math:`Z` of the weights.
      u: the scaled dual variable :math:`U`.
      count: number of Z/U updates done so far (int32); rho schedules read it.
      anchor: :math:`Z - U`, kept so the W-step's penalty reads one array instead of
        two (XLA recomputes the penalty inside each optimizer-moment fusion, so every
        extra array is read twice per step). ``None`` (a state built by hand) makes
        :func:`penalty` compute it from ``z`` and ``u``.
    """

    z: PyTree
    u: PyTree
    count: jax.Array
    anchor: PyTree = None


def _anchor(z: list, u: list) -> list:
    return [None if zi is None else zi - ui for zi, ui in zip(z, u, strict=True)]


class ADMMInfo(NamedTuple):
    """Residuals of one :func:`update`.

    Attributes:
      primal: per leaf :math:`\\|W_i - Z_i^{k+1}\\|_F` (``None`` at dense leaves).
      dual: per leaf :math:`\\|Z_i^{k+1} - Z_i^k\\|_F`.
      primal_total: :math:`\\|W - Z^{k+1}\\|` over all targeted leaves together.
      dual_total: :math:`\\|Z^{k+1} - Z^k\\|` likewise.
      converged: every per-leaf primal and dual residual is ``<= eps``.
    """

    primal: PyTree
    dual: PyTree
    primal_total: jax.Array
    dual_total: jax.Array
    converged: jax.Array


def init(params: PyTree, targets: PyTree, *, dtype: Any = None) -> ADMMState:
    """:math:`Z^0 = \\Pi_S(W^0)`, :math:`U^0 = 0`; ``None`` at leaves without a target.

    ``dtype`` (``None``: each leaf's own) is the dtype of Z and U: ``jnp.float32``
    for bf16/fp16 params, whose rounding would erase U's small increments
    :math:`W - Z`; :func:`penalty` and :func:`update` then compute in float32.
    """
    treedef, proj = leaf_projections(params, targets)
    z = [None if p is None else p[0].astype(dtype or p[0].dtype) for p in proj]
    u = [None if zi is None else jnp.zeros_like(zi) for zi in z]
    return ADMMState(
        treedef.unflatten(z), treedef.unflatten(u), jnp.zeros((), jnp.int32),
        treedef.unflatten(_anchor(z, u)),
    )  # fmt: skip


def _norm(x: jax.Array) -> jax.Array:
    x = x.astype(jnp.float32)
    return jnp.sqrt(jnp.sum(x * x))


def update(
    state: ADMMState, params: PyTree, targets: PyTree, *, eps: float = 1e-3
) -> tuple[ADMMState, ADMMInfo]:
    """The Z- and U-steps with residuals: one ADMM iteration after a W-step.

    .. math::
       Z^{k+1} = \\Pi_S(W + U^k), \\qquad U^{k+1} = U^k + W - Z^{k+1}

    Returns the new state and an :class:`ADMMInfo` with the primal residuals
    :math:`\\|W - Z^{k+1}\\|` and dual residuals :math:`\\|Z^{k+1} - Z^k\\|` (per
    leaf and total) and ``converged`` (all per-leaf residuals ``<= eps``). Jittable;
    to pass ``targets`` as a ``jax.jit`` argument, pass
    ``admmjax.as_keep_counts(params, targets)``: float leaves would be traced and
    counted in float32 (see ``admmjax._sparsity.keep_count``), ``Keep`` counts stay exact.
    """
    treedef = jax.tree.structure(params)
    w = treedef.flatten_up_to(params)
    z_old = treedef.flatten_up_to(state.z)
    u_old = treedef.flatten_up_to(state.u)
    v = [None if z is None else wi + ui for wi, z, ui in zip(w, z_old, u_old, strict=True)]
    v_tree = treedef.unflatten([vi if vi is not None else wi for vi, wi in zip(v, w, strict=True)])
    _, proj = leaf_projections(v_tree, targets)
    z_new, u_new, primal, dual = [], [], [], []
    for wi, zo, uo, p in zip(w, z_old, u_old, proj, strict=True):
        if p is None or zo is None:
            if (p is None) != (zo is None):
                raise ValueError(
                    "targets do not match the ADMM state: a leaf is targeted in one and "
                    "dense in the other; build the state with admmjax.init(params, targets)"
                )
            z_new.append(None), u_new.append(None), primal.append(None), dual.append(None)
            continue
        zi = p[0]
        z_new.append(zi)
        u_new.append(uo + wi - zi)
        primal.append(_norm(wi - zi))
        dual.append(_norm(zi - zo))
    p = [x for x in primal if x is not None]
    d = [x for x in dual if x is not None]
    primal_total = jnp.sqrt(sum(x * x for x in p)) if p else jnp.zeros(())
    dual_total = jnp.sqrt(sum(x * x for x in d)) if d else jnp.zeros(())
    converged = jnp.all(jnp.array([x <= eps for x in p + d])) if p else jnp.array(True)
    new_state = ADMMState(
        treedef.unflatten(z_new), treedef.unflatten(u_new), state.count + 1,
        treedef.unflatten(_anchor(z_new, u_new)),
    )  # fmt: skip
    info = ADMMInfo(
        treedef.unflatten(primal), treedef.unflatten(dual), primal_total, dual_total, converged
    )
    return new_state, info


def _rho_leaves(rho: Rho, treedef: Any, count: jax.Array) -> list:
    """One rho per params leaf: scalar, schedule of the ADMM count, or per-leaf tree."""
    # Scalars are numbers or 0-d arrays; anything else is a per-leaf pytree (calling
    # jnp.ndim on a dict or an NNX State is deprecated in JAX and will raise).
    scalar = isinstance(rho, numbers.Real | np.ndarray | np.generic | jax.Array) and (
        jnp.ndim(rho) == 0
    )
    if callable(rho) or scalar:
        leaves = [rho] * treedef.num_leaves
    else:
        try:
            leaves = treedef.flatten_up_to(rho)
        except (ValueError, TypeError) as err:
            raise ValueError(
                "rho must be a scalar, a schedule (callable of the ADMM iteration count) "
                f"or a pytree with the params' structure; got {rho!r}: {err}"
            ) from None
    return [_rho_value(r, count) for r in leaves]


def _rho_value(r: Any, count: jax.Array) -> Any:
    """A rho leaf at ``count``; unwraps single-leaf nodes such as NNX ``Variable``s.

    ``nnx.Optimizer`` hands the transform pure arrays, so a rho tree built from
    ``nnx.state(model)`` arrives as ``Param(0.1)`` boxes, which are callable.
    """
    if r is not None and not isinstance(r, numbers.Real | np.ndarray | np.generic | jax.Array):
        inner = jax.tree_util.tree_leaves(r)
        if len(inner) == 1:
            r = inner[0]
    return r(count) if callable(r) else r


def _require_state(params: PyTree, admm_state: ADMMState | None) -> None:
    if params is None or admm_state is None:
        raise ValueError(
            "admmjax.penalty needs the params and the ADMM state: call "
            "tx.update(grads, opt_state, params, admm_state=state) (or, in NNX, "
            "optimizer.update(model, grads, admm_state=state))"
        )
    if not isinstance(admm_state, ADMMState):
        raise TypeError(f"admm_state must be an admmjax.ADMMState, got {type(admm_state)}")


def penalty(rho: Rho) -> optax.GradientTransformationExtraArgs:
    r"""Adds the gradient of the ADMM penalty, :math:`\rho_i (W_i - Z_i + U_i)`, to updates.

    Shaped like ``optax.add_decayed_weights``: put it *before* the optimizer, e.g.
    ``optax.chain(admmjax.penalty(1e-3), optax.adam(1e-3))``, so Adam preconditions
    the penalty along with the loss gradient. ``Z`` and ``U`` come from the keyword
    argument ``admm_state`` of ``update``; leaves without a target (``None`` in
    the state) pass unchanged.

    Args:
      rho: a scalar; a schedule ``count -> rho`` of the ADMM iteration count
        (``admm_state.count``, i.e. how many Z/U updates have run); or a pytree with
        the params' structure whose leaves are scalars or such schedules.
    """

    def init_fn(params: PyTree) -> optax.EmptyState:
        del params
        return optax.EmptyState()

    def update_fn(updates, state, params=None, *, admm_state=None, **extra):
        del extra
        _require_state(params, admm_state)
        treedef = jax.tree.structure(updates)
        g = treedef.flatten_up_to(updates)
        w = treedef.flatten_up_to(params)
        if admm_state.anchor is None:
            z = treedef.flatten_up_to(admm_state.z)
            anchor = _anchor(z, treedef.flatten_up_to(admm_state.u))
        else:
            anchor = treedef.flatten_up_to(admm_state.anchor)
        r = _rho_leaves(rho, treedef, admm_state.count)
        # rho (W - (Z - U)): the same gradient, with one state array read per leaf.
        out = [
            gi if ai is None else (gi + ri * (wi - ai)).astype(gi.dtype)
            for gi, wi, ai, ri in zip(g, w, anchor, r, strict=True)
        ]
        return treedef.unflatten(out), state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def penalty_value(params: PyTree, admm_state: ADMMState, rho: Rho) -> jax.Array:
    r"""The ADMM penalty :math:`\sum_i \frac{\rho_i}{2}\|W_i - Z_i + U_i\|_F^2`.

    :func:`penalty` adds exactly its gradient; use this to log the augmented loss.
    """
    treedef = jax.tree.structure(params)
    w = treedef.flatten_up_to(params)
    z = treedef.flatten_up_to(admm_state.z)
    u = treedef.flatten_up_to(admm_state.u)
    r = _rho_leaves(rho, treedef, admm_state.count)
    terms = [
        0.5 * ri * jnp.sum(jnp.square((wi - zi + ui).astype(jnp.float32)))
        for wi, zi, ui, ri in zip(w, z, u, r, strict=True)
        if zi is not None
    ]
    return sum(terms, jnp.zeros((), jnp.float32))

r"""ADMM as one optax transformation: the W-step penalty and the Z/U steps in ``update``.

:func:`admm` wraps an optimizer so that an unchanged training loop (a hand-written
``tx.update`` / ``optax.apply_updates`` loop, Linen ``TrainState.apply_gradients``,
``nnx.Optimizer.update``, ``optax.MultiSteps``) runs ADMM pruning. Per step ``t``
(counted from 1):

1. W-step: :math:`g \leftarrow g + \rho_i (W_i - Z_i + U_i)` (:func:`admmjax.penalty`),
   then the wrapped optimizer turns ``g`` into the update :math:`\Delta_t`;
2. if ``t % every == 0``: the Z/U steps (:func:`admmjax.update`) on the params *after*
   this step's update, :math:`W_{t} = W_{t-1} + \Delta_t`, computed inside as
   ``optax.apply_updates(params, updates)`` (optax hands ``update`` the params before
   the step). So step ``every`` is the last W-step of ADMM iteration 1, and steps
   ``every + 1 .. 2 every`` use the new Z and U, exactly as the loop
   ``init -> every penalised steps -> update -> every penalised steps -> ...``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from admmjax._admm import ADMMInfo, ADMMState, Rho, init, penalty, update
from admmjax._sparsity import unbox

PyTree = Any


class ADMMTransformState(NamedTuple):
    """State of :func:`admm`.

    Attributes:
      inner: the wrapped optimizer's state.
      admm: the :class:`ADMMState` (Z, U, the ADMM count).
      step: W-steps taken since ``init`` (int32).
      info: the :class:`ADMMInfo` of the latest Z/U update (zeros, ``converged``
        False, before the first).
    """

    inner: Any
    admm: ADMMState
    step: jax.Array
    info: ADMMInfo


def _zero_info(admm: ADMMState, params: PyTree, targets: PyTree) -> ADMMInfo:
    """An ADMMInfo shaped like :func:`update`'s, all zeros (before the first Z/U update)."""
    shapes = jax.eval_shape(lambda s, p: update(s, p, targets)[1], admm, params)
    return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)


def admm(
    tx: optax.GradientTransformation,
    targets: PyTree,
    *,
    rho: Rho,
    every: int,
    eps: float = 1e-3,
    state_dtype: Any = None,
) -> optax.GradientTransformationExtraArgs:
    r"""Wraps ``tx`` into ADMM pruning that needs no change to the training loop.

    ``init(params)`` builds :math:`Z^0 = \Pi_S(W^0)`, :math:`U^0 = 0`. Each ``update``
    adds :math:`\rho_i (W_i - Z_i + U_i)` to the gradients before ``tx`` and, after the
    W-step of every ``every``-th step, runs the Z/U steps

    .. math::
       Z^{k+1} = \Pi_S(W_t + U^k), \qquad U^{k+1} = U^k + W_t - Z^{k+1},
       \qquad W_t = W_{t-1} + \Delta_t,

    inside a ``lax.while_loop`` that runs once or not at all (jittable, no host round
    trip; on steps without a Z/U update the projection is not computed and Z, U stay in
    place, and :math:`W_t` is the loop's own
    ``apply_updates``, which XLA shares under the caller's ``jit``). Read Z, U and the latest
    residuals with :func:`admm_state`. After ADMM, hard prune with
    :func:`admmjax.prune` as usual.

    Args:
      tx: the W-step optimizer (extra keyword arguments are passed through).
      targets: target tree as for :func:`admmjax.init`.
      rho: as in :func:`admmjax.penalty`: scalar, per-leaf tree, or schedule of the
        ADMM count.
      every: W-steps per ADMM iteration (e.g. steps per epoch times epochs), >= 1.
      eps: convergence threshold of :func:`admmjax.update`'s residuals.
      state_dtype: dtype of Z and U (``None``: the params' dtypes). Use
        ``jnp.float32`` with bf16/fp16 params: U accumulates the small differences
        :math:`W - Z`, which bf16's 8-bit mantissa rounds away; the penalty is then
        computed in float32 and cast to the gradient's dtype, and the params stay
        in their dtype.
    """
    if isinstance(every, bool) or not isinstance(every, int) or every < 1:
        raise ValueError(f"every must be an int >= 1 (W-steps per ADMM iteration), got {every!r}")
    inner = optax.with_extra_args_support(tx)
    add_penalty = penalty(rho)

    def init_fn(params: PyTree) -> ADMMTransformState:
        admm0 = init(params, targets, dtype=state_dtype)
        return ADMMTransformState(
            inner.init(params), admm0, jnp.zeros((), jnp.int32), _zero_info(admm0, params, targets)
        )

    def update_fn(updates, state, params=None, **extra):
        if params is None:
            raise ValueError(
                "admmjax.admm needs the params: call tx.update(grads, opt_state, params)"
            )
        updates, _ = add_penalty.update(updates, optax.EmptyState(), params, admm_state=state.admm)
        updates, inner_state = inner.update(updates, state.inner, params, **extra)
        step = state.step + 1
        # W_t outside the loop: under the caller's jit it is the same expression as the
        # loop's own apply_updates, so XLA computes it once (no extra pass over the
        # params) and Z/U see exactly the params the loop gets (inside the loop, XLA
        # could fuse the add differently, e.g. contract it with Adam's scale to an FMA).
        new_params = optax.apply_updates(params, updates)

        def zu_step(carry):
            _, admm_old, _ = carry
            return (jnp.zeros((), bool), *update(admm_old, new_params, targets, eps=eps))

        # A loop that runs zero times or once, not a lax.cond: XLA updates a while
        # loop's carry in place, while a cond's pass-through branch copies Z and U
        # (measured on CPU: ~30 us instead of ~85 us per step for LeNet-300-100's state).
        _, new_admm, info = jax.lax.while_loop(
            lambda carry: carry[0], zu_step, (step % every == 0, state.admm, state.info)
        )
        return updates, ADMMTransformState(inner_state, new_admm, step, info)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def admm_state(opt_state: Any) -> ADMMTransformState:
    """The :class:`ADMMTransformState` of :func:`admm` inside any optimizer state.

    Searches nested states (``optax.chain``, ``MultiSteps``, ``inject_hyperparams``,
    ``keep_pruned``, a Linen ``TrainState.opt_state``, an ``nnx.Optimizer``'s
    ``opt_state``, whose boxed leaves are unwrapped). Its ``admm`` field holds Z, U
    and the ADMM count; ``info`` the residuals of the latest Z/U update.

    Raises:
      ValueError: no ``admm`` state, or more than one, in ``opt_state``.
    """
    found = [
        x
        for x in jax.tree.leaves(opt_state, is_leaf=lambda x: isinstance(x, ADMMTransformState))
        if isinstance(x, ADMMTransformState)
    ]
    if len(found) != 1:
        raise ValueError(
            f"expected exactly one admmjax.admm state in the optimizer state, found "
            f"{len(found)} in a {type(opt_state).__name__}; build the optimizer with "
            "admmjax.admm(tx, targets, rho=..., every=...)"
        )
    # NNX Optimizer keeps its opt_state leaves in OptArray/OptVariable boxes.
    return jax.tree.map(unbox, found[0], is_leaf=lambda x: hasattr(x, "get_value"))

"""One jitted training step: loss gradient, transforms (penalty, masks), optimizer."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import optax

PyTree = Any


def make_train_step(
    loss_fn: Callable[..., Any],
    tx: optax.GradientTransformation,
    *,
    has_aux: bool = False,
    jit: bool = True,
    donate: bool = True,
) -> Callable[..., Any]:
    """Builds ``step(params, opt_state, *args, admm_state=None)``.

    The step computes ``loss_fn(params, *args)`` and its gradient, runs
    ``tx.update(grads, opt_state, params, admm_state=admm_state)`` and applies the
    updates. With ``tx = optax.chain(admmjax.penalty(rho), optimizer)`` it is the
    ADMM W-step; with ``admmjax.keep_pruned(optimizer, masks)`` it is masked
    retraining; with a plain optimizer, ordinary training. ``admm_state`` is only
    passed on when given.

    Returns ``(params, opt_state, loss)`` or, with ``has_aux``,
    ``(params, opt_state, loss, aux)``. With ``donate`` (default) the input params
    and optimizer state buffers are donated to the outputs: do not reuse them.
    """
    tx = optax.with_extra_args_support(tx)
    grad_fn = jax.value_and_grad(loss_fn, has_aux=has_aux)

    def step(params: PyTree, opt_state: PyTree, *args: Any, admm_state: Any = None):
        out, grads = grad_fn(params, *args)
        extra = {} if admm_state is None else {"admm_state": admm_state}
        updates, opt_state = tx.update(grads, opt_state, params, **extra)
        params = optax.apply_updates(params, updates)
        if has_aux:
            loss, aux = out
            return params, opt_state, loss, aux
        return params, opt_state, out

    if jit:
        return jax.jit(step, donate_argnums=(0, 1) if donate else ())
    return step

"""One LeNet-5 forward and backward pass on fixed inputs, as plain arrays (shared by the
in-process and the no-kernels subprocess side of test_models.py)."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import admmjax


def logits_and_grads(models: Any) -> dict[str, np.ndarray]:
    _, params, apply_fn = models.functional(models.create_model("lenet5", seed=0))
    x = jax.random.uniform(jax.random.key(1), (4, 28, 28, 1))
    y = jnp.arange(4) % 10

    def loss(p):
        logits = apply_fn(p, x)
        return -jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(4), y]), logits

    grads, logits = jax.jit(jax.grad(loss, has_aux=True))(params)
    flat = dict(zip(admmjax.leaf_paths(grads), jax.tree.leaves(grads), strict=True))
    return {"logits": np.asarray(logits), **{f"grad {k}": np.asarray(v) for k, v in flat.items()}}

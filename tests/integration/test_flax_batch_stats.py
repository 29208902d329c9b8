"""admmjax.flax: BatchNorm statistics re-estimated after the hard prune.

The recomputed ``mean``/``var`` must equal the population statistics of each
BatchNorm layer's inputs (captured in train mode) over all the batches, whatever the
layers' momentum, and on a trained-then-pruned ResNet they must lower the eval loss
that the stale (dense) statistics give.
"""

from __future__ import annotations

from typing import Any

import _flax_models as fm
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import linen as nn
from flax import nnx

import admmjax
from admmjax.flax import recompute_batch_stats, recompute_nnx_batch_stats

BATCH_SIZES = (8, 8, 4)  # unequal on purpose: the average is weighted by samples


def _batches(seed: int, channels: int = 3, size: int = 16) -> list[jax.Array]:
    keys = jax.random.split(jax.random.key(seed), len(BATCH_SIZES))
    return [
        jax.random.normal(k, (n, size, size, channels)) + 0.5
        for k, n in zip(keys, BATCH_SIZES, strict=True)
    ]


def _bn_inputs(model: nn.Module, variables: Any, batches: list) -> dict[tuple, jax.Array]:
    """Each nn.BatchNorm's inputs in train mode, all batches concatenated, by module path."""
    seen: dict[tuple, list] = {}

    def record(next_fun, args, kwargs, context):
        if isinstance(context.module, nn.BatchNorm):
            seen.setdefault(tuple(context.module.path), []).append(args[0])
        return next_fun(*args, **kwargs)

    for x in batches:
        with nn.intercept_methods(record):
            model.apply(variables, x, train=True, mutable=["batch_stats"])
    return {k: jnp.concatenate(v) for k, v in seen.items()}


def _stats_at(stats: Any, path: tuple) -> Any:
    for key in path:
        stats = stats[key]
    return stats


def _xent(logits: jax.Array, labels: jax.Array) -> jax.Array:
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


@pytest.fixture(scope="module")
def trained_resnet():
    """The ResNet fitted for 40 adam steps on the batches (random labels), then pruned."""
    model = fm.resnet18()
    batches = _batches(0)
    labels = [jax.random.randint(jax.random.key(i), (len(x),), 0, 4) for i, x in enumerate(batches)]
    variables = model.init(jax.random.key(1), batches[0], train=False)
    tx = optax.adam(3e-3)

    @jax.jit
    def step(params, stats, opt, x, y):
        def loss(p):
            logits, new = model.apply(
                {"params": p, "batch_stats": stats}, x, train=True, mutable=["batch_stats"]
            )
            return _xent(logits, y), new["batch_stats"]

        grads, stats = jax.grad(loss, has_aux=True)(params)
        updates, opt = tx.update(grads, opt, params)
        return optax.apply_updates(params, updates), stats, opt

    params, stats, opt = variables["params"], variables["batch_stats"], tx.init(variables["params"])
    for i in range(40):
        j = i % len(batches)
        params, stats, opt = step(params, stats, opt, batches[j], labels[j])
    pruned, _ = admmjax.prune(params, admmjax.uniform_sparsity(params, 0.9))
    return model, {"params": pruned, "batch_stats": stats}, batches, labels


def test_linen_stats_are_the_population_statistics_of_the_bn_inputs(trained_resnet):
    model, variables, batches, _ = trained_resnet
    new = recompute_batch_stats(model, variables, batches, train=True)
    inputs = _bn_inputs(model, variables, batches)
    assert len(inputs) == 20  # stem + 2 per block x 8 + 3 projections
    for path, x in inputs.items():
        got = _stats_at(new, path)
        flat = x.reshape(-1, x.shape[-1])
        np.testing.assert_allclose(got["mean"], flat.mean(0), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(got["var"], flat.var(0), rtol=1e-4, atol=1e-5)
    # Momentum-free: an exponential average would differ from the population mean.
    old = _stats_at(variables["batch_stats"], ("bn_init",))["mean"]
    assert not np.allclose(old, _stats_at(new, ("bn_init",))["mean"], atol=1e-3)


def test_linen_recomputed_stats_lower_the_eval_loss(trained_resnet):
    model, variables, batches, labels = trained_resnet
    new = recompute_batch_stats(model, variables, batches, train=True)

    def eval_loss(stats: Any) -> float:
        losses = [
            _xent(
                model.apply({"params": variables["params"], "batch_stats": stats}, x, train=False),
                y,
            )
            for x, y in zip(batches, labels, strict=True)
        ]
        return float(np.mean(losses))

    stale, fresh = eval_loss(variables["batch_stats"]), eval_loss(new)
    print(f"eval loss after the 90% prune: stale stats {stale:.4f}, recomputed {fresh:.4f}")
    assert fresh < stale


class _NNXConvBN(nnx.Module):
    """conv -> BN -> relu -> conv -> BN(momentum 0.5) -> mean -> linear."""

    def __init__(self, *, rngs: nnx.Rngs):
        self.conv1 = nnx.Conv(3, 8, (3, 3), rngs=rngs)
        self.bn1 = nnx.BatchNorm(8, rngs=rngs)
        self.conv2 = nnx.Conv(8, 8, (3, 3), rngs=rngs)
        self.bn2 = nnx.BatchNorm(8, momentum=0.5, rngs=rngs)
        self.head = nnx.Linear(8, 4, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = nnx.relu(self.bn1(self.conv1(x)))
        return self.head(self.bn2(self.conv2(x)).mean(axis=(1, 2)))


def test_nnx_stats_are_the_population_statistics_of_the_bn_inputs():
    model = _NNXConvBN(rngs=nnx.Rngs(0))
    model.eval()
    batches = _batches(1)
    # The truth: the BN inputs in train mode, on a copy (train mode updates its stats).
    ref = nnx.clone(model)
    ref.train()
    a1 = [ref.conv1(x) for x in batches]
    a2 = [ref.conv2(nnx.relu(ref.bn1(a))) for a in a1]
    recompute_nnx_batch_stats(model, batches)
    assert model.bn1.use_running_average and model.bn2.use_running_average  # restored
    for bn, acts in ((model.bn1, a1), (model.bn2, a2)):
        flat = jnp.concatenate(acts).reshape(-1, 8)
        np.testing.assert_allclose(bn.mean[...], flat.mean(0), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(bn.var[...], flat.var(0), rtol=1e-4, atol=1e-5)


def test_errors_before_any_work():
    model = fm.resnet18()
    with pytest.raises(ValueError, match="no batches"):
        recompute_batch_stats(model, {"params": {}, "batch_stats": {}}, [], train=True)
    with pytest.raises(ValueError, match="no 'batch_stats'"):
        recompute_batch_stats(model, {"params": {}}, [jnp.zeros((1, 8, 8, 3))], train=True)
    with pytest.raises(ValueError, match=r"no nnx\.BatchNorm"):
        recompute_nnx_batch_stats(nnx.Linear(2, 2, rngs=nnx.Rngs(0)), [jnp.zeros((1, 2))])
    bad = _NNXConvBN(rngs=nnx.Rngs(0))
    bad.bn2.momentum = 1.0
    with pytest.raises(ValueError, match=r"momentum 1\.0 must be in"):
        recompute_nnx_batch_stats(bad, [jnp.zeros((1, 8, 8, 3))])


def test_the_pure_core_does_not_import_flax():
    import subprocess
    import sys

    code = "import sys, admmjax; assert 'flax' not in sys.modules, 'admmjax imported flax'"
    subprocess.run([sys.executable, "-c", code], check=True)

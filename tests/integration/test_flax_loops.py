"""admmjax on real Flax training loops, on the re-typed Flax example models.

``admmjax.admm`` runs unchanged through Linen ``TrainState.apply_gradients`` (the mnist
CNN; the ResNet with ``batch_stats``), ``nnx.Optimizer(model, tx, wrt=nnx.Param)``
(the scanned NNX decoder stack), ``optax.MultiSteps`` and a hand-written loop, all
under ``jit``. After the hard prune, ``keep_pruned(adamw)`` keeps every zero exactly
zero through 200 retraining steps; counts are exact per layer inside stacked leaves.
"""

from __future__ import annotations

from typing import Any

import _flax_models as fm
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from flax.training import train_state

import admmjax
from admmjax import parallel

EVERY = 4
RETRAIN_STEPS = 200


def _images(seed: int, n: int, size: int, channels: int, classes: int):
    kx, ky = jax.random.split(jax.random.key(seed))
    x = jax.random.normal(kx, (n, size, size, channels))
    return x, jax.random.randint(ky, (n,), 0, classes)


def _xent(logits: jax.Array, labels: jax.Array) -> jax.Array:
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


def _nonzero(tree: Any) -> dict[str, int]:
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {jax.tree_util.keystr(p): int(jnp.count_nonzero(x)) for p, x in leaves}


def _zeros_kept(masks: Any, params: Any) -> None:
    """Every pruned entry (mask False) of ``params`` is exactly 0.0."""
    for m, p in zip(jax.tree.leaves(masks), jax.tree.leaves(params), strict=True):
        assert not np.any(np.asarray(p)[~np.asarray(m)]), "a pruned weight moved"


def _selected(params: Any, targets: Any) -> set[str]:
    return set(admmjax.targeted_leaves(params, targets))


# ---------------------------------------------------------------- Linen CNN, TrainState


def _cnn():
    model = fm.CNN()
    x, y = _images(0, 8, 16, 1, 10)
    params = model.init(jax.random.key(1), x)["params"]
    return model, params, x, y


def _cnn_loss(model, params, x, y):
    return _xent(model.apply({"params": params}, x), y)


def test_default_selection_on_the_cnn():
    _, params, _, _ = _cnn()
    targets = admmjax.uniform_sparsity(params, 0.9)
    assert _selected(params, targets) == {
        f"{n}/kernel" for n in ("Conv_0", "Conv_1", "Dense_0", "Dense_1")
    }


def test_trainstate_apply_gradients_equals_hand_written_loop():
    model, params, x, y = _cnn()
    targets = admmjax.uniform_sparsity(params, 0.9)
    tx = admmjax.admm(optax.adam(1e-3), targets, rho=1e-2, every=EVERY)
    state = train_state.TrainState.create(apply_fn=model.apply, params=params, tx=tx)
    grad = jax.grad(lambda p: _cnn_loss(model, p, x, y))

    @jax.jit
    def ts_step(state):
        return state.apply_gradients(grads=grad(state.params))

    @jax.jit
    def loop_step(p, s):
        updates, s = tx.update(grad(p), s, p)
        return optax.apply_updates(p, updates), s

    p, s = params, tx.init(params)
    for _ in range(2 * EVERY):
        state = ts_step(state)
        p, s = loop_step(p, s)
    got, want = admmjax.admm_state(state.opt_state), admmjax.admm_state(s)
    assert int(got.admm.count) == 2 and int(got.step) == 2 * EVERY
    for a, b in zip(jax.tree.leaves((state.params, got)), jax.tree.leaves((p, want)), strict=True):
        assert jnp.array_equal(a, b)
    # Z is the exact projection: 10% of each kernel's entries (rounded up) stay.
    counts = admmjax.target_counts(params, targets)
    for path, z in admmjax.targeted_leaves(got.admm.z, targets).items():
        assert int(jnp.count_nonzero(z)) == int(admmjax.targeted_leaves(counts, targets)[path])
    assert float(got.info.primal_total) > 0


def test_bf16_params_with_float32_state_through_trainstate():
    model, params, x, y = _cnn()
    params = jax.tree.map(lambda a: a.astype(jnp.bfloat16), params)
    targets = admmjax.uniform_sparsity(params, 0.9)
    tx = admmjax.admm(optax.adam(1e-3), targets, rho=1e-2, every=EVERY, state_dtype=jnp.float32)
    state = train_state.TrainState.create(apply_fn=model.apply, params=params, tx=tx)
    grad = jax.grad(lambda p: _cnn_loss(model, p, x.astype(jnp.bfloat16), y))
    step = jax.jit(lambda st: st.apply_gradients(grads=grad(st.params)))
    for _ in range(2 * EVERY):
        state = step(state)
    got = admmjax.admm_state(state.opt_state).admm
    assert {a.dtype for a in jax.tree.leaves(state.params)} == {jnp.dtype(jnp.bfloat16)}
    assert {a.dtype for a in jax.tree.leaves((got.z, got.u))} == {jnp.dtype(jnp.float32)}
    assert int(got.count) == 2
    kernel = got.z["Dense_0"]["kernel"]
    assert int(jnp.count_nonzero(kernel)) == kernel.size - int(0.9 * kernel.size)
    # After two updates U = U1 + W - Z2 holds float32 values that bf16 would round.
    u = got.u["Dense_0"]["kernel"]
    assert jnp.any(u != u.astype(jnp.bfloat16).astype(jnp.float32))


def test_multisteps_equals_admm_on_the_mean_gradient():
    model, params, x, y = _cnn()
    targets = admmjax.uniform_sparsity(params, 0.9)
    make = lambda: admmjax.admm(optax.sgd(1e-2), targets, rho=1e-2, every=2)  # noqa: E731
    multi = optax.MultiSteps(make(), every_k_schedule=2)
    plain = make()
    grad = jax.grad(lambda p, xb, yb: _cnn_loss(model, p, xb, yb))

    @jax.jit
    def micro(p, s, xb, yb):
        updates, s = multi.update(grad(p, xb, yb), s, p)
        return optax.apply_updates(p, updates), s

    @jax.jit
    def full(p, s, xs, ys):
        g = jax.tree.map(lambda a, b: (a + b) / 2, grad(p, xs[0], ys[0]), grad(p, xs[1], ys[1]))
        updates, s = plain.update(g, s, p)
        return optax.apply_updates(p, updates), s

    xs, ys = x.reshape(2, 4, *x.shape[1:]), y.reshape(2, 4)
    p, s, q, r = params, multi.init(params), params, plain.init(params)
    for _ in range(4):  # 4 optimizer steps = 8 micro-steps, 2 Z/U updates
        for i in range(2):
            p, s = micro(p, s, xs[i], ys[i])
        q, r = full(q, r, xs, ys)
    got, want = admmjax.admm_state(s), admmjax.admm_state(r)
    assert int(got.admm.count) == int(want.admm.count) == 2
    for a, b in zip(
        jax.tree.leaves((p, got.admm.z)), jax.tree.leaves((q, want.admm.z)), strict=True
    ):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
    for a, b in zip(jax.tree.leaves(got.admm.z), jax.tree.leaves(want.admm.z), strict=True):
        assert jnp.array_equal(a != 0, b != 0)


# ------------------------------------------------------- Linen ResNet with batch_stats


class BNTrainState(train_state.TrainState):
    batch_stats: Any


def _resnet():
    model = fm.resnet18()
    x, y = _images(2, 8, 16, 3, 4)
    variables = model.init(jax.random.key(3), x, train=False)
    return model, variables, x, y


def _resnet_step(model):
    @jax.jit
    def step(state, x, y):
        def loss(p):
            logits, new = model.apply(
                {"params": p, "batch_stats": state.batch_stats}, x, mutable=["batch_stats"]
            )
            return _xent(logits, y), new["batch_stats"]

        grads, stats = jax.grad(loss, has_aux=True)(state.params)
        return state.apply_gradients(grads=grads, batch_stats=stats)

    return step


@pytest.mark.slow
def test_resnet_admm_prune_and_200_steps_of_masked_adamw():
    model, variables, x, y = _resnet()
    params = variables["params"]
    targets = admmjax.uniform_sparsity(params, 0.8)
    # Default selection: every conv kernel and the Dense kernel; no BN scale/bias, no bias.
    selected = _selected(params, targets)
    assert selected == {p for p in admmjax.leaf_paths(params) if p.endswith("/kernel")}
    assert not any("bn" in p.lower() or "norm" in p.lower() for p in selected)
    tx = admmjax.admm(optax.adam(1e-3), targets, rho=1e-2, every=EVERY)
    state = BNTrainState.create(
        apply_fn=model.apply, params=params, tx=tx, batch_stats=variables["batch_stats"]
    )
    step = _resnet_step(model)
    for _ in range(2 * EVERY):
        state = step(state, x, y)
    assert int(admmjax.admm_state(state.opt_state).admm.count) == 2
    assert not jax.tree.all(
        jax.tree.map(jnp.array_equal, state.batch_stats, variables["batch_stats"])
    ), "batch_stats were not carried through apply_gradients"

    pruned, masks = admmjax.prune(state.params, targets)
    counts = admmjax.targeted_leaves(admmjax.target_counts(params, targets), targets)
    nonzero = {
        k: int(jnp.count_nonzero(v)) for k, v in admmjax.targeted_leaves(pruned, targets).items()
    }
    assert nonzero == {k: int(v) for k, v in counts.items()}

    retrain = admmjax.keep_pruned(optax.adamw(1e-3, weight_decay=1e-2), masks)
    state = BNTrainState.create(
        apply_fn=model.apply, params=pruned, tx=retrain, batch_stats=state.batch_stats
    )
    start = jax.tree.map(jnp.array, state.params)
    for _ in range(RETRAIN_STEPS):
        state = step(state, x, y)
    _zeros_kept(
        admmjax.targeted_leaves(masks, targets), admmjax.targeted_leaves(state.params, targets)
    )
    moved = jax.tree.map(lambda a, b: bool(jnp.any(a != b)), start, state.params)
    assert all(jax.tree.leaves(moved)), "retraining left some leaf untouched"


# ------------------------------------------------------------ NNX scanned decoder stack


def _decoder():
    model = fm.DecoderStack(layers=4, rngs=nnx.Rngs(0))
    # Layer scales 4/1/1/0.5 as in issue 20: one pool over the stack would starve layer 3.
    scales = jnp.array([4.0, 1.0, 1.0, 0.5]).reshape(4, 1, 1, 1)
    q = model.blocks.attention.query.kernel
    q[...] = q[...] * scales
    tokens = jax.random.randint(jax.random.key(5), (4, 8), 0, 32)
    return model, tokens


def _decoder_loss(model, tokens):
    logits = model(tokens[:, :-1])
    return _xent(logits.reshape(-1, logits.shape[-1]), tokens[:, 1:].reshape(-1))


def _per_layer_nonzero(x: jax.Array) -> list[int]:
    return [int(v) for v in jnp.count_nonzero(x.reshape(x.shape[0], -1), axis=1)]


def test_stacked_axes_from_nnx_on_the_scanned_model():
    model, _ = _decoder()
    params = nnx.state(model, nnx.Param)
    axes = admmjax.stacked_axes_from_nnx(params)
    kernels = {f"blocks/attention/{n}/kernel" for n in ("query", "key", "value", "out")}
    kernels |= {"blocks/mlp/linear1/kernel", "blocks/mlp/linear2/kernel"}
    assert axes == {**dict.fromkeys(kernels, 0), "blocks/ln1/scale": 0, "blocks/ln2/scale": 0}
    targets = admmjax.uniform_sparsity(params, 0.75, stacked=axes)
    # Default selection: kernels only (stacked or not); no embedding, LN scale or bias.
    assert _selected(params, targets) == kernels | {"logits/kernel"}
    specs = nnx.to_pure_dict(targets)

    def spec(path: str) -> Any:
        node = specs
        for key in path.split("/"):
            node = node[key]
        return node

    assert all(spec(k) == admmjax.Stacked(0.75, axis=0) for k in kernels)
    assert spec("logits/kernel") == 0.75


def test_nnx_optimizer_runs_admm_with_exact_per_layer_counts_and_2_4():
    model, tokens = _decoder()
    params = nnx.state(model, nnx.Param)
    stacked = admmjax.stacked_axes_from_nnx(params)
    attn = "blocks/attention"
    targets = admmjax.sparsity_by_path(
        params,
        {
            f"{attn}/query/kernel": admmjax.Stacked(0.75),
            # 2:4 along the contraction: embed for q/k/v (embed, heads, head_dim) slices,
            # (heads, head_dim) for the out kernel's (heads, head_dim, embed) slices.
            f"{attn}/key/kernel": admmjax.Stacked(admmjax.NM(2, 4, axis=0)),
            f"{attn}/value/kernel": admmjax.Stacked(admmjax.NM(2, 4, axis=0)),
            f"{attn}/out/kernel": admmjax.Stacked(admmjax.NM(2, 4, axis=(0, 1))),
            "blocks/mlp/*/kernel": 0.5,
        },
        stacked=stacked,
    )
    tx = admmjax.admm(optax.adam(1e-3), targets, rho=1e-2, every=EVERY)
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)

    @nnx.jit
    def step(model, optimizer, tokens):
        loss, grads = nnx.value_and_grad(_decoder_loss)(model, tokens)
        optimizer.update(model, grads)
        return loss

    losses = [float(step(model, optimizer, tokens)) for _ in range(2 * EVERY)]
    assert losses[-1] < losses[0]
    state = admmjax.admm_state(optimizer.opt_state)
    assert int(state.admm.count) == 2

    pruned, masks = admmjax.prune(nnx.state(model, nnx.Param), targets)
    blocks = pruned["blocks"]
    # Per layer: 25% of 16*2*8 = 256 entries, whatever the layer's scale.
    assert _per_layer_nonzero(blocks["attention"]["query"]["kernel"][...]) == [64] * 4
    assert _per_layer_nonzero(blocks["mlp"]["linear1"]["kernel"][...]) == [256] * 4
    for name, contraction in (("key", (1,)), ("value", (1,)), ("out", (1, 2))):
        lead = range(1, 1 + len(contraction))
        k = jnp.moveaxis(blocks["attention"][name]["kernel"][...], contraction, lead)
        groups = (k.reshape(4, -1, 4, *k.shape[1 + len(contraction) :]) != 0).sum(axis=2)
        assert int(groups.max()) == 2 and int(groups.min()) == 2, name
    # The same projection on 4 virtual devices (admmjax.parallel) on a Stacked target.
    mesh = parallel.data_mesh()
    raw = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    raw_targets = nnx.to_pure_dict(targets)
    placed = parallel.shard_leaves(raw, mesh, min_size=0)
    sharded = jax.jit(lambda t: parallel.project_sharded(t, raw_targets, mesh))(placed)
    for a, b in zip(
        jax.tree.leaves(sharded), jax.tree.leaves(nnx.to_pure_dict(pruned)), strict=True
    ):
        assert jnp.array_equal(a, b)

    nnx.update(model, pruned)
    retrain = nnx.Optimizer(
        model, admmjax.keep_pruned(optax.adamw(1e-3, weight_decay=1e-2), masks), wrt=nnx.Param
    )
    for _ in range(RETRAIN_STEPS):
        step(model, retrain, tokens)
    after = nnx.state(model, nnx.Param)
    _zeros_kept(admmjax.targeted_leaves(masks, targets), admmjax.targeted_leaves(after, targets))
    assert _per_layer_nonzero(after["blocks"]["attention"]["query"]["kernel"][...]) == [64] * 4


@nnx.jit
def _decoder_step(model, optimizer, tokens):
    optimizer.update(model, nnx.grad(_decoder_loss)(model, tokens))


def test_same_seed_same_result_under_jit():
    model, _ = _decoder()
    params = nnx.state(model, nnx.Param)
    targets = admmjax.uniform_sparsity(params, 0.5, stacked=admmjax.stacked_axes_from_nnx(params))
    tx = admmjax.admm(optax.adam(1e-3), targets, rho=1e-2, every=2)  # one tx: one compilation

    def run() -> Any:
        model, tokens = _decoder()
        optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
        for _ in range(4):
            _decoder_step(model, optimizer, tokens)
        return nnx.to_pure_dict(nnx.state(model, nnx.Param)), admmjax.admm_state(
            optimizer.opt_state
        )

    first, second = run(), run()
    assert int(first[1].admm.count) == 2
    for a, b in zip(jax.tree.leaves(first), jax.tree.leaves(second), strict=True):
        assert jnp.array_equal(a, b)


@pytest.mark.parametrize("sparsity", [0.5, 0.9])
def test_stacked_projection_of_the_real_stack_is_per_layer(sparsity):
    model, _ = _decoder()
    params = nnx.state(model, nnx.Param)
    stacked = admmjax.stacked_axes_from_nnx(params)
    targets = admmjax.uniform_sparsity(params, sparsity, stacked=stacked)
    z = admmjax.project(params, targets)
    for path in stacked:
        leaf = admmjax.targeted_leaves(z, targets).get(path)
        if leaf is None:
            continue
        per_layer = leaf.size // leaf.shape[0]
        want = per_layer - int(sparsity * per_layer)
        assert _per_layer_nonzero(leaf) == [want] * leaf.shape[0], path

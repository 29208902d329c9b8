"""Coupled structured groups (``Structured(..., group=...)``) and ``shrink``, on plain pytrees."""

from __future__ import annotations

import itertools
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import admmjax

L, EMBED, HEADS, HEAD_DIM = 3, 8, 4, 2


def attention_params(seed: int = 0, stacked: bool = False) -> dict:
    """q/k/v kernels ``(embed, heads, head_dim)``, out ``(heads, head_dim, embed)``."""
    keys = jax.random.split(jax.random.key(seed), 5)
    lead = (L,) if stacked else ()
    qkv = (*lead, EMBED, HEADS, HEAD_DIM)
    return {
        "query": {"kernel": jax.random.normal(keys[0], qkv)},
        "key": {"kernel": jax.random.normal(keys[1], qkv)},
        "value": {"kernel": jax.random.normal(keys[2], qkv)},
        "out": {"kernel": jax.random.normal(keys[3], (*lead, HEADS, HEAD_DIM, EMBED))},
        "mlp": {"kernel": jax.random.normal(keys[4], (*lead, EMBED, 16))},
    }


def head_targets(params: dict, target=None, stacked: bool = False) -> dict:
    """Heads coupled across q/k/v (heads axis 1) and out (heads axis 0); default Keep(2)."""
    target = admmjax.Keep(2) if target is None else target
    qkv = admmjax.Structured(target, axis=1, group="heads")
    out = admmjax.Structured(target, axis=0, group="heads")
    if stacked:
        qkv, out = admmjax.Stacked(qkv), admmjax.Stacked(out)
    return admmjax.sparsity_by_path(
        params, {"query/*": qkv, "key/*": qkv, "value/*": qkv, "out/*": out, "mlp/*": 0.5}
    )


def kept_heads(z: dict, stacked: bool = False) -> dict[str, np.ndarray]:
    """Per member, a bool per head (per layer and head when stacked): any nonzero."""
    off = 1 if stacked else 0
    qkv_axes = tuple(a + off for a in (0, 2))
    out_axes = tuple(a + off for a in (1, 2))
    heads = {
        n: np.abs(np.asarray(z[n]["kernel"])).sum(qkv_axes) > 0 for n in ("query", "key", "value")
    }
    heads["out"] = np.abs(np.asarray(z["out"]["kernel"])).sum(out_axes) > 0
    return heads


def test_qkv_out_keep_identical_heads_eager_equals_jit():
    params = attention_params()
    targets = head_targets(params)
    eager = admmjax.project(params, targets)
    jitted = jax.jit(admmjax.project)(params, targets)
    for a, b in zip(jax.tree.leaves(eager), jax.tree.leaves(jitted), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    heads = kept_heads(eager)
    assert heads["query"].sum() == 2
    for name in ("key", "value", "out"):
        np.testing.assert_array_equal(heads[name], heads["query"])
    # Kept heads are copied unchanged; the ungrouped mlp leaf is on its usual path.
    mask = heads["query"]
    np.testing.assert_array_equal(
        np.asarray(eager["query"]["kernel"])[:, mask],
        np.asarray(params["query"]["kernel"])[:, mask],
    )
    np.testing.assert_array_equal(
        np.asarray(eager["mlp"]["kernel"]),
        np.asarray(admmjax.project(params["mlp"]["kernel"], 0.5)),
    )


def test_selection_is_by_summed_squared_norms_not_per_leaf():
    # Per leaf, query would keep heads {0, 1} and out heads {2, 3}; summed, {1, 2} win.
    q = np.zeros((1, 4, 1), np.float32)
    q[0, :, 0] = [3.0, 2.5, 2.0, 0.0]
    o = np.zeros((4, 1, 1), np.float32)
    o[:, 0, 0] = [0.0, 2.0, 2.5, 2.4]
    params = {"q": q, "o": o}
    targets = {
        "q": admmjax.Structured(admmjax.Keep(2), axis=1, group="g"),
        "o": admmjax.Structured(admmjax.Keep(2), axis=0, group="g"),
    }
    z = admmjax.project(params, targets)
    np.testing.assert_array_equal(np.asarray(z["q"]).ravel() != 0, [False, True, True, False])
    np.testing.assert_array_equal(np.asarray(z["o"]).ravel() != 0, [False, True, True, False])
    ungrouped = admmjax.Structured(admmjax.Keep(2), axis=1).project(q)[1]
    assert np.asarray(ungrouped).ravel().tolist() == [True, True, False, False]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_bruteforce_optimal_on_tiny_coupled_problem(seed):
    keys = jax.random.split(jax.random.key(seed), 3)
    params = {
        "a": np.asarray(jax.random.normal(keys[0], (3, 5))),  # slices on axis 1
        "b": np.asarray(jax.random.normal(keys[1], (5, 2, 2))),  # slices on axis 0
        "c": np.asarray(jax.random.normal(keys[2], (5,))) * 3,  # a BN-like vector
    }
    targets = {
        "a": admmjax.Structured(admmjax.Keep(2), axis=1, group="g"),
        "b": admmjax.Structured(admmjax.Keep(2), axis=0, group="g"),
        "c": admmjax.Structured(admmjax.Keep(2), axis=0, group="g"),
    }
    z = admmjax.project(params, targets)
    got = sum(np.sum((np.asarray(z[n], np.float64) - params[n]) ** 2) for n in params)

    def cost(kept):
        drop = [i for i in range(5) if i not in kept]
        return (
            np.sum(params["a"][:, drop] ** 2)
            + np.sum(params["b"][drop] ** 2)
            + np.sum(params["c"][drop] ** 2)
        )

    best = min(cost(c) for c in itertools.combinations(range(5), 2))
    assert got == pytest.approx(best, rel=1e-6)
    # The result is feasible: the same two slices in every member.
    kept = [set(np.flatnonzero(np.abs(np.asarray(z["a"])).sum(0)))]
    kept.append(set(np.flatnonzero(np.abs(np.asarray(z["b"])).sum((1, 2)))))
    kept.append(set(np.flatnonzero(np.asarray(z["c"]))))
    assert kept[0] == kept[1] == kept[2] and len(kept[0]) == 2


def test_inside_stacked_one_selection_per_layer():
    params = attention_params(stacked=True)
    # Layer scales that would make a pooled selection give all heads to one layer.
    params = jax.tree.map(
        lambda x: x * jnp.array([4.0, 1.0, 0.25]).reshape((L,) + (1,) * (x.ndim - 1)), params
    )
    targets = head_targets(params, admmjax.Keep(1), stacked=True)
    z = jax.jit(admmjax.project)(params, targets)
    heads = kept_heads(z, stacked=True)
    assert heads["query"].shape == (L, HEADS)
    assert np.all(heads["query"].sum(1) == 1)
    for name in ("key", "value", "out"):
        np.testing.assert_array_equal(heads[name], heads["query"])
    # Each layer equals the unstacked coupled projection of that layer.
    flat_targets = head_targets(attention_params(), admmjax.Keep(1))
    for layer in range(L):
        alone = admmjax.project(jax.tree.map(lambda x, i=layer: x[i], params), flat_targets)
        for name in ("query", "key", "value", "out"):
            np.testing.assert_array_equal(
                np.asarray(alone[name]["kernel"]), np.asarray(z[name]["kernel"])[layer]
            )


def test_admm_init_update_prune_penalty_counts_report():
    params = attention_params()
    targets = head_targets(params)
    counts = admmjax.target_counts(params, targets)
    assert counts["query"]["kernel"] == EMBED * 2 * HEAD_DIM
    state = admmjax.init(params, targets)
    state, _ = jax.jit(lambda s, p: admmjax.update(s, p, targets))(state, params)
    heads = kept_heads(state.z)
    for name in ("key", "value", "out"):
        np.testing.assert_array_equal(heads[name], heads["query"])
    pruned, masks = admmjax.prune(params, targets)
    report = admmjax.sparsity_report(pruned, targets)
    assert report.rows[0].kept_percent == 50.0
    rho = 1e-2
    pen = admmjax.penalty_value(params, state, rho)
    assert float(pen) > 0
    tx = optax.chain(admmjax.penalty(rho), optax.sgd(0.1))
    grads = jax.tree.map(jnp.zeros_like, params)
    updates, _ = tx.update(grads, tx.init(params), params, admm_state=state)
    expected = rho * (params["out"]["kernel"] - state.z["out"]["kernel"] + state.u["out"]["kernel"])
    np.testing.assert_allclose(
        np.asarray(updates["out"]["kernel"]), -0.1 * np.asarray(expected), rtol=1e-6
    )
    assert masks["out"]["kernel"].sum() == 2 * HEAD_DIM * EMBED


def test_admm_transform_under_jit_keeps_coupled_heads():
    params = attention_params(stacked=True)
    targets = head_targets(params, admmjax.Keep(2), stacked=True)
    tx = admmjax.admm(optax.adam(1e-2), targets, rho=1e-1, every=2)
    opt_state = tx.init(params)

    @jax.jit
    def step(params, opt_state):
        grads = jax.grad(lambda p: sum(jnp.sum(jnp.sin(x)) for x in jax.tree.leaves(p)))(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    for _ in range(4):
        params, opt_state = step(params, opt_state)
    z = admmjax.admm_state(opt_state).admm.z
    assert int(admmjax.admm_state(opt_state).admm.count) == 2
    heads = kept_heads(z, stacked=True)
    assert np.all(heads["query"].sum(1) == 2)
    for name in ("key", "value", "out"):
        np.testing.assert_array_equal(heads[name], heads["query"])


def test_ungrouped_structured_unchanged():
    x = jax.random.normal(jax.random.key(5), (6, 10))
    spec = admmjax.Structured(0.5, axis=-1)
    z, mask = spec.project(x)
    alone = admmjax.project({"w": x}, {"w": spec})["w"]
    np.testing.assert_array_equal(np.asarray(alone), np.asarray(z))
    norms = np.linalg.norm(np.asarray(x), axis=0)
    assert set(np.flatnonzero(np.asarray(mask)[0])) == set(np.argsort(-norms)[:5])


def test_mismatched_groups_name_the_paths():
    params = {"a": jnp.ones((4, 6)), "b": jnp.ones((5,)), "c": jnp.ones((6,))}
    with pytest.raises(ValueError, match=r"group 'g'.*'a': 6 slices.*'b': 5 slices"):
        admmjax.project(
            params,
            {
                "a": admmjax.Structured(0.5, axis=1, group="g"),
                "b": admmjax.Structured(0.5, axis=0, group="g"),
                "c": None,
            },
        )
    with pytest.raises(ValueError, match=r"group 'g'.*'a'.*Keep\(3\).*'c'.*0\.5"):
        admmjax.target_counts(
            params,
            {
                "a": admmjax.Structured(admmjax.Keep(3), axis=1, group="g"),
                "b": None,
                "c": admmjax.Structured(0.5, axis=0, group="g"),
            },
        )
    stacked = {"a": jnp.ones((2, 4, 6)), "b": jnp.ones((4, 6)), "c": jnp.ones(6)}
    with pytest.raises(ValueError, match=r"group 'g'.*stacked \(2,\)"):
        admmjax.init(
            stacked,
            {
                "a": admmjax.Stacked(admmjax.Structured(0.5, axis=1, group="g")),
                "b": admmjax.Structured(0.5, axis=1, group="g"),
                "c": None,
            },
        )
    with pytest.raises(TypeError, match="group must be a non-empty string"):
        admmjax.Structured(0.5, group="")


def test_shrink_removes_heads_and_keeps_the_function():
    params = attention_params(seed=3)
    targets = head_targets(params)
    pruned, _ = admmjax.prune(params, targets)
    small = admmjax.shrink(pruned, targets)
    assert small["query"]["kernel"].shape == (EMBED, 2, HEAD_DIM)
    assert small["out"]["kernel"].shape == (2, HEAD_DIM, EMBED)
    assert small["mlp"]["kernel"].shape == pruned["mlp"]["kernel"].shape
    x = jax.random.normal(jax.random.key(9), (5, EMBED))

    def attend(p):
        q, k, v = (jnp.einsum("te,ehd->thd", x, p[n]["kernel"]) for n in ("query", "key", "value"))
        w = jax.nn.softmax(jnp.einsum("thd,shd->hts", q, k), axis=-1)
        return jnp.einsum("hts,shd,hde->te", w, v, p["out"]["kernel"])

    np.testing.assert_allclose(
        np.asarray(attend(small)), np.asarray(attend(pruned)), rtol=1e-5, atol=1e-6
    )
    # Nothing nonzero was dropped; shrink on unpruned params keeps the same slices.
    for n in ("query", "key", "value", "out"):
        assert np.sum(np.abs(np.asarray(small[n]["kernel"]))) == pytest.approx(
            np.sum(np.abs(np.asarray(pruned[n]["kernel"])))
        )
    direct = admmjax.shrink(params, targets)
    for a, b in zip(jax.tree.leaves(direct), jax.tree.leaves(small), strict=True):
        if a.shape != pruned["mlp"]["kernel"].shape:
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_shrink_stacked_per_layer_and_extra_tree_and_jit():
    params = attention_params(seed=4, stacked=True)
    targets = head_targets(params, admmjax.Keep(3), stacked=True)
    pruned, _ = admmjax.prune(params, targets)
    stats = {"mean": jax.random.normal(jax.random.key(1), (L, HEADS)), "count": jnp.ones(L)}
    stats_targets = {
        "mean": admmjax.Stacked(admmjax.Structured(admmjax.Keep(3), axis=0, group="heads")),
        "count": None,
    }
    small, small_stats = admmjax.shrink(pruned, targets, extra=stats, extra_targets=stats_targets)
    assert small["query"]["kernel"].shape == (L, EMBED, 3, HEAD_DIM)
    assert small["out"]["kernel"].shape == (L, 3, HEAD_DIM, EMBED)
    heads = kept_heads(pruned, stacked=True)
    for layer in range(L):
        idx = np.flatnonzero(heads["query"][layer])
        np.testing.assert_array_equal(
            np.asarray(small["out"]["kernel"][layer]),
            np.asarray(pruned["out"]["kernel"][layer])[idx],
        )
        np.testing.assert_array_equal(
            np.asarray(small_stats["mean"][layer]), np.asarray(stats["mean"][layer])[idx]
        )
    np.testing.assert_array_equal(np.asarray(small_stats["count"]), np.ones(L))
    jitted = jax.jit(lambda p: admmjax.shrink(p, targets))(pruned)
    for a, b in zip(jax.tree.leaves(jitted), jax.tree.leaves(small), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_shrink_errors():
    params = attention_params()
    targets = head_targets(params)
    with pytest.raises(ValueError, match=r"'mean'.*group 'nope'"):
        admmjax.shrink(
            params, targets, extra={"mean": jnp.ones(HEADS)},
            extra_targets={"mean": admmjax.Structured(admmjax.Keep(2), axis=0, group="nope")},
        )  # fmt: skip
    with pytest.raises(ValueError, match=r"'mean' does not fit group 'heads'"):
        admmjax.shrink(
            params, targets, extra={"mean": jnp.ones(HEADS + 1)},
            extra_targets={"mean": admmjax.Structured(admmjax.Keep(2), axis=0, group="heads")},
        )  # fmt: skip
    with pytest.raises(ValueError, match=r"'mean' is 0.5"):
        admmjax.shrink(
            params, targets, extra={"mean": jnp.ones(HEADS)}, extra_targets={"mean": 0.5}
        )
    with pytest.raises(ValueError, match=r"'w'.*several axes"):
        admmjax.shrink({"w": jnp.ones((2, 2, 3))}, {"w": admmjax.Structured(0.5, axis=(0, 1))})


def test_readme_coupled_example_runs():
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("### Coupled groups and `shrink`", 1)[1]
    code = section.split("```python", 1)[1].split("```", 1)[0]
    namespace: dict = {}
    exec(compile(code, "README coupled example", "exec"), namespace)
    masks = namespace["masks"]
    q = np.asarray(masks["q"]["kernel"]).any(axis=(0, 2))
    np.testing.assert_array_equal(np.asarray(masks["out"]["kernel"]).any(axis=(1, 2)), q)
    assert q.sum() == 2

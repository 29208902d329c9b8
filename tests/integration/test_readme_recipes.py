"""The README's "Prune your own model" recipes run as printed and do what they say."""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

import admmjax

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()
SECTION = README.split("## Prune your own model", 1)[1].split("\n## ", 1)[0]


def _run(title: str) -> dict:
    block = SECTION.split(f"### {title}", 1)[1].split("```python", 1)[1].split("```", 1)[0]
    namespace: dict = {}
    exec(compile(block, f"README {title}", "exec"), namespace)
    return namespace


def test_recipe_1_linen_trainstate(capsys):
    ns = _run("Recipe 1")
    params = ns["state"].params
    for name, n in (("Dense_0", 128 * 10), ("Dense_1", 784 * 128)):  # Dense(10) is built first
        assert int(jnp.count_nonzero(params[name]["kernel"])) == n - int(0.9 * n)
        assert int(jnp.count_nonzero(params[name]["bias"])) > 0  # biases stay dense
    assert "| Dense_1/kernel | 784x128 | 100,352 | 10,036 |" in capsys.readouterr().out


def _kept(x: np.ndarray, axis: int) -> np.ndarray:
    """``(layers, slices)`` bools: which slices along ``axis`` (of one layer) are nonzero."""
    x = np.moveaxis(np.abs(x), axis + 1, 1)
    return x.reshape(x.shape[0], x.shape[1], -1).sum(-1) > 0


def test_recipe_2_heads_coupled_per_layer_and_removed(capsys):
    ns = _run("Recipe 2")
    assert int(admmjax.admm_state(ns["optimizer"].opt_state).admm.count) == 4  # 40 steps / 10
    attn = jax.tree.map(np.asarray, ns["pruned"]["blocks"]["attention"])
    heads = _kept(attn["query"]["kernel"][...], 1)  # (layers, heads)
    assert heads.shape == (4, 4) and heads.sum(1).tolist() == [2] * 4
    for name in ("query", "key", "value"):  # one selection per layer across every member
        np.testing.assert_array_equal(_kept(attn[name]["kernel"][...], 1), heads)
        np.testing.assert_array_equal(_kept(attn[name]["bias"][...], 0), heads)
    np.testing.assert_array_equal(_kept(attn["out"]["kernel"][...], 0), heads)
    assert attn["out"]["bias"][...].all()  # not a member: dense

    small = jax.tree.map(np.asarray, nnx.state(ns["small"], nnx.Param))["blocks"]["attention"]
    for layer in range(4):  # shrink keeps exactly each layer's own heads, values unchanged
        kept = np.flatnonzero(heads[layer])
        np.testing.assert_array_equal(
            small["query"]["kernel"][...][layer], attn["query"]["kernel"][...][layer][:, kept]
        )
        np.testing.assert_array_equal(
            small["out"]["kernel"][...][layer], attn["out"]["kernel"][...][layer][kept]
        )
    assert small["value"]["bias"][...].shape == (4, 2, 8)
    logits = np.asarray(ns["logits"])  # the pruned full-size model's
    assert logits.shape == (16, 16, 64) and float(np.std(logits)) > 0.1
    np.testing.assert_allclose(np.asarray(ns["small_logits"]), logits, rtol=1e-4, atol=1e-5)

    up = np.asarray(ns["pruned"]["blocks"]["up"]["kernel"][...])  # (layers, embed, mlp)
    groups = (up.reshape(up.shape[0], -1, 4, up.shape[-1]) != 0).sum(axis=2)
    assert int(groups.min()) == int(groups.max()) == 2
    printed = capsys.readouterr().out
    assert "max |small - pruned|:" in printed
    assert "| blocks/attention/query/kernel[3] | 32x4x8 | 1,024 | 512 | 50.00% | 2.0x |" in printed


def _bn_inputs(ns: dict, params: dict) -> dict[str, np.ndarray]:
    """Each BatchNorm's train-mode inputs over all batches (the outputs of conv1, conv2)."""
    variables = {"params": params, "batch_stats": ns["state"].batch_stats}
    forward = jax.jit(
        lambda x: ns["model"].apply(
            variables, x, train=True, mutable=["batch_stats", "intermediates"],
            capture_intermediates=lambda mdl, _: mdl.name in ("conv1", "conv2"),
        )[1]
    )  # fmt: skip
    outs: dict[str, list] = {"bn1": [], "bn2": []}
    for x in ns["xs"]:
        state = forward(x)
        for bn, conv in (("bn1", "conv1"), ("bn2", "conv2")):
            (act,) = state["intermediates"][conv]["__call__"]
            outs[bn].append(np.asarray(act).reshape(-1, act.shape[-1]))
    return {bn: np.concatenate(a) for bn, a in outs.items()}


def test_recipe_3_filters_coupled_stats_reestimated_and_shrunk(capsys):
    ns = _run("Recipe 3")
    assert int(admmjax.admm_state(ns["state"].opt_state).admm.count) == 4
    pruned = jax.tree.map(np.asarray, ns["pruned"])
    filters = np.abs(pruned["conv1"]["kernel"]).sum((0, 1, 2)) > 0  # HWIO
    assert filters.shape == (16,) and int(filters.sum()) == 4
    # Pruned filters have zero BN scale and bias (the channel outputs relu(0) = 0) and
    # zero input channels in the next conv; kept ones are untouched and nonzero.
    np.testing.assert_array_equal(pruned["bn1"]["scale"] != 0, filters)
    np.testing.assert_array_equal(pruned["bn1"]["bias"] != 0, filters)
    np.testing.assert_array_equal(np.abs(pruned["conv2"]["kernel"]).sum((0, 1, 3)) > 0, filters)
    trained = jax.tree.map(np.asarray, ns["state"].params)
    np.testing.assert_array_equal(pruned["bn2"]["bias"], trained["bn2"]["bias"])

    # The statistics are the population mean and (biased) variance of each BN's inputs.
    stats = jax.tree.map(np.asarray, ns["stats"])
    for bn, acts in _bn_inputs(ns, ns["pruned"]).items():
        np.testing.assert_allclose(stats[bn]["mean"], acts.mean(0), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(stats[bn]["var"], acts.var(0), rtol=1e-4, atol=1e-5)
    assert np.all(stats["bn1"]["mean"][~filters] == 0)
    stale = np.asarray(ns["state"].batch_stats["bn2"]["var"])
    assert not np.allclose(stats["bn2"]["var"], stale, rtol=1e-2)

    # shrink: the 4 kept channels in every member and in the statistics; same outputs.
    small, small_stats = ns["small"], ns["small_stats"]
    kept = np.flatnonzero(filters)
    np.testing.assert_array_equal(small["conv1"]["kernel"], pruned["conv1"]["kernel"][..., kept])
    np.testing.assert_array_equal(small["bn1"]["bias"], pruned["bn1"]["bias"][kept])
    np.testing.assert_array_equal(small["conv2"]["kernel"], pruned["conv2"]["kernel"][:, :, kept])
    np.testing.assert_array_equal(small_stats["bn1"]["var"], stats["bn1"]["var"][kept])
    np.testing.assert_array_equal(small_stats["bn2"]["var"], stats["bn2"]["var"])
    logits = np.asarray(ns["logits"])
    assert logits.shape == (32, 10) and float(np.std(logits)) > 0.1
    np.testing.assert_allclose(np.asarray(ns["small_logits"]), logits, rtol=1e-4, atol=1e-5)
    assert "max |small - pruned|:" in capsys.readouterr().out

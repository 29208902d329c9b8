"""The README's "Prune your own model" recipes run as printed and do what they say."""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

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


def test_recipe_2_nnx_scanned_transformer(capsys):
    ns = _run("Recipe 2")
    assert int(admmjax.admm_state(ns["optimizer"].opt_state).admm.count) == 4
    blocks = ns["pruned"]["blocks"]
    q = blocks["attention"]["query"]["kernel"][...]
    per_layer = jnp.count_nonzero(q.reshape(q.shape[0], -1), axis=1)
    assert [int(v) for v in per_layer] == [q[0].size // 2] * q.shape[0]
    up = blocks["up"]["kernel"][...]  # (layers, embed, mlp): 2 of every 4 along embed
    groups = (up.reshape(up.shape[0], -1, 4, up.shape[-1]) != 0).sum(axis=2)
    assert int(groups.min()) == int(groups.max()) == 2
    assert "blocks/attention/query/kernel[0]" in capsys.readouterr().out


def test_recipe_3_batch_stats_are_the_population_statistics():
    ns = _run("Recipe 3")
    pruned, batches = ns["pruned"], ns["batches"]
    # The BN input is the first conv's output: recompute it with the pruned kernel.
    kernel = pruned["Conv_0"]["kernel"]
    acts = jnp.concatenate([
        jax.lax.conv_general_dilated(x, kernel, (1, 1), "SAME",
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
        for x in batches
    ]).reshape(-1, kernel.shape[-1])  # fmt: skip
    stats = ns["stats"]["BatchNorm_0"]
    np.testing.assert_allclose(stats["mean"], acts.mean(0), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(stats["var"], acts.var(0), rtol=1e-4, atol=1e-5)
    assert ns["logits"].shape == (32, 10)

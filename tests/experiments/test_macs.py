"""MAC accounting: exact dense counts of the three models, pruned counts against a brute
force over the masks, attribution through jit / scan / custom_jvp, and the CLI."""

from __future__ import annotations

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import admmjax
from experiments import macs as macs_cli
from experiments import models
from experiments.analysis import macs

ALEXNET_MACS = {
    "conv1/kernel": 55 * 55 * 96 * 11 * 11 * 3,
    "conv2/kernel": 27 * 27 * 256 * 5 * 5 * 48,
    "conv3/kernel": 13 * 13 * 384 * 3 * 3 * 256,
    "conv4/kernel": 13 * 13 * 384 * 3 * 3 * 192,
    "conv5/kernel": 13 * 13 * 256 * 3 * 3 * 192,
    "fc6/kernel": 9216 * 4096,
    "fc7/kernel": 4096 * 4096,
    "fc8/kernel": 4096 * 1000,
}


def _abstract(name: str):
    return models.abstract_functional(name)[1]


def _apply(name: str):
    return models.abstract_functional(name)[2]


@pytest.mark.parametrize(
    ("name", "shape", "want"),
    [
        ("lenet300_100", (28, 28, 1), {"fc1/kernel": 235_200, "fc2/kernel": 30_000,
                                       "fc3/kernel": 1_000}),
        ("lenet5", (28, 28, 1), {"conv1/kernel": 24 * 24 * 20 * 25,
                                 "conv2/kernel": 8 * 8 * 50 * 500,
                                 "fc1/kernel": 400_000, "fc2/kernel": 5_000}),
        ("alexnet", (227, 227, 3), ALEXNET_MACS),
    ],
)  # fmt: skip
def test_dense_macs_per_layer_are_exact(name, shape, want):
    per_leaf, unattributed = macs.count_macs(_apply(name), _abstract(name), shape)
    assert per_leaf == want
    assert unattributed == 0
    report = macs.mac_report(_apply(name), _abstract(name), shape)
    assert report.macs == sum(want.values()) == report.pruned_macs  # abstract: dense
    if name == "alexnet":
        assert report.macs == 724_406_816


def _brute_force_conv_macs(kernel: np.ndarray, out_positions: int) -> int:
    """Every nonzero kernel entry multiplies once per output position."""
    return int(np.count_nonzero(kernel)) * out_positions


def test_pruned_macs_follow_the_kept_weights_of_lenet5():
    apply_fn = _apply("lenet5")
    rng = np.random.default_rng(0)
    # NumPy-filled params of LeNet-5's shapes (eager JAX init is slow on a loaded CPU).
    params = jax.tree.map(
        lambda a: jnp.asarray(rng.normal(size=a.shape), a.dtype), _abstract("lenet5")
    )
    keep = {"conv1/kernel": 250, "conv2/kernel": 2500, "fc1/kernel": 4000, "fc2/kernel": 500}

    def prune(path, leaf):  # keep a random subset of exactly keep[path] entries
        if path not in keep:
            return leaf
        flat = np.asarray(leaf).ravel().copy()
        flat[rng.permutation(flat.size)[keep[path] :]] = 0.0
        return jnp.asarray(flat.reshape(leaf.shape))

    paths = admmjax.leaf_paths(params)
    leaves = [prune(p, v) for p, v in zip(paths, jax.tree.leaves(params), strict=True)]
    pruned = jax.tree.unflatten(jax.tree.structure(params), leaves)
    report = macs.mac_report(apply_fn, pruned, (28, 28, 1))
    rows = {r.path: r for r in report.rows}
    flat = dict(zip(admmjax.leaf_paths(pruned), jax.tree.leaves(pruned), strict=True))
    positions = {"conv1/kernel": 24 * 24, "conv2/kernel": 8 * 8, "fc1/kernel": 1, "fc2/kernel": 1}
    for path, n in positions.items():
        assert rows[path].pruned_macs == _brute_force_conv_macs(np.asarray(flat[path]), n)
    assert [rows[p].kept for p in positions] == [250, 2500, 4000, 500]
    assert report.pruned_macs == 24 * 24 * 250 + 64 * 2500 + 4000 + 500
    table = report.to_markdown()
    assert "| conv1/kernel | 500 | 250 | 50.00% | 288,000 | 144,000 | 2.0x |" in table
    assert table.splitlines()[-1].startswith("| **total** | 430,500 | 7,250 |")
    again = macs.MacReport.from_dict(json.loads(json.dumps(report.to_dict())))
    assert again == report


def test_attribution_through_jit_scan_and_custom_jvp_and_unattributed_products():
    params = {"w": jnp.ones((8, 16)), "v": jnp.ones((16, 4))}

    @jax.jit
    def inner(p, h):
        return jax.nn.relu(h @ p["w"].astype(jnp.float32).T.T)  # layout ops pass through

    def apply_fn(p, x):
        h = inner(p, x)

        def body(carry, _):
            return carry @ p["v"] @ p["v"].T, None

        h, _ = jax.lax.scan(body, h, None, length=3)
        return jnp.einsum("bi,bj->bij", h, h)  # activation x activation: unattributed

    per_leaf, unattributed = macs.count_macs(apply_fn, params, (8,))
    assert per_leaf == {"w": 8 * 16, "v": 3 * (16 * 4 + 4 * 16)}
    assert unattributed == 16 * 16
    report = macs.mac_report(apply_fn, params, (8,))
    assert report.macs == 8 * 16 + 3 * 128 + 256
    assert "(unattributed)" in report.to_markdown()


def test_planned_budgets_and_the_config_cli(capsys):
    out = macs_cli.main(["--config", "experiments/configs/paper/alexnet.py:computation", "--json"])
    printed = json.loads(capsys.readouterr().out)
    assert printed["macs"] == out["macs"] == 724_406_816
    rows = {r["path"]: r for r in out["layers"]}
    conv = [rows[f"conv{i}/kernel"] for i in range(1, 6)]
    conv_weights, conv_kept = sum(r["weights"] for r in conv), sum(r["kept"] for r in conv)
    assert conv_weights == 2_332_704
    assert round(conv_weights / conv_kept, 1) == 13.4  # the paper's Table 4
    assert rows["conv1/kernel"]["kept"] == 28_227  # conv1 keeps 81%
    weights = macs_cli.main(["--config", "experiments/configs/paper/alexnet.py:weights", "--json"])
    kept = [r["kept"] for r in weights["layers"]]
    assert kept == [28_227, 61_440, 168_100, 132_711, 88_474, 1_056_965, 989_856, 380_928]
    assert round(weights["weights"] / weights["kept"]) == 21  # the paper's Table 3
    assert math.isclose(weights["mac_reduction"], 724_406_816 / 198_393_349)


def test_cli_needs_exactly_one_source(capsys):
    with pytest.raises(SystemExit) as exc:
        macs_cli.main([])
    assert exc.value.code == 2
    assert "WORKDIR or --config" in capsys.readouterr().err

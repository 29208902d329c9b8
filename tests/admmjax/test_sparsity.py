"""Sparsity targets: construction, validation and exact counts."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import admmjax
from admmjax import Keep
from admmjax._sparsity import keep_count, path_str


def linen_params():
    return {
        "params": {
            "Dense_0": {"kernel": jnp.ones((784, 300)), "bias": jnp.zeros(300)},
            "Dense_1": {"kernel": jnp.ones((300, 10)), "bias": jnp.zeros(10)},
            "Conv_0": {"kernel": jnp.ones((5, 5, 1, 20)), "bias": jnp.zeros(20)},
        }
    }


def counts_by_path(params, targets):
    counts = admmjax.target_counts(params, targets)
    leaves = jax.tree_util.tree_flatten_with_path(counts, is_leaf=lambda x: x is None)[0]
    return {path_str(p): c for p, c in leaves}


# --- uniform_sparsity ----------------------------------------------------------------


def test_uniform_default_targets_kernels_only():
    p = linen_params()
    t = admmjax.uniform_sparsity(p, 0.9)
    assert t["params"]["Dense_0"]["kernel"] == 0.9
    assert t["params"]["Conv_0"]["kernel"] == 0.9
    assert t["params"]["Dense_0"]["bias"] is None
    assert t["params"]["Conv_0"]["bias"] is None


def test_uniform_include_callable_and_globs():
    p = linen_params()
    t = admmjax.uniform_sparsity(p, 0.5, include=lambda path, leaf: path.endswith("bias"))
    assert t["params"]["Dense_0"]["bias"] == 0.5 and t["params"]["Dense_0"]["kernel"] is None
    t = admmjax.uniform_sparsity(p, 0.5, include="params/Dense_*/kernel")
    assert t["params"]["Dense_1"]["kernel"] == 0.5 and t["params"]["Conv_0"]["kernel"] is None
    t = admmjax.uniform_sparsity(p, 0.5, include=["*Conv*", "*Dense_1/bias"])
    assert t["params"]["Conv_0"]["kernel"] == 0.5 and t["params"]["Conv_0"]["bias"] == 0.5
    assert t["params"]["Dense_1"]["bias"] == 0.5 and t["params"]["Dense_1"]["kernel"] is None


def test_uniform_keep_and_validation():
    p = {"w": {"kernel": jnp.ones((4, 5))}, "v": {"kernel": jnp.ones((2, 2))}}
    t = admmjax.uniform_sparsity(p, Keep(3))
    assert admmjax.target_counts(p, t) == {"w": {"kernel": 3}, "v": {"kernel": 3}}
    with pytest.raises(ValueError, match=r"'v/kernel'.*Keep\(6\).*4 entries"):
        admmjax.uniform_sparsity(p, Keep(6))
    with pytest.raises(ValueError, match=r"'v/kernel'.*1\.0"):
        admmjax.uniform_sparsity(p, 1.0)


# --- sparsity_by_path --------------------------------------------------------------------


def test_by_path_first_match_wins_and_default():
    p = linen_params()
    t = admmjax.sparsity_by_path(
        p,
        {"*/Dense_0/kernel": 0.96, "*/Dense_*/kernel": 0.93, "*Conv_0/kernel": Keep(100)},
        default=None,
    )
    assert t["params"]["Dense_0"]["kernel"] == 0.96  # first match, not the later glob
    assert t["params"]["Dense_1"]["kernel"] == 0.93
    assert t["params"]["Conv_0"]["kernel"] == Keep(100)
    assert t["params"]["Dense_0"]["bias"] is None
    # Reversing the order changes the winner.
    t = admmjax.sparsity_by_path(p, {"*/Dense_*/kernel": 0.93, "*/Dense_0/kernel": 0.96})
    assert t["params"]["Dense_0"]["kernel"] == 0.93
    t = admmjax.sparsity_by_path(p, {"*Conv_0/kernel": 0.5}, default=0.25)
    assert t["params"]["Conv_0"]["kernel"] == 0.5
    assert t["params"]["Dense_0"]["bias"] == 0.25


def test_by_path_unmatched_pattern_is_named():
    with pytest.raises(ValueError, match=r"fc9/\*.*match no parameter path.*Dense_0/kernel"):
        admmjax.sparsity_by_path(linen_params(), {"*Dense_0/kernel": 0.5, "fc9/*": 0.9})


def test_by_path_validates_values():
    with pytest.raises(ValueError, match=r"params/Dense_1/kernel.*1\.5"):
        admmjax.sparsity_by_path(linen_params(), {"*Dense_1/kernel": 1.5})


# --- Keep ------------------------------------------------------------------------------


def test_keep_exact_counts_and_errors():
    p = {"a": jnp.ones((3, 4)), "b": jnp.ones(5)}
    assert admmjax.target_counts(p, {"a": Keep(7), "b": Keep(0)}) == {"a": 7, "b": 0}
    assert admmjax.target_counts(p, {"a": Keep(12), "b": None}) == {"a": 12, "b": None}
    assert admmjax.target_counts(p, {"a": Keep(np.int64(2)), "b": Keep(jnp.int32(5))}) == {
        "a": 2,
        "b": 5,
    }
    with pytest.raises(ValueError, match=r"'a'.*Keep\(13\) exceeds.*12 entries"):
        admmjax.target_counts(p, {"a": Keep(13), "b": None})
    with pytest.raises(ValueError, match="n >= 0"):
        Keep(-1)
    for bad in (2.0, 2.5, True, "3", None, jnp.float32(2.0)):
        with pytest.raises(TypeError, match="integer count"):
            Keep(bad)
    assert Keep(3) == Keep(3) and Keep(3) != Keep(4) and hash(Keep(3)) == hash(Keep(3))
    assert repr(Keep(3)) == "Keep(3)"


def test_keep_is_a_pytree_and_traces():
    leaves, treedef = jax.tree.flatten({"a": Keep(3), "b": None})
    assert leaves == [3]
    assert jax.tree.unflatten(treedef, [5]) == {"a": Keep(5), "b": None}

    @jax.jit
    def counts(t):
        return admmjax.target_counts({"a": jnp.ones((2, 3)), "b": jnp.ones(2)}, t)["a"]

    assert int(counts({"a": Keep(4), "b": None})) == 4
    assert int(counts({"a": 0.5, "b": None})) == 3


# --- validation of sparsity values ------------------------------------------------------


@pytest.mark.parametrize(
    "bad, err, text",
    [
        (1.0, ValueError, "1.0"),
        (-0.1, ValueError, "-0.1"),
        (float("nan"), ValueError, "nan"),
        (float("inf"), ValueError, "inf"),
        (-float("inf"), ValueError, "-inf"),
        (True, TypeError, "True"),
        (np.bool_(False), TypeError, "False"),
        ("0.5", TypeError, "'0.5'"),
        ({"x": 0.5}, ValueError, "kernel"),
    ],
)
def test_bad_targets_name_path_and_value(bad, err, text):
    p = {"layer": {"kernel": jnp.ones((3, 3)), "bias": jnp.ones(3)}}
    with pytest.raises(err) as info:
        admmjax.target_counts(p, {"layer": {"kernel": bad, "bias": None}})
    msg = str(info.value)
    assert "layer/kernel" in msg and text in msg


def test_numpy_and_jax_scalars_are_accepted():
    p = {"w": jnp.ones((10, 10))}
    assert admmjax.target_counts(p, {"w": np.float32(0.25)}) == {"w": 75}
    assert admmjax.target_counts(p, {"w": jnp.asarray(0.5)}) == {"w": 50}
    assert admmjax.target_counts(p, {"w": 0}) == {"w": 100}


def test_structure_mismatch_names_paths():
    p = {"a": {"kernel": jnp.ones((2, 2))}, "b": jnp.ones(2)}
    with pytest.raises(ValueError, match=r"missing paths \['b'\].*unexpected paths \['c'\]"):
        admmjax.target_counts(p, {"a": {"kernel": 0.5}, "c": None})
    with pytest.raises(ValueError, match="structure of the params"):
        admmjax.project(p, {"a": 0.5, "b": None})


# --- exact counts -------------------------------------------------------------------------


@given(st.integers(1, 10**7), st.floats(0.0, 1.0, exclude_max=True))
def test_keep_count_is_n_minus_floor(n, s):
    assert keep_count(s, n) == n - math.floor(s * n)
    assert 1 <= keep_count(s, n) <= n  # s < 1 always keeps at least one entry


def test_target_counts_values():
    p = {"a": jnp.ones((784, 300)), "b": jnp.ones((300, 100)), "c": jnp.ones(7), "d": jnp.ones(3)}
    t = {"a": 0.96, "b": 0.93, "c": 0.5, "d": None}
    assert admmjax.target_counts(p, t) == {
        "a": 235200 - math.floor(0.96 * 235200),
        "b": 30000 - math.floor(0.93 * 30000),
        "c": 4,  # 7 - floor(3.5)
        "d": None,
    }
    assert admmjax.target_counts(p, t)["a"] == 9408


# --- Linen-style dicts and NNX State -------------------------------------------------------------


def test_linen_nested_dict_paths_and_counts():
    p = linen_params()
    assert admmjax.leaf_paths(p) == [
        "params/Conv_0/bias",
        "params/Conv_0/kernel",
        "params/Dense_0/bias",
        "params/Dense_0/kernel",
        "params/Dense_1/bias",
        "params/Dense_1/kernel",
    ]
    t = admmjax.sparsity_by_path(p, {"params/Dense_0/kernel": 0.5, "*/kernel": Keep(10)})
    assert counts_by_path(p, t) == {
        "params/Conv_0/bias": None,
        "params/Conv_0/kernel": 10,
        "params/Dense_0/bias": None,
        "params/Dense_0/kernel": 117600,
        "params/Dense_1/bias": None,
        "params/Dense_1/kernel": 10,
    }

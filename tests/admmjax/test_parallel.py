"""admmjax.parallel: mesh, shardings, the sharded exact projection, data-parallel ADMM.

conftest.py gives this process 4 CPU devices. Every distinct leaf shape costs an XLA
compilation of the radix select (about 1.5 s on 2 cores), so the shapes come from a
small fixed menu while values and ``k`` vary.

Tolerances of the data-parallel comparisons: the same global batch gives the same
math on 1 or 4 devices (or 2 processes), but the batch-mean loss and the weight
gradients are summed in a different order (per-device partial sums, then an
all-reduce), so they differ in the last float32 bits; Adam's normalisation and a
dozen steps carry that to ~1e-6 relative in the weights. Losses are compared with
``rtol=1e-5``, weights with ``rtol=1e-5, atol=1e-6``; the masks (hard prune, ``Z``'s
support) must be identical.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import _multiprocess_worker as worker
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _bruteforce import ref_mask
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

import admmjax
from admmjax import parallel

REPO = Path(__file__).resolve().parents[2]
NUM_DEVICES = 4


@pytest.fixture(scope="module")
def mesh():
    return parallel.data_mesh()


def spec_of(x) -> P:
    return x.sharding.spec


# ------------------------------------------------------------------ mesh, shardings


def test_data_mesh_uses_all_local_devices_with_auto_axis(mesh):
    assert jax.device_count() == NUM_DEVICES, "conftest should force 4 CPU devices"
    assert mesh.axis_names == ("data",)
    assert mesh.shape["data"] == NUM_DEVICES
    assert mesh.axis_types == (AxisType.Auto,)
    assert list(mesh.devices.flat) == jax.local_devices()


def test_data_mesh_takes_the_first_n_devices_and_an_axis_name():
    m = parallel.data_mesh(2, axis="batch")
    assert m.axis_names == ("batch",)
    assert list(m.devices.flat) == jax.local_devices()[:2]
    assert parallel.data_mesh(1).devices.size == 1


@pytest.mark.parametrize("n", [0, -1])
def test_data_mesh_rejects_fewer_than_one_device(n):
    with pytest.raises(ValueError, match=">= 1"):
        parallel.data_mesh(n)


def test_data_mesh_rejects_more_devices_than_available():
    with pytest.raises(ValueError, match=r"5 devices per process.*has 4 cpu.*jax_num_cpu_devices"):
        parallel.data_mesh(5)
    with pytest.raises(TypeError):
        parallel.data_mesh(True)


def test_shardings(mesh):
    assert parallel.replicated(mesh) == NamedSharding(mesh, P())
    assert parallel.batch_sharding(mesh) == NamedSharding(mesh, P("data"))
    with pytest.raises(ValueError, match="not 'model'"):
        parallel.batch_sharding(mesh, axis="model")


def test_replicate_puts_a_full_copy_everywhere_and_keeps_none(mesh):
    tree = {"w": np.arange(6.0, dtype=np.float32).reshape(2, 3), "z": None, "n": np.int32(3)}
    out = parallel.replicate(tree, mesh)
    assert out["z"] is None
    assert out["w"].sharding.is_fully_replicated and len(out["w"].sharding.device_set) == 4
    for shard in out["w"].addressable_shards:
        np.testing.assert_array_equal(np.asarray(shard.data), tree["w"])
    assert int(out["n"]) == 3


def test_shard_batch_splits_axis_zero(mesh):
    x = np.arange(8 * 3, dtype=np.float32).reshape(8, 3)
    y = np.arange(8, dtype=np.int32)
    gx, gy = parallel.shard_batch((x, y), mesh)
    assert gx.shape == (8, 3) and gy.shape == (8,)
    assert gx.dtype == np.float32 and gy.dtype == np.int32
    assert gx.sharding == NamedSharding(mesh, P("data"))
    assert {s.data.shape for s in gx.addressable_shards} == {(2, 3)}
    for s in gy.addressable_shards:  # device i holds rows [2i, 2i + 2)
        np.testing.assert_array_equal(np.asarray(s.data), y[s.index])
    np.testing.assert_array_equal(np.asarray(gx), x)


def test_shard_batch_errors_name_batch_size_and_devices(mesh):
    with pytest.raises(ValueError, match=r"batch size 6 .*4 device\(s\) of the 4-device mesh"):
        parallel.shard_batch({"x": np.zeros((6, 2))}, mesh)
    with pytest.raises(ValueError, match="scalar"):
        parallel.shard_batch({"x": np.zeros((4, 2)), "step": np.int32(0)}, mesh)


def test_shard_leaves_splits_large_leaves_on_first_divisible_axis(mesh):
    tree = {
        "fc": np.ones((8, 3), np.float32),  # dim 0
        "conv": np.ones((5, 5, 2, 4), np.float32),  # dim 3
        "odd": np.ones((3, 5), np.float32),  # no dim divisible by 4: replicated
        "bias": np.ones(4, np.float32),
        "dense": None,
    }
    out = parallel.shard_leaves(tree, mesh, min_size=10)
    assert spec_of(out["fc"]) == P("data")
    assert spec_of(out["conv"]) == P(None, None, None, "data")
    assert out["odd"].sharding.is_fully_replicated
    assert out["bias"].sharding.is_fully_replicated  # below min_size
    assert out["dense"] is None
    for k in ("fc", "conv", "odd", "bias"):
        np.testing.assert_array_equal(np.asarray(out[k]), tree[k])
    # Same rule for anything shaped like the params (Z, U, Adam moments).
    shardings = parallel.leaf_shardings(tree, mesh, min_size=10)
    assert shardings["fc"] == out["fc"].sharding
    # Default min_size (2**20 entries): everything small stays replicated.
    assert parallel.shard_leaves(tree, mesh)["fc"].sharding.is_fully_replicated


# --------------------------------------------------------- sharded exact projection

SHARD_SHAPES = [
    (16,),  # 4 entries per shard
    (4, 6),  # split on dim 0, one row per shard
    (3, 8),  # split on dim 1: rows interleave shards in flat order
    (2, 3, 4),  # split on dim 2: 6 rows of one entry per shard
    (5, 3),  # nothing divisible by 4: flattened, zero-padded to 16
]
TIE_VALUES = [0.0, -0.0, 1.0, -1.0, 2.0, -2.0]


@st.composite
def shard_case(draw):
    shape = draw(st.sampled_from(SHARD_SHAPES))
    if draw(st.booleans()):  # heavy ties: equal magnitudes straddle shard boundaries
        elements = st.sampled_from(TIE_VALUES)
    else:
        elements = st.floats(width=32, allow_nan=False, allow_infinity=False)
    x = draw(hnp.arrays(np.float32, shape, elements=elements))
    k = draw(st.integers(0, x.size))
    return x, k


@given(shard_case())
def test_keep_mask_sharded_equals_bruteforce(mesh, case):
    x, k = case
    leaf = parallel.shard_leaves(x, mesh, min_size=0)
    got = parallel.keep_mask_sharded(leaf, k, mesh)
    np.testing.assert_array_equal(np.asarray(got), ref_mask(x, k))
    assert int(got.sum()) == k


@pytest.mark.parametrize("shape", [(8, 6), (3, 8), (5, 3)])
def test_keep_mask_sharded_equals_keep_mask_on_ties_and_random(mesh, shape):
    rng = np.random.default_rng(sum(shape))
    n = int(np.prod(shape))
    arrays = {
        # values from a small set: every threshold is a tie spread over all shards
        "ties": rng.choice(np.float32([0.0, 1.0, -1.0, 2.0, -2.0, 3.0]), shape),
        "random": rng.standard_normal(shape).astype(np.float32),
        "zeros": np.zeros(shape, np.float32),
    }
    leaf_ties = parallel.shard_leaves(arrays["ties"], mesh, min_size=0)
    ks = sorted({0, 1, n // 4, n // 3, n // 2, n // 2 + 1, n - 1, n})
    for name, x in arrays.items():
        leaf = parallel.shard_leaves(x, mesh, min_size=0)
        for k in ks:
            want = np.asarray(admmjax.keep_mask(jnp.asarray(x), k))
            got = parallel.keep_mask_sharded(leaf, k, mesh)
            np.testing.assert_array_equal(np.asarray(got), want, err_msg=f"{name} k={k}")
            assert got.shape == shape and int(got.sum()) == k
    # The mask stays split like the leaf (nothing gathered).
    got = parallel.keep_mask_sharded(leaf_ties, n // 2, mesh)
    if shape[0] % NUM_DEVICES == 0 or shape[1] % NUM_DEVICES == 0:
        assert got.sharding == leaf_ties.sharding


def test_keep_mask_sharded_any_placement_jit_and_traced_k(mesh):
    x = np.random.default_rng(3).choice(np.float32([0.5, -0.5, 1.0]), (4, 8))
    want = ref_mask(x, 20)
    for placed in (x, parallel.replicate(x, mesh), parallel.shard_leaves(x, mesh, 0)):
        np.testing.assert_array_equal(
            np.asarray(parallel.keep_mask_sharded(placed, 20, mesh)), want
        )
    jitted = jax.jit(lambda v, k: parallel.keep_mask_sharded(v, k, mesh))
    np.testing.assert_array_equal(np.asarray(jitted(x, jnp.int32(20))), want)
    # An explicit dim (here the second) gives the same mask.
    np.testing.assert_array_equal(
        np.asarray(parallel.keep_mask_sharded(x, 20, mesh, dim=1)), ref_mask(x, 20)
    )
    with pytest.raises(ValueError, match="dim 0 of shape"):
        parallel.keep_mask_sharded(np.ones((3, 8)), 2, mesh, dim=0)


def test_keep_mask_sharded_on_an_explicit_mesh():
    explicit = jax.make_mesh((NUM_DEVICES,), ("data",), axis_types=(AxisType.Explicit,))
    x = np.random.default_rng(4).choice(np.float32([0.0, 1.0, -1.0, 2.0]), (8, 6))
    for placed in (x, parallel.replicate(x, explicit), parallel.shard_leaves(x, explicit, 0)):
        got = parallel.keep_mask_sharded(placed, 23, explicit)
        np.testing.assert_array_equal(np.asarray(got), ref_mask(x, 23))
        assert got.sharding.spec == P("data", None)


def test_keep_mask_sharded_moves_only_histograms_and_tie_counts(mesh):
    leaf = parallel.shard_leaves(np.ones((64, 32), np.float32), mesh, min_size=0)
    hlo = (
        parallel._keep_mask_sharded.lower(leaf, 7, mesh=mesh, axis="data", dim=0)
        .compile()
        .as_text()
    )
    gathers = [line for line in hlo.splitlines() if "all-gather(" in line]
    reduces = [line for line in hlo.splitlines() if "all-reduce(" in line]
    assert gathers and all("s32[4,1]" in line for line in gathers), gathers
    assert len(reduces) == 2 and all("s32[6553" in line for line in reduces), reduces


def test_keep_mask_sharded_bfloat16_nan_and_empty(mesh):
    x = np.float32([[1, -2, 0.5, 2], [2, np.nan, -1, 0]])
    for dtype in (jnp.bfloat16, jnp.float32):
        xs = jnp.asarray(x, dtype)
        for k in (1, 3, 5):
            np.testing.assert_array_equal(
                np.asarray(parallel.keep_mask_sharded(xs, k, mesh, dim=1)),
                np.asarray(admmjax.keep_mask(xs, k)),
            )
    assert parallel.keep_mask_sharded(np.zeros((0, 4)), 0, mesh).shape == (0, 4)


def pytree_case():
    rng = np.random.default_rng(7)
    tree = {
        "fc": {"kernel": rng.choice(np.float32([0, 1, -1, 2]), (8, 6)), "bias": np.ones(6)},
        "conv": rng.standard_normal((5, 3, 2, 4)).astype(np.float32),
        "odd": rng.standard_normal((5, 3)).astype(np.float32),
    }
    targets = {
        "fc": {"kernel": 0.6, "bias": None},
        "conv": admmjax.Keep(17),
        "odd": 0.5,
    }
    return tree, targets


def test_project_sharded_equals_project_on_a_pytree(mesh):
    tree, targets = pytree_case()
    want = admmjax.project(jax.tree.map(jnp.asarray, tree), targets)
    placed = parallel.shard_leaves(tree, mesh, min_size=0)
    got = parallel.project_sharded(placed, targets, mesh)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert got["fc"]["kernel"].sharding == placed["fc"]["kernel"].sharding
    assert got["conv"].sharding == placed["conv"].sharding
    # Under jit with traced targets (Keep counts are pytree children) as well.
    jitted = jax.jit(lambda t, tg: parallel.project_sharded(t, tg, mesh))(placed, targets)
    for a, b in zip(jax.tree.leaves(jitted), jax.tree.leaves(want), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_jit_of_project_on_sharded_leaves_is_already_exact(mesh):
    tree, targets = pytree_case()
    want = admmjax.project(jax.tree.map(jnp.asarray, tree), targets)
    placed = parallel.shard_leaves(tree, mesh, min_size=0)
    got = jax.jit(lambda t: admmjax.project(t, targets))(placed)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_project_sharded_rejects_nan(mesh):
    with pytest.raises(ValueError, match="NaN"):
        parallel.project_sharded({"w": np.float32([[1, np.nan, 0, 2]])}, {"w": 0.5}, mesh)


# ------------------------------------------------------------------ multi-host API


def test_process_shard_single_process():
    assert parallel.process_shard() == (0, 1)


@pytest.mark.parametrize("n", [None, "1"])
def test_initialize_is_a_no_op_for_one_process(monkeypatch, n):
    for var in ("ADMMJAX_COORDINATOR", "ADMMJAX_NUM_PROCESSES", "ADMMJAX_PROCESS_ID"):
        monkeypatch.delenv(var, raising=False)
    if n is not None:
        monkeypatch.setenv("ADMMJAX_NUM_PROCESSES", n)
    assert parallel.initialize() is False
    assert parallel.initialize(num_processes=1) is False


def test_initialize_validates_before_touching_jax(monkeypatch):
    monkeypatch.delenv("ADMMJAX_COORDINATOR", raising=False)
    monkeypatch.delenv("ADMMJAX_PROCESS_ID", raising=False)
    monkeypatch.setenv("ADMMJAX_NUM_PROCESSES", "2")
    with pytest.raises(ValueError, match="needs coordinator_address and process_id"):
        parallel.initialize()
    with pytest.raises(ValueError, match="0 <= process_id < num_processes"):
        parallel.initialize("127.0.0.1:1", process_id=2)
    monkeypatch.setenv("ADMMJAX_NUM_PROCESSES", "two")
    with pytest.raises(ValueError, match="ADMMJAX_NUM_PROCESSES must be an integer"):
        parallel.initialize()


# --------------------------------------------------------------- data-parallel ADMM


@pytest.fixture(scope="module")
def four_device_run(mesh):
    return worker.run_admm(mesh)


def assert_runs_match(got: dict, want: dict) -> None:
    assert got.keys() == want.keys()
    np.testing.assert_allclose(got["losses"], want["losses"], rtol=1e-5)
    np.testing.assert_allclose(got["primal"], want["primal"], rtol=1e-5)
    for key, value in want.items():
        if key.startswith("mask/") or key == "tie_mask":
            np.testing.assert_array_equal(got[key], value, err_msg=key)
        elif key.startswith(("params/", "z/", "z_sharded/")):
            np.testing.assert_allclose(got[key], value, rtol=1e-5, atol=1e-6, err_msg=key)
            np.testing.assert_array_equal(got[key] != 0, value != 0, err_msg=key)


def assert_run_consistent(run: dict) -> None:
    """Z-step shard by shard equals admmjax.project of the same params, exactly."""
    params = {k.split("/", 1)[1]: v for k, v in run.items() if k.startswith("params/")}
    targets = admmjax.uniform_sparsity(params, worker.SPARSITY)
    want = admmjax.project(params, targets)
    for name, value in want.items():
        np.testing.assert_array_equal(run[f"z_sharded/{name}"], np.asarray(value), err_msg=name)
    np.testing.assert_array_equal(run["tie_mask"], ref_mask(worker.tie_array(), 25))
    for name, mask in run.items():
        if name.startswith("mask/"):
            assert mask.sum() == mask.size - int(worker.SPARSITY * mask.size)


def test_data_parallel_admm_matches_one_device(four_device_run):
    one = worker.run_admm(parallel.data_mesh(1))
    assert_run_consistent(four_device_run)
    assert_run_consistent(one)
    assert_runs_match(four_device_run, one)
    assert four_device_run["losses"][-1] < four_device_run["losses"][0]


def test_sharded_params_and_states_train_the_same(mesh, four_device_run):
    sharded = worker.run_admm(mesh, shard_params=True)
    assert_run_consistent(sharded)
    assert_runs_match(sharded, four_device_run)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_match_single_process(tmp_path, four_device_run):
    """2 processes x 2 CPU devices (gloo collectives) == 1 process x 4 devices."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ADMMJAX_")}
    env.update(
        ADMMJAX_COORDINATOR=f"127.0.0.1:{free_port()}",
        ADMMJAX_NUM_PROCESSES="2",
        JAX_PLATFORMS="cpu",
        PYTHONPATH=os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]),
    )
    script = str(REPO / "tests" / "admmjax" / "_multiprocess_worker.py")
    procs = [
        subprocess.Popen(
            [sys.executable, script, str(tmp_path), "2"],
            env={**env, "ADMMJAX_PROCESS_ID": str(i)},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=REPO,
        )
        for i in range(2)
    ]
    logs = []
    try:
        for p in procs:
            logs.append(p.communicate(timeout=150)[0])
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for i, (p, log) in enumerate(zip(procs, logs, strict=True)):
        assert p.returncode == 0, f"worker {i} failed (rc {p.returncode}):\n{log[-4000:]}"
    runs = [dict(np.load(tmp_path / f"result_{i}.npz")) for i in range(2)]
    for i, run in enumerate(runs):
        np.testing.assert_array_equal(run.pop("process"), [i, 2, 4])
    for key in runs[0]:  # both processes see the same global values
        np.testing.assert_array_equal(runs[0][key], runs[1][key], err_msg=key)
    assert_run_consistent(runs[0])
    assert_runs_match(runs[0], four_device_run)

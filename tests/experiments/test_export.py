"""Sparse export: exact round trips, encoding choice, file errors, BCOO inference, the CLI."""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
from flax import nnx
from hypothesis import given
from hypothesis import strategies as st

import admmjax
from admmjax import _export
from admmjax.sparse_io import SparseFormatError, load_sparse, read_sparse, save_sparse
from experiments import models
from experiments.analysis import sparse_inference

REPO = Path(__file__).resolve().parents[2]
DTYPES = [
    np.float32, np.float16, ml_dtypes.bfloat16, np.float64, np.int32, np.int8, np.uint8, np.bool_,
]  # fmt: skip
ENCODINGS = ["auto", "dense", "bitmask", "relative"]


def sparse_array(rng: np.random.Generator, shape, dtype, density: float) -> np.ndarray:
    """Random ``dtype`` array with about ``density`` nonzeros, -0.0/NaN/inf for floats."""
    keep = rng.random(shape) < density
    dtype = np.dtype(dtype)
    if dtype == np.bool_:
        return keep
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        vals = rng.integers(max(info.min, -1000), min(info.max, 1000), size=shape, endpoint=True)
        return np.where(keep, vals, 0).astype(dtype)
    out = np.where(keep, rng.standard_normal(shape), 0.0).astype(dtype)
    flat = out.reshape(-1)
    specials = [-0.0, np.nan, np.inf, -np.inf]
    for i, v in zip(rng.permutation(flat.size)[: len(specials)], specials, strict=False):
        flat[i] = v
    return out


def assert_bit_equal(a, b) -> None:
    a, b = np.asarray(a), np.asarray(b)
    assert a.dtype == b.dtype and a.shape == b.shape
    assert a.tobytes() == b.tobytes()


def assert_trees_bit_equal(x, y) -> None:
    assert jax.tree.structure(x) == jax.tree.structure(y)
    for a, b in zip(jax.tree.leaves(x), jax.tree.leaves(y), strict=True):
        assert_bit_equal(a, b)


def through_bytes(sp: admmjax.SparseParams) -> admmjax.SparseParams:
    back, meta = admmjax.sparse_from_bytes(admmjax.sparse_to_bytes(sp, {"k": 1}))
    assert meta == {"k": 1}
    return back


# --------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("encoding", ENCODINGS)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_round_trip_is_bit_exact_for_every_dtype(dtype, encoding):
    rng = np.random.default_rng(0)
    params = {
        "w": sparse_array(rng, (37, 23), dtype, 0.1),
        "half": sparse_array(rng, (64,), dtype, 0.5),
        "dense": sparse_array(rng, (9,), dtype, 1.0),
        "scalar": sparse_array(rng, (), dtype, 1.0),
        "zeros": np.zeros((5, 7), dtype),
    }
    sp = admmjax.encode_sparse(params, encoding=encoding)
    if encoding != "auto":
        assert {leaf.encoding for leaf in sp.leaves} == {encoding}
    assert_trees_bit_equal(admmjax.decode_sparse(sp), params)
    back = through_bytes(sp)
    assert_trees_bit_equal(admmjax.decode_sparse(back), params)  # nested dicts from paths
    assert_trees_bit_equal(admmjax.decode_sparse(back, like=params), params)


@given(
    shape=st.lists(st.integers(0, 9), min_size=0, max_size=3).map(tuple),
    density=st.sampled_from([0.0, 0.01, 0.1, 0.5, 0.9, 1.0]),
    dtype=st.sampled_from(DTYPES),
    seed=st.integers(0, 2**16),
)
def test_auto_round_trip_and_smallest_encoding_property(shape, density, dtype, seed):
    x = sparse_array(np.random.default_rng(seed), shape, dtype, density)
    sp = admmjax.encode_sparse({"x": x})
    assert_bit_equal(admmjax.decode_sparse(through_bytes(sp))["x"], x)
    forced = [admmjax.encode_sparse({"x": x}, encoding=e).nbytes for e in ENCODINGS[1:]]
    assert sp.nbytes == min(forced)


def test_all_zero_and_fully_dense_leaves():
    params = {"zeros": np.zeros((300, 200), np.float32), "full": np.ones((50, 4), np.float32)}
    sp = admmjax.encode_sparse(params)
    zeros, full = sp.leaves[1], sp.leaves[0]
    assert (zeros.path, zeros.encoding, zeros.nonzero, zeros.nbytes) == ("zeros", "relative", 0, 0)
    assert (full.encoding, full.nonzero, full.nbytes) == ("dense", 200, 800)
    assert_trees_bit_equal(admmjax.decode_sparse(through_bytes(sp)), params)


def test_bitmask_vs_relative_picks_the_smaller():
    rng = np.random.default_rng(1)
    half = sparse_array(rng, (1000,), np.float32, 0.3)  # 125 mask bytes < ~300 gap bytes
    sparse = sparse_array(rng, (1000,), np.float32, 0.02)  # ~20 gap bytes < 125 mask bytes
    sp = admmjax.encode_sparse({"half": half, "sparse": sparse})
    assert [leaf.encoding for leaf in sp.leaves] == ["bitmask", "relative"]
    for leaf, x in zip(sp.leaves, [half, sparse], strict=True):
        alternatives = {
            e: admmjax.encode_sparse(x, encoding=e).nbytes for e in ("dense", "bitmask", "relative")
        }
        assert leaf.nbytes == min(alternatives.values()) == alternatives[leaf.encoding]
    assert sp.leaves[0].index.nbytes == 125
    assert admmjax.sparse_nbytes(sp) == admmjax.sparse_nbytes({"half": half, "sparse": sparse})


def test_relative_codes_escape_at_the_type_boundary():
    # uint8: M = 255. Gaps 255 (one code), 255, 510 (escape + 255), 1.
    codes = _export.relative_codes(np.array([254, 509, 1019, 1020]), np.uint8)
    np.testing.assert_array_equal(codes, [255, 255, 0, 255, 1])
    pos = _export._decode_relative(codes, 4, 1021, "t")
    np.testing.assert_array_equal(pos, [254, 509, 1019, 1020])
    codes = _export.relative_codes(np.array([0, 256, 766]), np.uint8)  # gaps 1, 256, 510
    np.testing.assert_array_equal(codes, [1, 0, 1, 0, 255])


def test_gaps_larger_than_the_index_type_use_escapes():
    x = np.zeros(2100, np.float32)
    x[np.arange(1, 1000, 10)] = 1.5  # gaps of 10 ...
    x[2000] = -2.0  # ... and one of 1011: uint8 codes with 3 escapes beat uint16 and the mask
    leaf = admmjax.encode_sparse(x).leaves[0]
    assert (leaf.encoding, leaf.index.dtype, leaf.nonzero) == ("relative", np.uint8, 101)
    assert int(np.sum(leaf.index == 0)) == 3 and leaf.index.size == 104
    assert_bit_equal(admmjax.decode_sparse(through_bytes(admmjax.encode_sparse(x))), x)
    # Forced narrow codes over huge gaps, and int16 codes too.
    y = np.zeros(100_000, np.float16)
    y[[0, 70_000, 99_999]] = [1, 2, 3]
    for index_dtype in (np.uint8, np.uint16, np.uint32):
        sp = admmjax.encode_sparse(y, encoding="relative", index_dtype=index_dtype)
        assert sp.leaves[0].index.dtype == index_dtype
        assert_bit_equal(admmjax.decode_sparse(through_bytes(sp)), y)


def test_nnx_state_and_nested_structures(tmp_path):
    state = models.functional(models.create_model("lenet300_100", seed=0))[1]
    pruned, _ = admmjax.prune(state, admmjax.uniform_sparsity(state, 0.9))
    sp = admmjax.encode_sparse(pruned)
    assert sp.paths == admmjax.leaf_paths(pruned)
    assert isinstance(admmjax.decode_sparse(sp), nnx.State)  # the in-memory treedef
    path = tmp_path / "m.admmsparse"
    save_sparse(path, pruned, metadata={"model": "lenet300_100"})
    back = load_sparse(path, like=state)
    assert isinstance(back, nnx.State)
    assert all(isinstance(v, jax.Array) for v in jax.tree.leaves(back))
    assert_trees_bit_equal(back, pruned)
    plain = load_sparse(path)
    assert set(plain) == {"fc1", "fc2", "fc3"} and set(plain["fc1"]) == {"kernel", "bias"}
    assert_bit_equal(plain["fc2"]["kernel"], pruned["fc2"]["kernel"])
    assert_trees_bit_equal(
        load_sparse(path, like=nnx.to_pure_dict(state)), nnx.to_pure_dict(pruned)
    )
    assert read_sparse(path)[1] == {"model": "lenet300_100"}

    nested = {"a": [np.arange(3.0), {"b": np.float32(0)}], "c": (np.eye(3, dtype=np.int8),)}
    save_sparse(path, nested)
    assert_trees_bit_equal(load_sparse(path, like=nested), nested)
    assert load_sparse(path)["a"]["1"]["b"].shape == ()
    single = np.array([0.0, 2.0], np.float64)  # a bare array is a one-leaf tree
    assert_bit_equal(admmjax.decode_sparse(through_bytes(admmjax.encode_sparse(single))), single)


def test_like_mismatches_are_named():
    sp = admmjax.encode_sparse({"a": np.zeros(3, np.float32), "b": np.ones((2, 2), np.float32)})
    with pytest.raises(ValueError, match=r"stored but not in like \['b'\]"):
        admmjax.decode_sparse(sp, like={"a": np.zeros(3, np.float32), "c": np.zeros((2, 2))})
    with pytest.raises(ValueError, match=r"leaf 'b' is float32\[2, 2\].*float32\[4\]"):
        admmjax.decode_sparse(sp, like={"a": np.zeros(3, np.float32), "b": np.zeros(4, np.float32)})
    with pytest.raises(ValueError, match=r"leaf 'a' is float32.*float16"):
        admmjax.decode_sparse(sp, like={"a": jnp.zeros(3, jnp.float16), "b": np.ones((2, 2))})
    with pytest.raises(ValueError, match="encoding must be"):
        admmjax.encode_sparse({"a": np.zeros(3)}, encoding="csr")
    with pytest.raises(TypeError, match="leaf 'a' has dtype object"):
        admmjax.encode_sparse({"a": np.array([None, 1])})


# --------------------------------------------------------------------------- file errors


@pytest.fixture
def sparse_file(tmp_path):
    rng = np.random.default_rng(3)
    params = {"w": sparse_array(rng, (40, 30), np.float32, 0.05), "b": np.ones(30, np.float32)}
    path = tmp_path / "p.admmsparse"
    save_sparse(path, params)
    return path, path.read_bytes(), params


def _rewrite(path, data: bytes) -> None:
    path.write_bytes(data)


def test_corrupted_payload_is_a_checksum_error(sparse_file):
    path, data, _ = sparse_file
    bad = bytearray(data)
    bad[-10] ^= 0x01
    _rewrite(path, bytes(bad))
    with pytest.raises(SparseFormatError, match="checksum mismatch") as err:
        load_sparse(path)
    assert str(path) in str(err.value)


@pytest.mark.parametrize("keep", [0, 5, 40, -1, -500])
def test_truncated_files_are_refused(sparse_file, keep):
    path, data, _ = sparse_file
    _rewrite(path, data[:keep])
    match = "empty" if keep == 0 else "truncated"
    with pytest.raises(SparseFormatError, match=match) as err:
        load_sparse(path)
    assert str(path) in str(err.value)


def test_bad_magic_version_and_trailing_bytes(sparse_file):
    path, data, params = sparse_file
    _rewrite(path, b"PK\x03\x04" + data[4:])
    with pytest.raises(SparseFormatError, match=r"not an admmjax sparse file .*bad magic"):
        load_sparse(path)
    _rewrite(path, data[:8] + struct.pack("<H", 2) + data[10:])
    with pytest.raises(SparseFormatError, match="unsupported format version 2"):
        load_sparse(path)
    _rewrite(path, data + b"\0")
    with pytest.raises(SparseFormatError, match="1 unexpected bytes"):
        load_sparse(path)
    _rewrite(path, data)
    assert_trees_bit_equal(load_sparse(path, like=params), params)
    with pytest.raises(FileNotFoundError, match="no sparse params file"):
        load_sparse(path.with_name("missing.admmsparse"))


def _with_manifest(data: bytes, edit) -> bytes:
    """Same payload, an edited manifest and a matching checksum (a consistent lie)."""
    _, version, flags, m, p, _ = _export.HEADER.unpack_from(data)
    manifest = json.loads(data[56 : 56 + m])
    edit(manifest)
    body = json.dumps(manifest).encode() + data[56 + m :]
    head = _export.HEADER.pack(_export.MAGIC, version, flags, len(body) - p, p,
                               hashlib.sha256(body).digest())  # fmt: skip
    return head + body


@pytest.mark.parametrize(
    "edit, match",
    [
        (lambda m: m["leaves"][1].update(nonzero=7), "leaf 'w'"),
        (lambda m: m["leaves"][1].update(values=[0, 10**9]), "outside the payload"),
        (lambda m: m["leaves"][1].update(shape=[10, 10]), "leaf 'w'"),
        (lambda m: m["leaves"][1].update(dtype="float128x"), "unknown dtype"),
        (lambda m: m["leaves"][1].update(dtype="object"), "unsupported dtype"),
        (lambda m: m["leaves"][0].pop("path"), "malformed"),
        (lambda m: m.update(format="zip"), "format/version"),
    ],
)
def test_inconsistent_manifests_are_refused(sparse_file, edit, match):
    path, data, _ = sparse_file
    _rewrite(path, _with_manifest(data, edit))
    with pytest.raises(SparseFormatError, match=match) as err:
        read_sparse(path)
    assert str(path) in str(err.value)


# --------------------------------------------------------------------------- inference


@pytest.mark.parametrize("model", ["lenet300_100", "lenet5"])
def test_bcoo_inference_matches_dense(model):
    state = models.functional(models.create_model(model, seed=1))[1]
    pruned, _ = admmjax.prune(state, admmjax.uniform_sparsity(state, 0.95))
    x = jax.random.uniform(jax.random.key(2), (8, 28, 28, 1))
    out = sparse_inference.check_sparse_matches_dense(model, pruned, x)
    assert out["max_abs_diff"] < 1e-5 and out["same_predictions"]
    apply_fn = models.functional(models.create_model(model, seed=1))[2]
    sp = sparse_inference.fc_to_bcoo(pruned)
    fc = [k for k, v in nnx.to_pure_dict(sp).items() if isinstance(v["kernel"], jax.Array)]
    assert fc == (["conv1", "conv2"] if model == "lenet5" else [])  # convs stay dense
    jaxpr = str(jax.make_jaxpr(sparse_inference.sparse_forward(apply_fn))(sp, x))
    n_fc = 2 if model == "lenet5" else 3
    assert jaxpr.count("bcoo_dot_general") == n_fc and "bcoo_todense" not in jaxpr


# --------------------------------------------------------------------------- CLI


@pytest.fixture(scope="module")
def tiny_workdir(tmp_path_factory):
    import tensorflow_datasets as tfds

    from experiments import train
    from experiments.data import mnist as data

    root = tmp_path_factory.mktemp("export")
    cfg = train.Config(
        model="lenet300_100", dataset="mnist", sparsity={"fc1/kernel": 0.96, "fc2/kernel": 0.9},
        batch_size=16, pretrain_steps=2, admm_iterations=1, admm_steps=2, retrain_steps=2,
        progress=False, eval_batch_size=32, devices=1,
    )  # fmt: skip
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ADMMJAX_CACHE", str(root / "cache"))  # never cache mock data
        data.clear_memo()
        with tfds.testing.mock_data(num_examples=64, policy=tfds.testing.MockPolicy.USE_CODE):
            train.run(cfg, str(root / "run"), log=lambda _: None)
        data.clear_memo()
    return root / "run"


@pytest.mark.slow
def test_export_cli_writes_checks_and_benchmarks(tiny_workdir, tmp_path, capsys):
    from admmjax.checkpoint import load_pytree
    from experiments import export

    bench_json = tmp_path / "bench.json"
    (res,) = export.main([str(tiny_workdir), "--bench-json", str(bench_json), "--repeats", "1"])
    printed = capsys.readouterr().out
    out = tiny_workdir / "pruned.admmsparse"
    assert res["file"] == str(out) and out.is_file()
    assert res["file_bytes"] == out.stat().st_size
    assert res["dense_float32_bytes"] == 4 * 266_610
    assert res["ratio_vs_float32"] > 15  # 96% / 90% pruned fc1 / fc2
    by_path = {leaf["path"]: leaf for leaf in res["leaves"]}
    assert by_path["fc1/kernel"]["nonzero"] <= 9408
    assert by_path["fc1/kernel"]["encoding"] == "relative"
    for text in ("| fc1/kernel | 784x300 |", "dense float32", "orbax checkpoint", "speedup"):
        assert text in printed
    like = models.functional(models.create_model("lenet300_100", seed=0))[1]
    assert_trees_bit_equal(load_sparse(out, like), load_pytree(tiny_workdir / "pruned", like))
    doc = json.loads(bench_json.read_text())
    assert doc["command"].startswith("python -m experiments.export ")
    (m,) = doc["models"]
    assert [r["batch"] for r in m["results"]] == [1, 256]
    assert m["check"]["max_abs_diff"] < 1e-4
    assert read_sparse(out)[1]["model"] == "lenet300_100"


def test_export_cli_refuses_a_non_workdir(tmp_path, capsys):
    from experiments import export
    from experiments import workdir as workdir_lib

    with pytest.raises(SystemExit) as exc:
        export.main([str(tmp_path)])
    assert exc.value.code == 2
    assert "has no config.json" in capsys.readouterr().err
    # Imported, the function raises an exception, not SystemExit.
    with pytest.raises(ValueError, match=r"has no config\.json"):
        workdir_lib.load_params(str(tmp_path))


def test_readers_refuse_a_run_without_the_params_asked_for(tmp_path, capsys):
    """A run without ``pruned/``: both readers name the folder, evaluate before reading data."""
    import shutil

    from experiments import evaluate
    from experiments import workdir as workdir_lib

    shutil.copy(REPO / "experiments" / "results" / "lenet300_100" / "config.json", tmp_path)
    missing = str(tmp_path / "pruned")
    with pytest.raises(ValueError, match=f"{missing} does not exist; has the run finished"):
        workdir_lib.load_params(str(tmp_path))
    with pytest.raises(SystemExit) as exc:
        evaluate.main([str(tmp_path)])
    assert exc.value.code == 2
    assert f"{missing} does not exist" in capsys.readouterr().err

"""experiments.oneshot / prune_lm: layer-by-layer one-shot pruning of a tiny GPT."""

from __future__ import annotations

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import admmjax
from experiments import oneshot, prune_lm
from experiments.data import text
from experiments.models.gpt import GPT, causal_mask
from experiments.schema import ConfigError

# mlp_ratio=1: every kernel is 32 x 32, so each pruner compiles once (the CLI test
# below has the MLP 2x wide, so the (in, out) views of fc and proj are checked there).
TINY = dict(context=32, embed=32, heads=4, layers=2, mlp_ratio=1)
SPARSITY = 0.7  # floor(0.7 n) differs per kernel and per column: the counting rules show


def _tokens(seed: int, shape: tuple[int, int]) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, shape).astype(np.uint8)


@pytest.fixture(scope="module")
def model() -> GPT:
    model = GPT(rngs=nnx.Rngs(0), **TINY)
    # GPT-2's init (std 0.02) barely moves the residual stream; kernels 5x larger make
    # each block's pruning visible in the next block's inputs, as in a trained model.
    params = nnx.state(model, nnx.Param)
    paths = {_kernel_path(name) for name in oneshot.KERNELS}
    flat = _flat(nnx.as_pure(params))
    scaled = {p: (5 * v if p in paths else v) for p, v in flat.items()}
    nnx.update(model, jax.tree.unflatten(jax.tree.structure(nnx.as_pure(params)),
                                         [scaled[p] for p in flat]))  # fmt: skip
    return model


@pytest.fixture(scope="module")
def calibration() -> np.ndarray:
    return _tokens(0, (16, 32))


@pytest.fixture(scope="module")
def results(model, calibration) -> dict:
    # One run per (method, target), shared: compiling the pruners dominates the time.
    cache: dict = {}

    def get(method: str, target: float | str) -> oneshot.PruneResult:
        if (method, target) not in cache:
            cache[method, target] = oneshot.prune_gpt(model, calibration, method, target)
        return cache[method, target]

    return get


def _flat(params) -> dict[str, np.ndarray]:
    leaves = jax.tree.leaves(params)
    return dict(zip(admmjax.leaf_paths(params), map(np.asarray, leaves), strict=True))


def _kernel_path(name: str) -> str:
    return f"blocks/{name}/kernel"


def _expected_kept(method: str, target: float | str, shape: tuple[int, int]) -> int:
    n_in, n_out = shape
    if target == "2:4":
        return n_in * n_out // 2
    if method == "wanda":  # Wanda's recipe: the fraction of every output column
        return (n_in - math.floor(target * n_in)) * n_out
    return n_in * n_out - math.floor(target * n_in * n_out)


@pytest.mark.parametrize(
    ("method", "target"),
    [(m, SPARSITY) for m in oneshot.METHODS] + [("magnitude", "2:4"), ("admm", "2:4")],
)
def test_exact_per_layer_counts_and_the_rest_untouched(model, results, method, target):
    result = results(method, target)
    dense, pruned = _flat(nnx.as_pure(nnx.state(model, nnx.Param))), _flat(result.params)
    assert set(pruned) == set(dense)
    assert len(result.records) == TINY["layers"] * len(oneshot.KERNELS)
    for record in result.records:
        assert record.shape == (32, 32)
        assert record.kept == _expected_kept(method, target, record.shape), record
        layer = pruned[_kernel_path(record.kernel)][record.layer]
        assert np.count_nonzero(layer) == record.kept
        if target == "2:4":  # 2 of every 4 consecutive inputs of each output column
            groups = layer.reshape(record.shape[0] // 4, 4, record.shape[1])
            assert (np.count_nonzero(groups, axis=1) == 2).all(), record
    kernels = {_kernel_path(name) for name in oneshot.KERNELS}
    for path, leaf in pruned.items():
        assert leaf.shape == dense[path].shape and leaf.dtype == dense[path].dtype
        if path not in kernels:  # embeddings, LayerNorms, biases: bit-identical
            np.testing.assert_array_equal(leaf, dense[path], err_msg=path)
        else:
            kept = leaf != 0
            if method == "magnitude":  # no update: the kept weights are the dense ones
                np.testing.assert_array_equal(leaf[kept], dense[path][kept])
            elif method in ("sparsegpt", "admm"):  # weights updated to compensate
                assert not np.array_equal(leaf[kept], dense[path][kept]), path


def test_admm_error_no_worse_than_magnitude_per_layer(results):
    admm, magnitude = results("admm", SPARSITY), results("magnitude", SPARSITY)
    for a, m in zip(admm.records, magnitude.records, strict=True):
        assert (a.layer, a.kernel) == (m.layer, m.kernel)
        assert 0 <= a.relative_error <= m.relative_error, (a, m)
        assert a.iterations is not None and a.iterations >= 1
    # and SparseGPT, which updates the kept weights too, sits in between on the sum
    sparsegpt = results("sparsegpt", SPARSITY)
    total = {
        name: sum(r.relative_error for r in result.records)
        for name, result in [("admm", admm), ("sparsegpt", sparsegpt), ("magnitude", magnitude)]
    }
    assert total["admm"] < total["sparsegpt"] < total["magnitude"], total


def test_same_seed_same_params(model, calibration, results):
    first = results("admm", "2:4")
    again = oneshot.prune_gpt(model, calibration, "admm", "2:4")
    jax.tree.map(np.testing.assert_array_equal, first.params, again.params)
    assert [r.relative_error for r in first.records] == [r.relative_error for r in again.records]
    # and the model handed in is not changed
    q = nnx.as_pure(nnx.state(model, nnx.Param))["blocks"]["attention"]["query"]["kernel"]
    assert np.count_nonzero(q) == q.size


def test_blocks_run_one_by_one_give_the_model_and_later_layers_see_pruned_inputs(
    model, calibration, results
):
    tokens = jnp.asarray(calibration, jnp.int32)
    blocks = nnx.to_pure_dict(nnx.state(model.blocks, nnx.Param))
    graphdef, _, rest = nnx.split(model.blocks, nnx.Param, ...)

    def run_all(blocks_params):
        x, inputs = model.embed(tokens), []
        for layer in range(TINY["layers"]):
            p = jax.tree.map(lambda leaf, i=layer: leaf[i], blocks_params)
            x, seen = oneshot._run_block(graphdef, p, rest, x, causal_mask(tokens))
            inputs.append(seen)
        return x, inputs

    x, dense_inputs = run_all(blocks)
    logits = model.token_embed.attend(model.ln_final(x))
    np.testing.assert_allclose(logits, model(tokens), rtol=1e-5, atol=1e-5)
    # Layer 1's query was fitted to the inputs of the pruned layer 0, not the dense ones.
    result = results("magnitude", SPARSITY)
    pruned_blocks = nnx.to_pure_dict(result.params["blocks"])
    _, pruned_inputs = run_all(pruned_blocks)
    record = next(r for r in result.records if (r.layer, r.kernel) == (1, "attention/query"))
    w = blocks["attention"]["query"]["kernel"][1].reshape(32, 32)
    w_hat = pruned_blocks["attention"]["query"]["kernel"][1].reshape(32, 32)

    def relative(inputs):
        gram = admmjax.gram_matrix(inputs[1]["attention/query"])
        return float(admmjax.layer_error(w, w_hat, gram) / admmjax.layer_error(w, 0 * w, gram))

    assert record.relative_error == pytest.approx(relative(pruned_inputs), rel=1e-4)
    assert record.relative_error != pytest.approx(relative(dense_inputs), rel=1e-2)


def test_calibration_comes_from_the_training_split_only():
    # Byte values mark the split: train 0..99, validation 100..179, test 180..255.
    rng = np.random.default_rng(1)
    splits = text.TextSplits(
        train=rng.integers(0, 100, 5000).astype(np.uint8),
        validation=rng.integers(100, 180, 3000).astype(np.uint8),
        test=rng.integers(180, 256, 3000).astype(np.uint8),
    )
    windows = oneshot.calibration_set(splits, 16, 32, seed=3)
    assert windows.shape == (16, 32) and int(windows.max()) < 100
    train = splits.train.tobytes()
    assert all(bytes(w) in train for w in windows)
    np.testing.assert_array_equal(windows, oneshot.calibration_set(splits, 16, 32, seed=3))
    assert not np.array_equal(windows, oneshot.calibration_set(splits, 16, 32, seed=4))


def test_bits_per_char_split_counts_every_byte_once(model):
    tokens = _tokens(5, (1, 100))[0]  # 99 targets: 3 full windows of 32, then 3 bytes
    bits = oneshot.bits_per_char_split(model, tokens, batch_size=2)
    # An independent reference: the 4 windows in one batch, the last one's 3 targets only.
    x = np.zeros((4, 32), np.int32)
    x.reshape(-1)[:99] = tokens[:99]
    y = np.concatenate([tokens[1:], np.zeros(29, np.uint8)]).reshape(4, 32)
    logp = np.asarray(jax.nn.log_softmax(nnx.jit(lambda m, t: m(t))(model, jnp.asarray(x))))
    ce = -np.take_along_axis(logp, y[..., None].astype(int), -1)[..., 0].reshape(-1)[:99]
    assert bits == pytest.approx(ce.mean() / math.log(2), rel=1e-5)


@pytest.mark.parametrize(
    ("method", "target", "message"),
    [
        ("obs", 0.5, r"unknown method 'obs'; expected one of magnitude, wanda, sparsegpt, admm"),
        ("admm", 1.0, r"target 1.0: expected a fraction in \[0, 1\)"),
        ("admm", "filters:0.5", r"target 'filters:0.5': expected a fraction"),
        ("admm", "half", r"target 'half': expected a fraction"),
        ("admm", admmjax.NM(2, 4, axis=1), r"N:M runs along each kernel's inputs"),
    ],
)
def test_bad_method_or_target_refused_before_work(model, method, target, message):
    # The calibration is not even looked at: its check would name it instead.
    with pytest.raises(ValueError, match=message):
        oneshot.prune_gpt(model, "not tokens", method, target)


def test_n_m_on_a_contraction_that_does_not_divide_is_refused_naming_the_kernel():
    # Shapes only: the checks come before any work, so an abstract model is enough.
    odd = nnx.eval_shape(lambda: GPT(rngs=nnx.Rngs(0), context=8, embed=12, heads=2, layers=1))
    with pytest.raises(ValueError, match=r"blocks/attention/query/kernel .* 12 inputs, not a "
                       r"multiple of 8"):  # fmt: skip
        oneshot.prune_gpt(odd, "not tokens", "magnitude", "4:8")
    with pytest.raises(ValueError, match=r"calibration must be integer tokens"):
        oneshot.prune_gpt(odd, np.zeros((2, 8), np.float32), "magnitude", "2:4")
    with pytest.raises(ValueError, match=r"expected at least one sequence of 1 to 8 tokens"):
        oneshot.prune_gpt(odd, np.zeros((2, 9), np.uint8), "magnitude", 0.5)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--methods", "magnitude,obs"], "unknown method 'obs'"),
        (["--targets", "0.5,1.5"], "target '1.5': expected a fraction in [0, 1)"),
        (["--targets", "2:4", "--embed", "30", "--heads", "3"], "not a multiple of 4"),
        (["--calibration-sequences", "0"], "--calibration-sequences: expected an integer > 0"),
        (["--calibration-length", "64", "--context", "32"], "exceeds the model's context 32"),
    ],
)
def test_cli_refuses_bad_options_before_work(tmp_path, capsys, args, message):
    with pytest.raises(SystemExit) as exit_info:
        prune_lm.main(["--dense", str(tmp_path), "--out", str(tmp_path / "r.json"), *args])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err.replace("\n", " ")
    assert not (tmp_path / "r.json").exists()


def test_config_validate_refuses_a_bad_target():
    with pytest.raises(ConfigError, match=r"target 'rows:0.5': expected a fraction"):
        oneshot.OneshotConfig(dense="x", targets="0.5,rows:0.5").validate()


@pytest.mark.data
def test_cli_end_to_end_on_the_kjv_resumes(tmp_path, capsys):
    sizes = dict(context=16, embed=16, heads=2, layers=1, mlp_ratio=2)
    model = GPT(rngs=nnx.Rngs(3), **sizes)
    dense = tmp_path / "dense.npz"
    np.savez(dense, **_flat(nnx.as_pure(nnx.state(model, nnx.Param))))
    out = tmp_path / "results.json"
    argv = ["--dense", str(dense), "--out", str(out), "--methods", "magnitude",
            "--targets", "0.5", "--calibration-sequences", "8", "--eval-batch-size", "512",
            *[f"--{k.replace('_', '-')}={v}" for k, v in sizes.items()]]  # fmt: skip
    doc = prune_lm.main(argv)
    run = doc["runs"]["magnitude@0.5"]
    assert run["kept"] == run["total"] // 2
    views = {"attention/query": [16, 16], "attention/key": [16, 16], "attention/value": [16, 16],
             "attention/out": [16, 16], "mlp/fc": [16, 32], "mlp/proj": [32, 16]}  # fmt: skip
    assert {r["kernel"]: r["shape"] for r in run["layers"]} == views
    assert 7 < doc["dense"]["test_bits_per_char"] < 8.5  # an untrained byte model: ~log2(256)
    assert run["test_bits_per_char"] != doc["dense"]["test_bits_per_char"]
    saved = json.loads(out.read_text())
    assert saved["runs"].keys() == {"magnitude@0.5"}
    assert saved["environment"]["command"].startswith("python")
    assert "| magnitude | 0.5 |" in capsys.readouterr().out
    # The same command again: nothing recomputed, the same numbers.
    again = prune_lm.main(argv)
    assert again["runs"] == saved["runs"] and again["dense"] == saved["dense"]
    # Other settings on the same file: refused, naming the file.
    with pytest.raises(SystemExit):
        prune_lm.main([*argv, "--seed", "1"])
    assert "holds results made with other settings" in capsys.readouterr().err


def test_report_puts_one_shot_and_training_runs_side_by_side(tmp_path, monkeypatch):
    """--report: one row per method, a cell per finished (method, target), the training
    runs read from where their recipes write (the gpt_kjv config's variants)."""
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "oneshot" / "gpt.json"
    out.parent.mkdir()
    runs = {
        f"{m}@{t}": {"test_bits_per_char": 2.0 + i + j / 10, "prune_seconds": 1.0 + j}
        for i, m in enumerate(oneshot.METHODS)
        for j, t in enumerate(("0.5", "0.7", "0.9", "2:4"))
        if (m, t) != ("wanda", "0.9")  # not run: the cell says so
    }
    out.write_text(json.dumps({"dense": {"test_bits_per_char": 1.9}, "runs": runs}))
    for name, bpc in (("gpt_kjv", 3.25), ("gpt_kjv_gradual_70", 2.75),  # admm_90, gradual_70
                      ("gpt_kjv_admm_90_long", 2.5)):  # fmt: skip
        run_dir = tmp_path / "experiments" / "results" / name
        run_dir.mkdir(parents=True)
        summary = {"pruned_bits_per_char": bpc, "stage_seconds": {"admm": 10.0, "retrain": 5.0}}
        (run_dir / "summary.json").write_text(json.dumps(summary))
    table = prune_lm.report(str(out))
    rows = {line.split(" | ")[0].strip("| "): line for line in table.splitlines() if "|" in line}
    assert rows["dense"].startswith("| dense | 1.9000 |")
    assert "| 2.0000 (1 s) | 2.1000 (2 s) | 2.2000 (3 s) | 2.3000 (4 s) |" in rows[
        prune_lm.ONESHOT_NAMES["magnitude"]
    ]
    assert "not run" in rows[prune_lm.ONESHOT_NAMES["wanda"]]
    labels = list(prune_lm.trained_rows())  # ADMM, gradual, then their longer budgets
    admm = rows[labels[0]].split(" | ")
    assert admm[1:3] == ["not run", "not run"] and admm[3] == "3.2500 (15 s)"
    assert rows[labels[1]].split(" | ")[2] == "2.7500 (15 s)"
    assert rows[labels[2]].split(" | ")[3] == "2.5000 (15 s)" and labels[3] not in rows
    assert (out.parent / "table.md").read_text() == table
    assert (out.parent / "sparsity_bpc.png").stat().st_size > 0

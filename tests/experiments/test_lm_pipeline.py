"""The byte-level GPT through the one pipeline (experiments.train): text source, per-layer
budgets of stacked kernels, ADMM and gradual magnitude pruning, bits per character,
determinism and resumption after real kills."""

from __future__ import annotations

import json
import math
import os
import subprocess
from pathlib import Path

import _lm_worker  # tests/experiments/, on sys.path as the test's own folder
import jax
import numpy as np
import pytest
from _killable import run_worker

import admmjax
from admmjax.checkpoint import load_pytree
from experiments import config, lm, models, train
from experiments.data import text
from experiments.schema import ConfigError

pytestmark = pytest.mark.data  # the real KJV text

REPO = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).with_name("_lm_worker.py")

TINY = _lm_worker.CONFIG
KERNELS = ("attention/query", "attention/key", "attention/value", "attention/out",
           "mlp/fc", "mlp/proj")  # fmt: skip


def _config(**changes) -> train.Config:
    return train.Config(**{**TINY, "checkpoint_every": 0, **changes})


def _flat(tree) -> dict[str, np.ndarray]:
    return {
        jax.tree_util.keystr(k, simple=True, separator="/"): np.asarray(v)
        for k, v in jax.tree_util.tree_flatten_with_path(tree)[0]
    }


# --------------------------------------------------------------------------- the source


def test_text_source_batches_are_shifted_windows_of_the_training_split():
    source = text.TextSource(16, train_subset=5000)
    assert source.num_train == (5000 - 1) // 16
    assert (source.num_test, source.num_validation) == (
        text.SPLITS["test"].size - 1, text.SPLITS["validation"].size - 1,
    )  # fmt: skip
    train_bytes = bytes(source.train)
    batches = list(source.train_batches(4, seed=3, epoch=1, start_step=2))
    assert len(batches) == source.num_train // 4 - 2
    for x, y in batches[:3]:
        assert x.shape == y.shape == (4, 16) and x.dtype == np.uint8
        np.testing.assert_array_equal(x[:, 1:], y[:, :-1])  # y is x shifted by one byte
        for row_x, row_y in zip(x, y, strict=True):
            assert bytes(row_x) + bytes(row_y[-1:]) in train_bytes
    # A pure function of (seed, epoch, step): resuming at a step draws the same batch.
    again = next(source.train_batches(4, seed=3, epoch=1, start_step=2))
    np.testing.assert_array_equal(again[0], batches[0][0])
    other_epoch = next(source.train_batches(4, seed=3, epoch=2, start_step=2))
    assert not np.array_equal(other_epoch[0], batches[0][0])
    # Shards are the contiguous rows of the global batch.
    halves = [next(source.train_batches(4, seed=3, epoch=1, start_step=2, shard_index=i,
                                        num_shards=2)) for i in range(2)]  # fmt: skip
    np.testing.assert_array_equal(np.concatenate([h[0] for h in halves]), batches[0][0])
    with pytest.raises(ValueError, match="num_shards 3"):
        next(source.train_batches(4, seed=3, epoch=1, num_shards=3))


def test_text_source_evaluation_scores_every_test_byte_once():
    source = text.TextSource(64)
    weights = sum(int(w.sum()) for _, _, w in source.eval_batches(512))
    assert weights == source.num_test
    shards = sum(int(w.sum()) for i in range(4)
                 for _, _, w in source.eval_batches(512, shard_index=i, num_shards=4))  # fmt: skip
    assert shards == source.num_test


def test_text_source_eval_subset_scores_the_first_targets_only():
    full, first = text.TextSource(64), text.TextSource(64, eval_subset=1000)
    assert (first.num_test, first.num_validation) == (1000, 1000)
    scored = [(y, w) for _, y, w in first.eval_batches(8)]
    assert sum(int(w.sum()) for _, w in scored) == 1000
    targets = np.concatenate([y[w] for y, w in scored])
    np.testing.assert_array_equal(targets, full.test[1:1001])  # in order, each once
    assert sum(int(w.sum()) for _, _, w in first.validation_batches(8)) == 1000
    with pytest.raises(ValueError, match="eval_subset must be >= 0"):
        text.TextSource(64, eval_subset=-1)


# --------------------------------------------------------------------------- configs


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"dataset": "mnist"}, "'gpt' is a language model and trains on 'kjv'"),
        ({"augment_shift": 2}, "augment_shift 2: translations are for images"),
        ({"validation_size": 100}, "validation split is fixed"),
        ({"sparsify": "gradual", "allocation": "global"}, "prunes per layer"),
        ({"sparsity": {"blocks/attention/query/kernel": "2:4"}}, "NM"),
        ({"sparsity": {"blocks/*/kernel": "quant:1"}, "sparsify": "gradual"}, "quantization"),
    ],
)
def test_language_configs_refuse_what_does_not_apply(changes, message):
    with pytest.raises(ConfigError, match=message):
        _config(**changes).validate()


def test_an_image_model_refuses_the_text():
    cfg = train.Config(model="lenet5", dataset="kjv", sparsity={"fc1/kernel": 0.5})
    with pytest.raises(ConfigError, match="'lenet5' is a classify model and trains on an image"):
        cfg.validate()


def test_nm_spec_names_the_axes_of_one_layer():
    assert config.parse_target("2:4@0") == admmjax.NM(2, 4, axis=0)
    assert config.parse_target("2:4@0,1") == admmjax.NM(2, 4, axis=(0, 1))
    with pytest.raises(ValueError, match="bad constraint '2:4@x'"):
        config.parse_target("2:4@x", "blocks/mlp/fc/kernel")


def test_gradual_sparsity_is_the_cubic_ramp_to_the_target():
    sparsity = {"a": 0.8, "b": "2:4"}
    ramps = [train.gradual_sparsity(sparsity, i, 4)["a"] for i in range(1, 5)]
    expected = [0.8 * (1 - (1 - i / 4) ** 3) for i in range(1, 5)]
    np.testing.assert_allclose(ramps, expected)
    assert ramps[-1] == pytest.approx(0.8) and all(np.diff(ramps) > 0)
    assert train.gradual_sparsity(sparsity, 1, 4)["b"] == "2:4"


def test_cli_refuses_an_image_model_before_any_work(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        lm.main(["--model", "lenet5", "--sparsity", "0.5", "--workdir", str(tmp_path / "w")])
    assert exc.value.code == 2
    assert "invalid choice: 'lenet5'" in capsys.readouterr().err
    assert not (tmp_path / "w").exists()


# --------------------------------------------------------------------------- runs


def _run(workdir: Path, **changes) -> dict:
    return train.run(_config(**changes), str(workdir), log=lambda line: None)


def _check_layers(params, dense, targets_per_kernel) -> None:
    """Every layer's slice of every kernel keeps exactly its own count (or N:M groups);
    embeddings, norms and biases are dense, the embeddings exactly as trained."""
    flat, dense_flat = _flat(params), _flat(dense)
    for name in KERNELS:
        w = flat[f"blocks/{name}/kernel"]
        assert w.shape[0] == TINY["layers"]
        for layer in w:
            target = targets_per_kernel(name)
            if isinstance(target, float):
                assert np.count_nonzero(layer) == layer.size - math.floor(target * layer.size)
            else:  # 2:4 along the inputs: (heads, head_dim) for out, the first axis else
                rows = layer.reshape(-1, layer.shape[-1]) if name == "attention/out" else (
                    layer.reshape(layer.shape[0], -1)
                )  # fmt: skip
                groups = (rows.reshape(-1, 4, rows.shape[-1]) != 0).sum(axis=1)
                assert (groups == 2).all()
    for path, value in flat.items():
        if not path.endswith("kernel") or not path.startswith("blocks/"):
            assert np.count_nonzero(value) == np.count_nonzero(dense_flat[path]), path


@pytest.mark.parametrize("sparsify", ["admm", "gradual"])
def test_pipeline_prunes_every_layer_to_its_own_budget(tmp_path, sparsify):
    summary = _run(tmp_path / "run", sparsify=sparsify)
    like = models.abstract_params("gpt", **config.model_kwargs(_config()))
    dense = load_pytree(tmp_path / "run" / "dense", like)
    pruned = load_pytree(tmp_path / "run" / "pruned", like)
    _check_layers(pruned, dense, lambda name: 0.7)
    assert summary["metric"] == "bits_per_char"
    for key in ("dense_bits_per_char", "hard_prune_bits_per_char", "pruned_bits_per_char"):
        assert 0 < summary[key] < 8, key  # 8 bits: a uniform guess over bytes
    assert set(summary["validation_bits_per_char"]) == {"dense", "hard_prune", "pruned"}
    assert summary["macs"] is None  # tokens, not images
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert len(history["admm"]) == TINY["admm_iterations"]
    if sparsify == "gradual":  # the ramp reaches the target at the last W-step
        assert history["admm"][-1]["ramp"] == pytest.approx(1.0)
    table = (tmp_path / "run" / "table.md").read_text()
    # The tiny config scores the first eval_subset bytes of each split, and says so.
    assert f"test bits per character (first {TINY['eval_subset']:,} examples)" in table


def test_pipeline_2_of_4_along_each_kernels_inputs(tmp_path):
    sparsity = {"blocks/attention/out/kernel": "2:4@0,1", "blocks/*/kernel": "2:4@0"}
    _run(tmp_path / "run", sparsity=sparsity, pretrain_steps=2)
    like = models.abstract_params("gpt", **config.model_kwargs(_config()))
    pruned = load_pytree(tmp_path / "run" / "pruned", like)
    dense = load_pytree(tmp_path / "run" / "dense", like)
    _check_layers(pruned, dense, lambda name: "2:4")


def test_same_seed_same_model(tmp_path):
    """Two runs of one config give the same bytes."""
    like = models.abstract_params("gpt", **config.model_kwargs(_config()))
    runs = []
    for name in ("a", "b"):
        _run(tmp_path / name, sparsify="gradual")
        runs.append(_flat(load_pytree(tmp_path / name / "pruned", like)))
    assert all(np.array_equal(runs[0][p], runs[1][p]) for p in runs[0])


def _worker(workdir: Path, kill_at: str | None) -> subprocess.CompletedProcess:
    return run_worker(WORKER, workdir, os.environ, kill_at, timeout=600)


@pytest.mark.slow
def test_killed_gradual_run_resumes_to_the_same_model(tmp_path):
    """SIGKILL in the middle of gradual pruning (its masks live in the optimizer state)
    while a checkpoint is being written, and before an output; the restart ends
    bit-identical. (The LeNet chain of test_fault_injection walks every kill point.)"""
    reference = _worker(tmp_path / "reference", None)
    assert reference.returncode == 0, reference.stderr[-3000:]
    workdir = tmp_path / "killed"
    # Saves every 2 steps: pretrain's saves 1-2, admm's 3-6 (W-steps of 2), then outputs.
    for kill_at in ("mid-write:4", "output:3"):
        killed = _worker(workdir, kill_at)
        assert killed.returncode == -9, (kill_at, killed.stderr[-3000:])
    final = _worker(workdir, None)
    assert final.returncode == 0, final.stderr[-3000:]
    assert "fell back" not in final.stderr
    like = models.abstract_params("gpt", **config.model_kwargs(_config()))
    a = _flat(load_pytree(tmp_path / "reference" / "pruned", like))
    b = _flat(load_pytree(workdir / "pruned", like))
    assert all(np.array_equal(a[p], b[p]) for p in a)
    sa = json.loads((tmp_path / "reference" / "summary.json").read_text())
    sb = json.loads((workdir / "summary.json").read_text())
    assert sa["pruned_bits_per_char"] == sb["pruned_bits_per_char"]

"""The MNIST pipeline with constraint specs: N:M, structured and quantized layers."""

from __future__ import annotations

import numpy as np
import pytest

from experiments import train


@pytest.mark.slow
def test_pipeline_with_constraint_specs(tmp_path, mnist_dir):
    cfg = train.Config(
        model="lenet300_100", data_dir=mnist_dir, train_subset=2048, batch_size=64,
        pretrain_steps=40, admm_iterations=2, admm_steps=10, retrain_steps=20,
        progress=False,
        sparsity={"fc1/kernel": "2:4", "fc2/kernel": "filters:0.5", "fc3/kernel": "quant:1"},
    )  # fmt: skip
    summary = train.run(cfg, str(tmp_path), log=lambda s: None)
    from admmjax.checkpoint import load_pytree
    from experiments import models

    _, like, _ = models.functional(models.create_model("lenet300_100", seed=0))
    p = load_pytree(str(tmp_path / "pruned"), like)
    fc1 = np.asarray(p["fc1"]["kernel"])  # (784, 300): 2 of every 4 inputs per output
    assert (np.count_nonzero(fc1.reshape(196, 4, 300), axis=1) <= 2).all()
    fc2 = np.asarray(p["fc2"]["kernel"])  # (300, 100): half the output columns are zero
    assert int((np.abs(fc2).sum(axis=0) > 0).sum()) <= 50
    fc3 = np.asarray(p["fc3"]["kernel"])  # ternary {-s, 0, s}, unchanged by retraining
    assert len(np.unique(np.abs(fc3))) <= 2
    assert summary["pruned_accuracy"] > 0.5


@pytest.mark.parametrize("spec", ["blah", "filters:1.5", "3:x", "sparsequant:0.9:3"])
def test_bad_constraint_specs_are_refused_naming_the_pattern(spec):
    cfg = train.Config(sparsity={"fc1/kernel": spec})
    with pytest.raises(ValueError, match=r"sparsity for 'fc1/kernel'"):
        cfg.validate()


@pytest.mark.slow
def test_global_allocation_keeps_the_total_budget_and_a_validation_split(tmp_path, mnist_dir):
    sparsity = {"fc1/kernel": 0.9, "fc2/kernel": 0.9, "fc3/kernel": 0.5}
    cfg = train.Config(
        model="lenet300_100", data_dir=mnist_dir, train_subset=2048, validation_size=512,
        batch_size=64, pretrain_steps=40, admm_iterations=2, admm_steps=10, retrain_steps=20,
        progress=False, sparsity=sparsity, allocation="global",
    )  # fmt: skip
    summary = train.run(cfg, str(tmp_path), log=lambda s: None)
    per_layer = {"fc1/kernel": 784 * 300, "fc2/kernel": 300 * 100, "fc3/kernel": 100 * 10}
    budget = sum(n - int(sparsity[p] * n) for p, n in per_layer.items())
    assert summary["nonzero"] == budget  # the same total as per-layer targets ...
    kept = {r["path"]: r["nonzero"] for r in summary["layers"]}
    assert kept != {p: n - int(sparsity[p] * n) for p, n in per_layer.items()}  # ... re-split
    val = summary["validation_accuracy"]
    assert set(val) == {"dense", "hard_prune", "pruned"} and all(0 < v <= 1 for v in val.values())


def test_validation_split_is_held_out_of_training(mnist_dir):
    from experiments.data import mnist as data

    full = data.ArraySource("mnist", mnist_dir, train_subset=1000)
    held = data.ArraySource("mnist", mnist_dir, train_subset=1000, validation_size=200)
    assert held.num_train == 800 and held.num_validation == 200
    np.testing.assert_array_equal(held.val_x, full.train_x[800:])
    with pytest.raises(ValueError, match="validation_size 1000 must be in"):
        data.ArraySource("mnist", mnist_dir, train_subset=1000, validation_size=1000)
    # eval_subset: the first N of each evaluation split (a smaller split whole).
    first = data.ArraySource(
        "mnist", mnist_dir, train_subset=1000, validation_size=200, eval_subset=300
    )
    assert (first.num_test, first.num_validation, first.num_train) == (300, 200, 800)
    np.testing.assert_array_equal(first.test_x, held.test_x[:300])
    assert sum(int(w.sum()) for *_, w in first.eval_batches(128)) == 300
    with pytest.raises(ValueError, match="eval_subset must be >= 0"):
        data.ArraySource("mnist", mnist_dir, eval_subset=-1)
    with pytest.raises(ValueError, match="allocation must be"):
        train.Config(sparsity={"fc1/kernel": 0.5}, allocation="both").validate()


def test_distillation_loss_is_t2_kl_with_no_teacher_gradient():
    import jax
    import jax.numpy as jnp

    rng = np.random.default_rng(0)
    s, t = rng.standard_normal((2, 8, 10)).astype(np.float32)
    temp = 3.0

    def softmax(z):
        e = np.exp(z - z.max(-1, keepdims=True))
        return e / e.sum(-1, keepdims=True)

    p, q = softmax(t / temp), softmax(s / temp)
    want = temp**2 * np.mean(np.sum(p * (np.log(p) - np.log(q)), -1))
    got = train.distillation_loss(jnp.asarray(s), jnp.asarray(t), temp)
    np.testing.assert_allclose(float(got), want, rtol=1e-5)
    assert float(train.distillation_loss(jnp.asarray(t), jnp.asarray(t), temp)) == pytest.approx(
        0.0, abs=1e-6
    )
    grad_t = jax.grad(lambda t_: train.distillation_loss(jnp.asarray(s), t_, temp))(jnp.asarray(t))
    assert not np.asarray(grad_t).any()


@pytest.mark.slow
def test_distillation_from_a_teacher_changes_admm_and_retraining_only(tmp_path, mnist_dir):
    import json

    base = dict(
        model="lenet300_100", data_dir=mnist_dir, train_subset=2048, batch_size=64,
        pretrain_steps=40, admm_iterations=2, admm_steps=10, retrain_steps=20, progress=False,
        sparsity={"fc1/kernel": 0.9, "fc2/kernel": 0.9, "fc3/kernel": 0.5}, log_every=5,
    )  # fmt: skip
    runs = {
        "plain": {},
        "weight 0": {"teacher": str(tmp_path / "plain"), "distill_weight": 0.0},
        "distilled": {"teacher": str(tmp_path / "plain"), "distill_weight": 0.7},
    }
    summaries, histories = {}, {}
    for name, extra in runs.items():
        workdir = tmp_path / name.replace(" ", "_")
        cfg = train.Config(**base, **extra)
        summaries[name] = train.run(cfg, str(workdir), log=lambda s: None)
        histories[name] = json.loads((workdir / "history.json").read_text())

    def losses(name, stage):
        return [loss for s, _, loss in histories[name]["loss"] if s == stage]

    # Pretraining is never distilled: identical dense models in all three runs.
    assert len({s["dense_accuracy"] for s in summaries.values()}) == 1
    assert losses("distilled", "pretrain") == losses("plain", "pretrain")
    # Weight 0 is exactly the undistilled loss; weight 0.7 changes ADMM and retraining.
    for stage in ("admm", "retrain"):
        assert losses("plain", stage)
        assert losses("weight 0", stage) == losses("plain", stage)
        assert losses("distilled", stage) != losses("plain", stage)
    assert summaries["distilled"]["nonzero"] == summaries["plain"]["nonzero"]


def test_fold_idle_needs_a_pretrained_lenet5(tmp_path):
    sparsity = {"fc1/kernel": 0.5}
    pretrained = str(tmp_path)
    with pytest.raises(ValueError, match=r"'lenet300_100' has no fold_idle .*: lenet5\)"):
        train.Config(sparsity=sparsity, fold_idle=True, pretrained=pretrained).validate()
    with pytest.raises(ValueError, match="fold_idle True needs pretrained, got pretrained None"):
        train.Config(model="lenet5", sparsity=sparsity, fold_idle=True).validate()
    cfg = train.Config(model="lenet5", sparsity=sparsity, fold_idle=True, pretrained=pretrained)
    cfg.validate()

"""The experiments.mnist command line: help text, and a clear error before any work for
every bad value. No training here except one tiny run on tfds mock data."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import jax.numpy as jnp
import pytest

from admmjax.checkpoint import Checkpointer
from experiments import command_line, mnist, train
from experiments import config as config_lib
from experiments.data import mnist as data

REPO = Path(__file__).resolve().parents[2]
BASE = ["--model", "lenet300_100", "--sparsity", "0.9", "--no-progress"]
UNITS = (
    "in epochs",
    "in optimizer steps",
    "in images",
    "in pixels",
    "in bytes",
    "in entries",
    "a count",
    "an integer",
    "a fraction",
    "dimensionless",
    "Frobenius",
    "> 0",
)


def usage_error(argv, capsys) -> str:
    """Runs the CLI, expects argparse's exit status 2, returns what it printed on stderr."""
    with pytest.raises(SystemExit) as exc:
        mnist.main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: python -m experiments.mnist")
    return err


# --------------------------------------------------------------------------- help


def test_help_explains_every_option_with_default_and_unit(capsys):
    with pytest.raises(SystemExit) as exc:
        mnist.main(["--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    # Every Config field is an option (progress is --no-progress), with the schema's help.
    options = config_lib.options()
    assert set(options) == {f.name for f in dataclasses.fields(train.Config)}
    parser = mnist.build_parser()
    actions = {a.dest: a for a in parser._actions if a.option_strings and a.dest != "help"}
    assert set(options) - {"progress"} <= set(actions)
    for dest, action in actions.items():
        assert action.option_strings[0] in text
        assert action.help, dest
        if dest == "workdir":
            assert "(required)" in action.help
            continue
        assert "[default: " in action.help, dest
    for name, option in options.items():
        if name == "progress":
            continue
        shown = option.default if option.default_text is None else option.default_text
        assert actions[name].help == f"{option.help} [default: {shown}]", name
        if option.type in (int, float):
            assert any(unit in actions[name].help for unit in UNITS), name
    for flag in ("--model", "--sparsity", "--config"):
        assert flag in text
    assert "Outputs in WORKDIR" in text and "table.md" in text


# --------------------------------------------------------------------------- bad values

BAD_OPTIONS = {
    "negative pretrain epochs": (["--pretrain-epochs", "-1"], "--pretrain-epochs: expected a"),
    "negative admm epochs": (["--admm-epochs", "-0.5"], "--admm-epochs: expected a"),
    "negative retrain epochs": (["--retrain-epochs", "-2"], "--retrain-epochs: expected a"),
    "negative steps": (["--admm-steps", "-3"], "--admm-steps: expected an integer >= 0"),
    "non-numeric epochs": (["--pretrain-epochs", "ten"], "invalid float value: 'ten'"),
    "sparsity 1": (["--sparsity", "1"], "not a fraction in [0, 1)"),
    "sparsity above 1": (["--sparsity", "1.5"], "not a fraction in [0, 1)"),
    "negative sparsity": (["--sparsity", "-0.1"], "not a fraction in [0, 1)"),
    "nan sparsity": (["--sparsity", "nan"], "not a fraction in [0, 1)"),
    "one layer at 1": (
        ["--sparsity", "fc1/kernel=0.96,fc2/kernel=1.0"],
        "1 for 'fc2/kernel' is not a fraction",
    ),
    "malformed sparsity": (["--sparsity", "fc1/kernel=0.9,fc2"], "bad value"),
    "repeated pattern": (["--sparsity", "fc1/kernel=0.9,fc1/kernel=0.8"], "given twice"),
    "pattern matching nothing": (
        ["--sparsity", "conv1/kernel=0.5"],
        "['conv1/kernel'] match no parameter path",
    ),
    "unknown model": (["--model", "resnet50"], "invalid choice: 'resnet50'"),
    "unknown dataset": (["--dataset", "mnistt"], "unknown dataset 'mnistt'"),
    "dataset not MNIST-like": (["--dataset", "cifar10"], "'cifar10' is not MNIST-like"),
    "unknown schedule": (["--admm-schedule", "linear"], "invalid choice: 'linear'"),
    "nan rho": (["--rho", "nan"], "--rho: expected a finite number >= 0"),
    "zero learning rate": (["--admm-lr", "0"], "--admm-lr: expected a finite number > 0"),
    "zero batch": (["--batch-size", "0"], "--batch-size: expected an integer > 0"),
    "dropout 1": (["--dropout", "1"], "--dropout: expected a fraction in [0, 1)"),
    "negative seed": (["--seed", "-1"], "--seed: expected an integer >= 0"),
    "too many devices": (["--devices", "99"], "devices must be in [0, "),
    "subset below one batch": (["--train-subset", "10"], "smaller than one batch"),
    "missing config": (["--config", "no/such/config.py"], "'no/such/config.py' is not a file"),
    "missing teacher": (["--teacher", "no/such/run"], "teacher 'no/such/run' does not exist"),
    "distill weight above 1": (
        ["--distill-weight", "1.5"],
        "--distill-weight: expected a fraction in [0, 1], got '1.5'",
    ),
    "zero temperature": (["--distill-temperature", "0"], "--distill-temperature: expected a"),
}


@pytest.mark.parametrize("extra, message", BAD_OPTIONS.values(), ids=BAD_OPTIONS.keys())
def test_bad_option_is_refused_before_any_work(extra, message, tmp_path, capsys, no_work):
    err = usage_error([*BASE, "--workdir", str(tmp_path / "run"), *extra], capsys)
    assert message in err
    assert not (tmp_path / "run").exists()


def test_missing_model_or_sparsity(tmp_path, capsys, no_work):
    workdir = ["--workdir", str(tmp_path)]
    assert "give --model or --config" in usage_error(workdir, capsys)
    assert "give --sparsity" in usage_error([*workdir, "--model", "lenet5"], capsys)


def test_bad_paths(tmp_path, capsys, no_work):
    a_file = tmp_path / "file"
    a_file.write_text("")
    missing = str(tmp_path / "missing")
    err = usage_error([*BASE, "--workdir", str(a_file)], capsys)
    assert "exists and is not a directory" in err
    run = ["--workdir", str(tmp_path / "run")]
    assert "is not a directory" in usage_error([*BASE, *run, "--data-dir", missing], capsys)
    assert "pretrained" in usage_error([*BASE, *run, "--pretrained", missing], capsys)


CONFIGS = {
    "no get_config": ("X = 1\n", "defines no get_config()"),
    "syntax error": ("def get_config(:\n", "running it failed: SyntaxError"),
    "not a dict": ("def get_config():\n    return [1]\n", "returned list, not a dict"),
    "unknown field": (
        "def get_config():\n    return {'model': 'lenet5', 'epochs': 3}\n",
        "unknown fields ['epochs']",
    ),
    "sparsity 1.2": (
        "def get_config():\n    return {'model': 'lenet5', 'sparsity': {'fc1/kernel': 1.2}}\n",
        "sparsity for 'fc1/kernel' is 1.2",
    ),
    "negative epochs": (
        "def get_config():\n"
        "    return {'model': 'lenet5', 'sparsity': {'fc1/kernel': 0.9}, 'retrain_epochs': -1}\n",
        "retrain_epochs must be a finite number >= 0",
    ),
    "unknown model": (
        "def get_config():\n    return {'model': 'vgg', 'sparsity': {'fc1/kernel': 0.9}}\n",
        "model must be one of 'alexnet', 'gpt', 'lenet300_100', 'lenet5', got 'vgg'",
    ),
}


@pytest.mark.parametrize("source, message", CONFIGS.values(), ids=CONFIGS.keys())
def test_bad_config_file(source, message, tmp_path, capsys, no_work):
    path = tmp_path / "config.py"
    path.write_text(source)
    err = usage_error(["--config", str(path), "--workdir", str(tmp_path / "run")], capsys)
    assert message in err


def test_shipped_configs_pass_the_checks(monkeypatch, tmp_path):
    """The configs in experiments/configs get to the run (which is stubbed out)."""
    started = []

    def fake_run(cfg, workdir):
        started.append(cfg)
        os.makedirs(workdir)
        Path(workdir, "table.md").write_text("| table |\n")
        return {}

    monkeypatch.setattr(train, "run", fake_run)
    from experiments.configs import command_spec, commands

    for config in sorted((REPO / "experiments" / "configs").glob("*/*.py")):
        for command in commands(str(config)):
            if command.startswith("python -m experiments.mnist"):  # ImageNet: test_imagenet.py
                spec = command_spec(command)
                mnist.main(["--config", spec, "--workdir", str(tmp_path / spec.replace("/", "_"))])
    # beyond/lenet5_targets.py:2to4, :structured, :quantized, paper/lenet300_100.py,
    # then paper/lenet5.py and paper/lenet5.py:paper_split
    assert [c.model for c in started] == ["lenet5"] * 3 + ["lenet300_100"] + ["lenet5"] * 2


# --------------------------------------------------------------------------- workdir


def _foreign_workdir(tmp_path: Path) -> Path:
    """A workdir holding a checkpoint of a LeNet-5 run (no training: a stub tree)."""
    workdir = tmp_path / "lenet5_run"
    cfg = train.Config(model="lenet5", sparsity={"fc1/kernel": 0.99})
    ckpt = Checkpointer(workdir / "checkpoints")
    ckpt.save(1, {"params": jnp.zeros(3)}, {"config": dataclasses.asdict(cfg), "stage": "admm"})
    ckpt.close()
    return workdir


def test_workdir_of_another_model_is_refused_before_loading_data(tmp_path, no_work):
    workdir = _foreign_workdir(tmp_path)
    refused = "model: saved 'lenet5' vs now 'lenet300_100'"
    with pytest.raises(command_line.WorkdirError, match=refused):
        mnist.main([*BASE, "--workdir", str(workdir)])
    # The same options as the saved run pass this check (and would resume it).
    command_line.check_workdir(train.Config(model="lenet5", sparsity={"fc1/kernel": 0.99}), workdir)


def test_workdir_of_another_model_through_the_command_line(tmp_path):
    workdir = _foreign_workdir(tmp_path)
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run(
        [sys.executable, "-m", "experiments.mnist", *BASE, "--workdir", str(workdir)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert "error: workdir" in proc.stderr
    assert "holds a checkpoint of a different run" in proc.stderr
    assert "model: saved 'lenet5' vs now 'lenet300_100'" in proc.stderr
    assert "Traceback" not in proc.stderr


# --------------------------------------------------------------------------- a tiny run


@pytest.mark.slow
def test_tiny_run_prints_the_summary_tables(tmp_path, monkeypatch, capsys):
    import tensorflow_datasets as tfds

    monkeypatch.setenv("ADMMJAX_CACHE", str(tmp_path / "cache"))  # never cache mock data
    data.clear_memo()
    argv = [
        "--model", "lenet300_100", "--dataset", "fashion_mnist", "--workdir", str(tmp_path / "run"),
        "--sparsity", "fc1/kernel=0.96,fc2/kernel=0.93,fc3/kernel=0.88",
        "--batch-size", "16", "--eval-batch-size", "32", "--pretrain-steps", "4",
        "--admm-iterations", "2", "--admm-steps", "2", "--retrain-steps", "2", "--no-progress",
    ]  # fmt: skip
    try:
        with tfds.testing.mock_data(num_examples=64, policy=tfds.testing.MockPolicy.USE_CODE):
            summary = mnist.main(argv)
    finally:
        data.clear_memo()
    out = capsys.readouterr().out
    assert "# lenet300_100 on fashion_mnist" in out
    assert "| dense |" in out and "| pruned and retrained |" in out
    assert "| layer | shape | weights | nonzero | kept % | compression |" in out
    assert "| fc1/kernel | 784x300 | 235,200 | 9,408 | 4.00% | 25.0x |" in out
    assert f"Outputs in {tmp_path / 'run'}" in out
    assert summary["nonzero"] == 11_628

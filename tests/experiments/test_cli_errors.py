"""Issue 22, defect 9: every bad command line or config value is a clear error (exit 2)
before any work and before the workdir is created. One case per defect; no training."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import pytest

from admmjax.checkpoint import save_pytree
from experiments import command_line, mnist, models, train

REPO = Path(__file__).resolve().parents[2]
BASE = ["--model", "lenet300_100", "--sparsity", "0.9", "--no-progress"]


def refused(argv: list[str], workdir: Path, capsys) -> str:
    """Runs the CLI; asserts exit status 2 and no workdir; returns its stderr."""
    with pytest.raises(SystemExit) as exc:
        mnist.main(argv)
    err = capsys.readouterr().err
    assert exc.value.code == 2, err
    assert "error: " in err and "Traceback" not in err
    assert not workdir.exists(), "the workdir was created before the error"
    return err


def _params_dir(tmp_path: Path, kind: str) -> str:
    """A --pretrained/--teacher directory that holds no LeNet-300-100 params."""
    path = tmp_path / kind
    path.mkdir()
    if kind == "junk":
        (path / "params.txt").write_text("not a checkpoint\n")
    elif kind == "lenet5_workdir":  # another model's finished run: its dense/ params
        like = models.abstract_params("lenet5")
        save_pytree(path / "dense", jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), like))
    return str(path)


def _config(tmp_path: Path, extra: str) -> list[str]:
    path = tmp_path / "config.py"
    path.write_text(
        "def get_config():\n"
        "    return {'model': 'lenet300_100', 'sparsity': {'fc1/kernel': 0.9}, "
        f"**{{{extra}}}}}\n"
    )
    return ["--config", str(path), "--no-progress"]


# (arguments, given tmp_path) -> argv, and the text the error must contain.
CASES = {
    "validation split leaves less than a batch": (
        lambda t: [*BASE, "--train-subset", "2000", "--validation-size", "1990"],
        "validation_size 1990 of the 2000 training images used leaves 10",
    ),
    "validation split of the whole training set": (
        lambda t: [*BASE, "--validation-size", "60000"],
        "validation_size 60000 of the 60000 training images used leaves 0",
    ),
    "train subset above the dataset": (
        lambda t: [*BASE, "--train-subset", "100000"],
        "train_subset 100000 is more than the 60000 training images of 'mnist'",
    ),
    "pretrained empty dir": (
        lambda t: [*BASE, "--pretrained", _params_dir(t, "empty")],
        "pretrained '{t}/empty' holds no params checkpoint",
    ),
    "pretrained junk dir": (
        lambda t: [*BASE, "--pretrained", _params_dir(t, "junk")],
        "pretrained '{t}/junk' holds no params checkpoint",
    ),
    "pretrained of another model": (
        lambda t: [*BASE, "--pretrained", _params_dir(t, "lenet5_workdir")],
        "pretrained '{t}/lenet5_workdir' holds params that are not 'lenet300_100''s",
    ),
    "teacher empty dir": (
        lambda t: [*BASE, "--teacher", _params_dir(t, "empty")],
        "teacher '{t}/empty' holds no params checkpoint",
    ),
    "teacher junk dir": (
        lambda t: [*BASE, "--teacher", _params_dir(t, "junk")],
        "teacher '{t}/junk' holds no params checkpoint",
    ),
    "teacher of another model": (
        lambda t: [*BASE, "--teacher", _params_dir(t, "lenet5_workdir")],
        "teacher '{t}/lenet5_workdir' holds params that are not 'lenet300_100''s",
    ),
    "data dir empty": (
        lambda t: [*BASE, "--data-dir", _params_dir(t, "empty")],
        "dataset 'mnist' is not prepared in data_dir '{t}/empty'",
    ),
    "alexnet on MNIST": (
        lambda t: ["--model", "alexnet", "--sparsity", "0.9"],
        "argument --model: invalid choice: 'alexnet'",
    ),
    "alexnet on MNIST from a config": (
        lambda t: _config(t, "'model': 'alexnet'"),
        "model 'alexnet' does not take MNIST's 28x28x1 images",
    ),
    "dropout on LeNet-300-100": (
        lambda t: [*BASE, "--dropout", "0.5"],
        "dropout 0.5: model 'lenet300_100' has no dropout option (models taking it: alexnet, "
        "gpt, lenet5)",
    ),
    "batch_size a string": (
        lambda t: _config(t, "'batch_size': '128'"),
        "batch_size must be an integer > 0, got '128'",
    ),
    "seed a float": (lambda t: _config(t, "'seed': 1.5"), "seed must be an integer >= 0, got 1.5"),
    "pretrain_lr None": (
        lambda t: _config(t, "'pretrain_lr': None"),
        "pretrain_lr must be a finite number > 0, got None",
    ),
    "admm_iterations a float": (
        lambda t: _config(t, "'admm_iterations': 2.5"),
        "admm_iterations must be an integer >= 0, got 2.5",
    ),
    "carry_masks a string": (
        lambda t: _config(t, "'carry_masks': 'no'"),
        "carry_masks must be true or false, got 'no'",
    ),
    "log_every a float": (
        lambda t: _config(t, "'log_every': 7.5"),
        "log_every must be an integer > 0, got 7.5",
    ),
    "process id without a process count": (
        lambda t: [*BASE, "--process-id", "1"],
        "--process-id 1 needs --num-processes",
    ),
}


@pytest.mark.parametrize("make_argv, message", CASES.values(), ids=CASES.keys())
def test_bad_value_is_refused_before_any_work(
    make_argv, message, tmp_path, capsys, no_work, mnist_dir, monkeypatch
):
    # The CLI's default data dir is $TFDS_DATA_DIR: the prepared MNIST whose training
    # size (60,000, read from its metadata) the size checks compare with.
    monkeypatch.setenv("TFDS_DATA_DIR", mnist_dir)
    workdir = tmp_path / "run"
    argv = [*make_argv(tmp_path), "--workdir", str(workdir)]
    err = refused(argv, workdir, capsys)
    assert message.format(t=tmp_path) in err


def test_empty_workdir_is_refused(tmp_path, capsys, no_work, monkeypatch):
    monkeypatch.chdir(tmp_path)  # "" would write into the current directory
    with pytest.raises(SystemExit) as exc:
        mnist.main([*BASE, "--workdir", ""])
    assert exc.value.code == 2
    assert "argument --workdir: expected a directory path, got ''" in capsys.readouterr().err
    assert os.listdir(tmp_path) == []


def test_unreachable_coordinator_times_out_naming_its_address(tmp_path):
    workdir = tmp_path / "run"
    argv = [*BASE, "--workdir", str(workdir), "--coordinator", "127.0.0.1:1"]
    argv += ["--num-processes", "2", "--process-id", "1", "--coordinator-timeout", "2"]
    proc = subprocess.run(
        [sys.executable, "-m", "experiments.mnist", *argv],
        cwd=REPO,
        env={**os.environ, "JAX_PLATFORMS": "cpu"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert "no coordinator answered at 127.0.0.1:1 within 2 s" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not workdir.exists()


def test_params_of_the_model_pass_the_check(tmp_path):
    """The same check accepts a workdir (its dense/) and a params directory of the model."""
    like = models.abstract_params("lenet300_100")
    save_pytree(tmp_path / "run" / "dense", jax.tree.map(lambda s: jnp.ones(s.shape), like))
    cfg = train.Config(sparsity={"fc1/kernel": 0.5}, pretrained=str(tmp_path / "run"))
    command_line.check_params_source(cfg, "pretrained")
    command_line.check_params_source(
        train.Config(sparsity={"fc1/kernel": 0.5}, teacher=str(tmp_path / "run" / "dense")),
        "teacher",
    )
    with pytest.raises(ValueError, match="not 'lenet5''s"):
        command_line.check_params_source(
            train.Config(model="lenet5", sparsity={"fc1/kernel": 0.5}, pretrained=cfg.pretrained),
            "pretrained",
        )

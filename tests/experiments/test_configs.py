"""experiments.configs: every old flat config is some new FILE.py:VARIANT, dict for dict;
the loader's errors; declared starting points resolve to repo-relative paths."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from experiments import configs, stages

REPO = Path(__file__).resolve().parents[2]
OLD = json.loads((REPO / "tests" / "experiments" / "fixtures" / "old_configs.json").read_text())

# Old file (git: experiments/configs/<name> before the package) -> its new spec.
NEW_SPEC = {
    "alexnet_weights.py": "paper/alexnet.py:weights",
    "alexnet_computation.py": "paper/alexnet.py:computation",
    "lenet300_100.py": "paper/lenet300_100.py",
    "lenet5.py": "paper/lenet5.py",
    "lenet5_paper_split.py": "paper/lenet5.py:paper_split",
    "lenet300_100_search.py": "beyond/lenet300_100_search.py",
    "lenet300_100_progressive.py": "beyond/lenet300_100_progressive.py",
    "lenet300_100_progressive60.py": "beyond/lenet300_100_progressive.py:60",
    "lenet300_100_val.py": "beyond/lenet300_100_val.py",
    **{
        f"lenet300_100_val_60x_{v}.py": f"beyond/lenet300_100_val.py:60x_{v}"
        for v in ("distill", "long", "long_retrain", "rho", "slow_rho", "slower_rho", "slowest_rho")
    },
    "lenet5_progressive.py": "beyond/lenet5_progressive.py",
    "lenet5_progressive250.py": "beyond/lenet5_progressive250.py",
    **{
        f"lenet5_progressive250_{v}.py": f"beyond/lenet5_progressive250.py:{v}"
        for v in ("fc1", "long", "units64_fc2", "units64_fold")
    },
    "lenet5_val.py": "beyond/lenet5_val.py",
    **{
        f"lenet5_val_250x_{v}.py": f"beyond/lenet5_val_250x.py:{v}"
        for v in (
            "chain",
            "conv1_10_fold",
            "distill",
            "fc1",
            "filters12_fold",
            "filters16_conv1_10_fold",
            "filters16_conv1_10_global",
            "filters16_fold",
            "filters24_fold",
            "global",
            "long_retrain",
            "selfdistill",
            "shift0",
            "units32_fold",
            "units64",
            "units64_fc2",
            "units64_fold",
        )
    },
    **{
        f"lenet5_{v}.py": f"beyond/lenet5_targets.py:{v}"
        for v in ("2to4", "structured", "quantized")
    },
}
CONFIG_FILES = sorted(
    p.relative_to(REPO / "experiments" / "configs").as_posix()
    for p in (REPO / "experiments" / "configs").glob("*/*.py")
    if p.name != "__init__.py"
)


def test_every_old_config_has_a_new_spec():
    assert sorted(NEW_SPEC) == sorted(OLD)
    assert len(CONFIG_FILES) <= 15


@pytest.mark.parametrize("old", sorted(OLD))
def test_new_spec_gives_the_old_configs_dict(old):
    new = configs.read(f"experiments/configs/{NEW_SPEC[old]}")
    assert json.loads(json.dumps(new)) == OLD[old]


@pytest.mark.parametrize("name", CONFIG_FILES)
def test_each_file_starts_with_the_commands_of_its_variants(name):
    """One command per variant at the top, naming this file; each loads, and one that
    writes under experiments/results/ writes where recipe references resolve."""
    commands = configs.commands(str(REPO / "experiments" / "configs" / name))
    assert commands, name
    for command in commands:
        spec = configs.command_spec(command)
        words = command.split()
        workdir = words[words.index("--workdir") + 1]
        path, arg = configs.split_spec(spec)
        assert path == f"experiments/configs/{name}", command
        assert configs.read(spec), spec
        if workdir.startswith("experiments/results/"):
            assert workdir == configs.results_dir(name.removesuffix(".py"), arg), command


def test_recipe_references_resolve_to_repo_relative_results_paths():
    ref = configs.recipe("beyond/lenet5_val_250x", "units64_fc2", "stage_1/pruned")
    assert ref == "recipe:beyond/lenet5_val_250x:units64_fc2#stage_1/pruned"
    assert configs.resolve({"a": [ref]}) == {
        "a": ["experiments/results/lenet5_val_250x_units64_fc2/stage_1/pruned"]
    }
    assert configs.resolve(configs.recipe("paper/lenet5")) == "experiments/results/lenet5"
    with pytest.raises(ValueError, match=r"no experiments/configs/paper/vgg\.py"):
        configs.resolve("recipe:paper/vgg#dense")
    with pytest.raises(ValueError, match="'recipe:paper/lenet5#a b' is not a recipe reference"):
        configs.resolve("recipe:paper/lenet5#a b")


def test_committed_starting_points_exist():
    """Every start a shipped config declares that the README quotes is in git."""
    cfg = stages.stage_configs(
        configs.read("experiments/configs/beyond/lenet5_progressive.py")
    )
    assert cfg[0].pretrained == "experiments/results/lenet5/pruned"
    assert os.path.isdir(REPO / cfg[0].pretrained)


def test_loader_errors_name_the_bad_value(tmp_path):
    with pytest.raises(ValueError, match="unknown variant 'nope'; this file has '', 'paper_split'"):
        configs.read("experiments/configs/paper/lenet5.py:nope")
    with pytest.raises(ValueError, match="unknown variant ''; this file has 'weights'"):
        configs.read("experiments/configs/paper/alexnet.py")
    with pytest.raises(ValueError, match=r"'missing\.py' is not a file"):
        configs.read("missing.py:x")
    path = tmp_path / "c.py"
    path.write_text("def get_config():\n    return [1]\n")
    with pytest.raises(ValueError, match="returned list, not a dict"):
        configs.read(str(path))
    path.write_text("def get_config():\n    return {'rho': 1.0, 'colour': 2}\n")
    with pytest.raises(ValueError, match=r"sets unknown fields \['colour'\]"):
        configs.load(str(path))


def test_read_returns_a_fresh_copy():
    """What read returns is a fresh copy: a caller editing it cannot change the next."""
    spec = "experiments/configs/beyond/lenet5_val_250x.py:fc1"  # its split is a module constant
    first = configs.read(spec)
    first["stages"][-1]["sparsity"]["fc1/kernel"] = 0.5
    assert configs.read(spec)["stages"][-1]["sparsity"]["fc1/kernel"] == 0.99775

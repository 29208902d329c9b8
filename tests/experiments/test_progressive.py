"""Progressive ADMM on real MNIST: stages prune further and keep earlier zeros."""

from __future__ import annotations

import json
import os
import re

import jax
import numpy as np
import pytest

import admmjax
from admmjax.checkpoint import load_pytree
from experiments import models, stages, train
from experiments.configs import PREVIOUS_STAGE
from experiments.configs import read as read_config_file

QUICK = {
    "model": "lenet300_100",
    "train_subset": 2048,
    "batch_size": 64,
    "pretrain_steps": 40,
    "admm_iterations": 2,
    "admm_steps": 10,
    "retrain_steps": 20,
    "progress": False,
}


def _spec(mnist_dir: str) -> dict:
    return {
        "base": {**QUICK, "data_dir": mnist_dir},
        "stages": [
            {"sparsity": {"fc1/kernel": 0.8, "fc2/kernel": 0.5}},
            {
                "sparsity": {"fc1/kernel": 0.95, "fc2/kernel": 0.7},
                "rho": 5e-3,
                "teacher": PREVIOUS_STAGE,
            },
        ],
    }


def _pruned(path) -> dict[str, np.ndarray]:
    _, like, _ = models.functional(models.create_model("lenet300_100", seed=0))
    params = load_pytree(str(path), like)
    leaves = jax.tree_util.tree_flatten_with_path(params)[0]
    return {jax.tree_util.keystr(p, simple=True, separator="/"): np.asarray(v) for p, v in leaves}


@pytest.mark.slow
def test_two_stages_prune_further_and_carry_zeros(tmp_path, mnist_dir):
    summaries = stages.run(_spec(mnist_dir), str(tmp_path), log=lambda s: None)
    first, second = (_pruned(tmp_path / f"stage_{k}" / "pruned") for k in (1, 2))
    n1, n2 = first["fc1/kernel"].size, first["fc2/kernel"].size
    assert np.count_nonzero(first["fc1/kernel"]) == n1 - int(0.8 * n1)
    assert np.count_nonzero(second["fc1/kernel"]) == n1 - int(0.95 * n1)
    assert np.count_nonzero(second["fc2/kernel"]) == n2 - int(0.7 * n2)
    for path in ("fc1/kernel", "fc2/kernel"):
        # Every weight pruned in stage 1 is still exactly zero after stage 2.
        assert not np.any(second[path][first[path] == 0])
    assert summaries[1]["compression"] > summaries[0]["compression"]
    assert summaries[1]["config"]["carry_masks"] is True
    assert summaries[1]["config"]["rho"] == 5e-3
    # The second stage distilled from the model it started from.
    assert summaries[0]["config"]["teacher"] is None
    assert summaries[1]["config"]["teacher"] == str(tmp_path / "stage_1" / "pruned")
    doc = json.loads((tmp_path / "progressive.json").read_text())
    assert [r["stage"] for r in doc["stages"]] == [1, 2]
    assert (tmp_path / "progressive.md").read_text().count("\n") == 4


def test_carry_masks_keeps_zeros_through_the_admm_w_step():
    _, params, _ = models.functional(models.create_model("lenet300_100", seed=0))
    targets = admmjax.sparsity_by_path(params, {"fc1/kernel": 0.5})
    pruned, _ = admmjax.prune(params, targets)
    masks = train.nonzero_masks(pruned, targets)
    assert masks["fc2"]["kernel"] is None
    assert int(masks["fc1"]["kernel"].sum()) == np.count_nonzero(pruned["fc1"]["kernel"])


def test_stages_that_prune_less_are_refused(mnist_dir):
    spec = _spec(mnist_dir)
    spec["stages"][1]["sparsity"]["fc2/kernel"] = 0.3
    with pytest.raises(ValueError, match=r"stage 2: sparsity of 'fc2/kernel' is 0.3"):
        stages.stage_configs(spec)
    with pytest.raises(ValueError, match="unknown Config fields"):
        stages.stage_configs({"stages": [{"sparsity": {"fc1/kernel": 0.5}, "lr": 1}]})


def test_previous_stage_teacher_needs_an_earlier_stage(mnist_dir):
    spec = _spec(mnist_dir)
    configs = stages.stage_configs(spec)
    assert configs[1].teacher == PREVIOUS_STAGE  # resolved by run()
    spec["stages"][0]["teacher"] = PREVIOUS_STAGE
    with pytest.raises(ValueError, match="stage 1: teacher 'previous_stage' needs an earlier"):
        stages.stage_configs(spec)


def test_a_stage_may_change_the_constraint_kind(mnist_dir):
    # Whole units first, then a weight count inside them: the kinds are not compared.
    spec = _spec(mnist_dir)
    spec["stages"][0]["sparsity"]["fc1/kernel"] = "filters:0.5"
    configs = stages.stage_configs(spec)
    assert configs[0].sparsity["fc1/kernel"] == "filters:0.5"
    assert configs[1].sparsity["fc1/kernel"] == spec["stages"][1]["sparsity"]["fc1/kernel"]


@pytest.mark.parametrize("name", ["lenet5_progressive", "lenet300_100_progressive"])
def test_shipped_progressive_configs_are_valid(name):
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / f"experiments/configs/beyond/{name}.py"
    assert "experiments.progressive" in path.read_text().splitlines()[0]
    configs = stages.stage_configs(read_config_file(str(path)))
    assert [c.carry_masks for c in configs] == [True, True]
    assert os.path.isdir(configs[0].pretrained)  # starts from a committed pruned model


def test_every_shipped_progressive_config_parses():
    from pathlib import Path

    from experiments.configs import command_spec, commands

    folder = Path(__file__).resolve().parents[2] / "experiments/configs"
    lines = [c for p in sorted(folder.glob("*/*.py")) for c in commands(str(p))]
    specs = [command_spec(c) for c in lines if c.startswith("python -m experiments.progressive")]
    assert len(specs) >= 20
    for spec in specs:
        assert stages.stage_configs(read_config_file(spec)), spec


def test_rerun_last_stage_keeps_the_base_and_changes_only_the_last_stage():
    from experiments.configs import rerun_last_stage

    spec = {
        "base": {"model": "lenet300_100", "rho": 1e-3},
        "stages": [{"sparsity": {"fc1/kernel": 0.9}}, {"sparsity": {"fc1/kernel": 0.95}}],
    }
    out = rerun_last_stage(spec, "some/stage_1/pruned", admm_iterations=20)
    assert out == {
        "base": {"model": "lenet300_100", "rho": 1e-3, "pretrained": "some/stage_1/pruned"},
        "stages": [{"sparsity": {"fc1/kernel": 0.95}, "admm_iterations": 20}],
    }
    assert spec["stages"][-1] == {"sparsity": {"fc1/kernel": 0.95}}  # not mutated


# Concentration configs: name -> whole slices their first stage keeps per kernel.
CONCENTRATED = {
    "units64_fc2": {"fc1/kernel": 64},
    "units32_fold": {"fc1/kernel": 32},
    "filters24_fold": {"conv2/kernel": 24, "fc1/kernel": 64},
    "filters16_fold": {"conv2/kernel": 16, "fc1/kernel": 64},
    "filters12_fold": {"conv2/kernel": 12, "fc1/kernel": 64},
    "conv1_10_fold": {"conv1/kernel": 10, "conv2/kernel": 24, "fc1/kernel": 64},
    "filters16_conv1_10_fold": {
        "conv1/kernel": 10,
        "conv2/kernel": 16,
        "fc1/kernel": 64,
    },
}


@pytest.mark.parametrize("name, kept", CONCENTRATED.items(), ids=CONCENTRATED.keys())
def test_concentration_configs_keep_the_counts_their_names_say(name, kept):
    """The fraction a config writes floors to exactly the slice count in its name."""
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "experiments/configs/beyond/lenet5_val_250x.py"
    first, last = stages.stage_configs(read_config_file(f"{path}:{name}"))
    shapes = {
        "conv1/kernel": (5, 5, 1, 20),
        "conv2/kernel": (5, 5, 20, 50),
        "fc1/kernel": (800, 500),
        "fc2/kernel": (500, 10),
    }
    structured = {p: v for p, v in first.sparsity.items() if isinstance(v, str)}
    assert set(structured) == set(kept)
    for pattern, n in kept.items():
        target = train.parse_target(structured[pattern], pattern)
        assert isinstance(target, admmjax.Structured)
        assert target.num_kept(shapes[pattern]) == n, pattern
    # The 250x stage: 1,720 weights, masks carried, no structured constraint left.
    assert not first.carry_masks and last.carry_masks
    assert all(isinstance(v, float) for v in last.sparsity.values())
    assert sum(round((1 - last.sparsity[p]) * np.prod(s)) for p, s in shapes.items()) == 1720
    assert last.fold_idle == (name != "units64_fc2")


def test_keep_whole_keeps_exactly_that_many_slices_for_every_count():
    """Every count of a LeNet-5 kernel's slices, through parse_target and Structured."""
    for total, shape in ((20, (5, 5, 1, 20)), (50, (5, 5, 20, 50)), (500, (800, 500))):
        for kept in range(1, total + 1):
            spec = train.keep_whole("filters", kept, total)
            assert train.parse_target(spec).num_kept(shape) == kept, spec
    assert train.keep_whole("rows", 64, 500) == "rows:0.872"


@pytest.mark.parametrize(
    "args, message",
    [
        (("units", 4, 10), "kind is 'units'"),
        (("filters", 0, 10), "kept is 0; expected 1 to total (10)"),
        (("filters", 11, 10), "kept is 11"),
    ],
)
def test_keep_whole_refuses_bad_input(args, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        train.keep_whole(*args)

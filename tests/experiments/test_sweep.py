"""Recipes x seeds on real MNIST: runs land where the sweep says, resume, and one is chosen
on validation by the documented rule."""

from __future__ import annotations

import json

import pytest

from experiments import stages, sweep, train

QUICK = {
    "model": "lenet300_100",
    "train_subset": 2048,
    "validation_size": 512,
    "batch_size": 64,
    "pretrain_steps": 30,
    "admm_iterations": 2,
    "admm_steps": 10,
    "retrain_steps": 15,
    "progress": False,
    # One device in this process too (it has 4 virtual ones; a subprocess has 1): the
    # same computation, not a 4-way data-parallel reduction order against a 1-way one.
    "devices": 1,
}


def _write_config(path, mnist_dir: str, **changes) -> str:
    spec = {
        "base": {**QUICK, "data_dir": mnist_dir, **changes},
        "stages": [{"sparsity": {"fc1/kernel": 0.9, "fc2/kernel": 0.5}}],
    }
    path.write_text(f"def get_config():\n    return {spec!r}\n")
    return str(path)


@pytest.mark.slow
def test_sweep_runs_every_recipe_and_seed_and_chooses_on_validation(tmp_path, mnist_dir):
    a = _write_config(tmp_path / "a.py", mnist_dir)
    b = _write_config(tmp_path / "b.py", mnist_dir, rho=1e-2)
    work = tmp_path / "sweep"
    argv = ["--config", f"low={a}", "--config", f"high={b}", "--seeds", "3", "5"]
    doc = sweep.main([*argv, "--workdir", str(work)])
    assert [(r["recipe"], r["seed"]) for r in doc["runs"]] == [
        ("low", 3), ("high", 3), ("low", 5), ("high", 5),
    ]  # fmt: skip
    for r in doc["runs"]:
        stage = json.loads(
            (work / r["recipe"] / f"seed_{r['seed']}" / "progressive.json").read_text()
        )
        assert stage["summaries"][0]["seed"] == r["seed"]
        expected_rho = 1e-2 if r["recipe"] == "high" else train.Config.rho
        assert stage["summaries"][0]["config"]["rho"] == expected_rho
        assert 0.5 < r["validation"] <= 1 and 0.5 < r["test"] <= 1
    # Two seeds of one recipe are two different runs.
    low = [r for r in doc["runs"] if r["recipe"] == "low"]
    assert (low[0]["validation"], low[0]["test"]) != (low[1]["validation"], low[1]["test"])
    best = max(r["validation"] for r in doc["runs"])
    assert doc["chosen"]["validation"] == best
    assert doc["recipes"]["low"]["runs"] == 2
    saved = json.loads((work / "sweep.json").read_text())
    assert saved["chosen"] == doc["chosen"] and saved["rule"] == sweep.SELECTION_RULE
    table = (work / "sweep.md").read_text()
    assert table.count("(chosen)") == 1 and f"seed {doc['chosen']['seed']}**" in table
    # Finished runs are read, not run again: the same command returns the same report.
    before = (work / "low" / "seed_3" / "progressive.json").stat().st_mtime_ns
    again = sweep.main([*argv, "--workdir", str(work)])
    assert again["chosen"] == doc["chosen"]
    assert (work / "low" / "seed_3" / "progressive.json").stat().st_mtime_ns == before
    # --report lists a seed not run yet as not finished and chooses among the others.
    report = sweep.main([*argv, "7", "--workdir", str(work), "--report"])
    assert report["chosen"] == doc["chosen"] and not (work / "low" / "seed_7").exists()
    assert (work / "sweep.md").read_text().count("not finished") == 2


@pytest.mark.slow
def test_subprocess_jobs_match_the_in_process_run(tmp_path, mnist_dir):
    cfg = _write_config(tmp_path / "r.py", mnist_dir)
    recipes = sweep.load_recipes([cfg])
    inline = sweep.run(recipes, [1], str(tmp_path / "inline"), log=lambda s: None)
    jobs = sweep.run(recipes, [1, 2], str(tmp_path / "jobs"), jobs=2, log=lambda s: None)
    assert [r["seed"] for r in jobs["runs"]] == [1, 2]
    assert (tmp_path / "jobs" / "r" / "seed_2" / "log.txt").is_file()
    # Same seed, same result, whether run in this process or in a subprocess.
    for key in ("validation", "test", "nonzero"):
        assert jobs["runs"][0][key] == inline["runs"][0][key]


def test_selection_rule_breaks_ties_by_recipe_mean_then_order_then_seed():
    def run(recipe, seed, val):
        return {"recipe": recipe, "seed": seed, "validation": val, "test": 0.5}

    runs = [run("a", 1, 0.90), run("b", 1, 0.95), run("a", 2, 0.95), run("b", 2, 0.80)]
    # a and b both reach 0.95; a's mean (0.925) beats b's (0.875).
    assert sweep.summarise(runs, ["a", "b"])["chosen"] == runs[2]
    runs = [run("a", 1, 0.95), run("b", 1, 0.95), run("a", 2, 0.95), run("b", 2, 0.95)]
    assert sweep.summarise(runs, ["b", "a"])["chosen"] == runs[1]  # b named first, seed 1
    summary = sweep.summarise([run("a", 1, 0.9), {"recipe": "a", "seed": 2}], ["a"])
    assert summary["recipes"]["a"]["runs"] == 1  # unfinished runs are left out
    with pytest.raises(ValueError, match="a seed 1"):
        sweep.summarise([{"recipe": "a", "seed": 1, "validation": None, "test": 0.9}], ["a"])


def test_bad_input_is_refused_with_the_value(tmp_path, mnist_dir, capsys):
    no_val = _write_config(tmp_path / "noval.py", mnist_dir, validation_size=0)
    with pytest.raises(ValueError, match=r"'noval'.*validation_size = 0"):
        sweep.load_recipes([no_val])
    ok = _write_config(tmp_path / "ok.py", mnist_dir)
    with pytest.raises(ValueError, match="two recipes are named 'ok'"):
        sweep.load_recipes([ok, ok])
    with pytest.raises(ValueError, match="expected NAME=PATH"):
        sweep.parse_recipe("name=")
    with pytest.raises(ValueError, match=r"seeds must differ, got \[1, 1\]"):
        sweep.check_seeds([1, 1])
    with pytest.raises(ValueError, match=r"seed must be an integer >= 0, got -2"):
        sweep.check_seeds([-2])
    with pytest.raises(SystemExit):
        sweep.main(["--config", ok, "--seeds", "1", "--workdir", str(tmp_path), "--jobs", "0"])
    assert "--jobs must be >= 1, got 0" in capsys.readouterr().err
    with pytest.raises(ValueError, match="seed must be an integer >= 0, got -1"):
        stages.with_seed({"stages": [{}]}, -1)


def test_with_seed_replaces_every_stage_seed():
    spec = {"base": {"seed": 0, "rho": 1.0}, "stages": [{"seed": 4}, {"rho": 2.0}]}
    out = stages.with_seed(spec, 7)
    assert out["base"] == {"seed": 7, "rho": 1.0}
    assert out["stages"] == [{}, {"rho": 2.0}]
    assert spec["stages"][0] == {"seed": 4}  # the caller's spec is left as it was

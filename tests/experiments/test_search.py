"""The per-layer budget search: probes judged on validation, the test set never used."""

from __future__ import annotations

import json

import pytest

from experiments import search

RUN = {
    "model": "lenet300_100",
    "train_subset": 2048,
    "validation_size": 512,
    "batch_size": 64,
    "pretrain_steps": 60,
    "admm_iterations": 2,
    "admm_steps": 10,
    "retrain_steps": 20,
    "progress": False,
}
BASE = {"fc1/kernel": 0.9, "fc2/kernel": 0.8, "fc3/kernel": 0.5}


@pytest.mark.slow
def test_binary_search_over_compression(tmp_path, mnist_dir):
    spec = {"run": {**RUN, "data_dir": mnist_dir}, "base_sparsity": BASE, "low": 2.0,
            "high": 200.0, "probes": 2, "tolerance": 0.02}  # fmt: skip
    result = search.run(spec, str(tmp_path), log=lambda s: None)
    first, second = result["probes"]
    assert first["target"] == 20.0 and first["compression"] == pytest.approx(20.0, rel=1e-3)
    # The second probe bisects (in log space) the half the first one's verdict leaves.
    assert second["target"] == (63.2 if first["passed"] else 6.3)
    # The proportions between layers are those of BASE at every probe.
    for p in (first, second):
        assert p["validation_pruned"] <= 1 and p["validation_dense"] > 0.5
    assert json.loads((tmp_path / "search.json").read_text())["probes"][0]["target"] == 20.0
    # Every probe after the first starts from the first probe's dense model.
    cfg = json.loads((tmp_path / f"probe_{second['target']:g}x" / "config.json").read_text())
    assert cfg["pretrained"].endswith("probe_20x/dense")


def test_a_search_without_validation_split_is_refused():
    spec = {"run": {**RUN, "validation_size": 0}, "base_sparsity": BASE, "low": 2,
            "high": 50, "probes": 1, "tolerance": 0.0}  # fmt: skip
    with pytest.raises(ValueError, match="validation_size > 0"):
        search.check_spec(spec)
    with pytest.raises(ValueError, match="1 < low < high"):
        search.check_spec({**spec, "low": 60})


def test_shipped_search_config_is_valid():
    from pathlib import Path

    from experiments.configs import read as read_config_file

    path = Path(__file__).resolve().parents[2] / "experiments/configs/beyond/lenet300_100_search.py"
    assert "experiments.search" in path.read_text().splitlines()[0]
    cfg = search.check_spec(read_config_file(str(path)))
    assert cfg.model == "lenet300_100" and cfg.validation_size == 5000

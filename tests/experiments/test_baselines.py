"""Per-layer budgets of the baselines sweep: same proportions, exact compression."""

from __future__ import annotations

import numpy as np
import pytest

import admmjax
from experiments import baselines, config
from experiments.schema import ConfigError


def test_scaled_sparsity_reaches_the_compression_with_the_base_proportions():
    params = {"a": np.zeros((100, 100)), "b": np.zeros((50, 20)), "c": np.zeros(10)}
    base = {"a": 0.9, "b": 0.5}  # kept 10% and 50%: b keeps 5x the fraction a keeps
    out = config.scaled_sparsity(params, base, 50.0)
    kept = {p: 1 - s for p, s in out.items()}
    assert kept["b"] / kept["a"] == pytest.approx(5.0)
    targets = admmjax.sparsity_by_path(params, out)
    assert admmjax.sparsity_report(params, targets).weights == 11_000
    assert 11_000 / (kept["a"] * 10_000 + kept["b"] * 1_000) == pytest.approx(50.0)


def test_a_layer_never_keeps_more_than_all_its_weights():
    params = {"a": np.zeros((100, 100)), "b": np.zeros((10, 10))}
    out = config.scaled_sparsity(params, {"a": 0.99, "b": 0.5}, 2.0)
    assert out["b"] == 0.0  # capped at keeping everything; a takes the rest
    assert (1 - out["a"]) * 10_000 + 100 == pytest.approx(10_100 / 2)
    with pytest.raises(ValueError, match="compression must be > 1"):
        config.scaled_sparsity(params, {"a": 0.5}, 1.0)


def test_budget_options_are_checked_by_their_schema(capsys):
    baselines.Budget().validate()  # the defaults hold
    with pytest.raises(ConfigError, match=r"rounds must be an integer >= 1, got 2\.5"):
        baselines.Budget(rounds=2.5).validate()
    with pytest.raises(ConfigError, match=r"admm_fraction must be .*in \(0, 1\), got 1"):
        baselines.Budget(admm_fraction=1.0).validate()
    with pytest.raises(SystemExit):
        baselines.main(["--model", "lenet5", "--compressions", "10", "--epochs", "0"])
    assert "--epochs: expected a finite number > 0, got '0'" in capsys.readouterr().err

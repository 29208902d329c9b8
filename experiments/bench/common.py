"""Helpers shared by the training benchmarks: the real pipeline, and A/B timing.

The benchmarks time what ``python -m experiments.mnist`` runs: they build an
:class:`experiments.train.Pipeline` from a config file in ``experiments/configs/``
(same data, loss function with on-device ``to_float`` and augmentation, optax
transforms per stage, mesh placement of the batches) and call its jitted step the
way :func:`experiments.train.run_stage` does.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # run as a script: make `admmjax`, `experiments` importable
    sys.path.insert(0, str(REPO))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

import admmjax  # noqa: E402
from experiments import train  # noqa: E402
from experiments.configs import load as load_config_file  # noqa: E402

CONFIGS = {
    "lenet300_100": REPO / "experiments" / "configs" / "paper" / "lenet300_100.py",
    "lenet5": REPO / "experiments" / "configs" / "paper" / "lenet5.py",
}
#: Language-model configs a benchmark may add to :data:`CONFIGS` (they read the KJV
#: text from its default directory, not ``--data-dir``).
LM_CONFIGS = {
    "gpt_kjv": REPO / "experiments" / "configs" / "beyond" / "gpt_kjv.py",
}


def add_model_options(
    parser: argparse.ArgumentParser, what: str, configs: dict[str, Path] = CONFIGS
) -> None:
    """``--models`` (names of ``configs``, all by default) and ``--data-dir``."""
    parser.add_argument(
        "--models",
        default=",".join(configs),
        help=f"comma-separated models {what} [default: {','.join(configs)}]",
    )
    parser.add_argument(
        "--data-dir",
        default=None,
        help="TFDS data dir holding mnist/3.0.1 [default: $TFDS_DATA_DIR, else ../shared/tfds]",
    )


def chosen_models(
    parser: argparse.ArgumentParser, models: str, configs: dict[str, Path] = CONFIGS
) -> list[str]:
    """The ``--models`` list, each checked against ``configs`` (a parser error if not)."""
    names = [m.strip() for m in models.split(",") if m.strip()]
    for m in names:
        if m not in configs:
            parser.error(f"unknown model {m!r}; choose from {', '.join(configs)}")
    return names


def default_data_dir() -> str:
    """``$TFDS_DATA_DIR``, else ``../shared/tfds`` next to the repository (as the README)."""
    return os.environ.get("TFDS_DATA_DIR") or str(REPO.parent / "shared" / "tfds")


def make_pipeline(model: str, data_dir: str, **overrides: Any) -> train.Pipeline:
    """The Pipeline of ``model``'s config file, ``overrides`` applied.

    ``model`` names a file of :data:`CONFIGS` or :data:`LM_CONFIGS`.
    Image models read MNIST from ``data_dir``; language models their text from its
    default directory. Progress bars are off; the workdir is a temporary path that is
    never written (only ``Pipeline.run`` writes into it).
    """
    if model in LM_CONFIGS:
        values = load_config_file(str(LM_CONFIGS[model]))
    else:
        values = load_config_file(str(CONFIGS[model]))
        values.update(data_dir=data_dir)
    values.update(progress=False, **overrides)
    cfg = train.Config(**values)
    return train.Pipeline(cfg, tempfile.gettempdir(), log=lambda msg: None)


def device_batches(pipe: train.Pipeline, count: int) -> list[tuple[int, jax.Array, jax.Array]]:
    """The first ``count`` (step, x, y) batches of pretraining, already on the mesh."""
    out = []
    for item in pipe.batches("pretrain", 0):
        out.append(item)
        if len(out) == count:
            break
    return jax.block_until_ready(out)


def donating_step(pipe: train.Pipeline, tx: Any) -> tuple[Callable[..., Any], list[Any]]:
    """The jitted step and a fresh ``[params, opt_state]``, as ``run_stage`` uses them.

    The step donates params and optimizer state to its outputs (``run_stage``'s
    setting), so it starts from a copy of ``pipe.init_params``: those arrays survive,
    and two variants never share buffers.
    """
    params = jax.tree.map(jnp.copy, pipe.init_params)
    step = admmjax.make_train_step(pipe.loss_fn, tx, donate=True)
    return step, [params, pipe.replicate(tx.init(params))]


def run_steps(
    step_fn: Callable[..., Any],
    state: list[Any],
    batches: Iterator[tuple[int, jax.Array, jax.Array]],
    steps: int,
    key: jax.Array,
    admm_state: Any = None,
) -> float:
    """``steps`` training steps as ``run_stage`` does them; returns the wall seconds.

    ``state`` is ``[params, opt_state]`` and is updated in place. Each step folds the
    step index into ``key`` for the step's random key, as ``run_stage`` does, and
    the last loss is waited for before the clock stops.
    """
    params, opt_state = state
    loss = None
    t0 = time.perf_counter()
    for _ in range(steps):
        step, x, y = next(batches)
        rng = train.step_key(key, step)
        params, opt_state, loss = step_fn(params, opt_state, x, y, rng, admm_state=admm_state)
    jax.block_until_ready((params, loss))
    elapsed = time.perf_counter() - t0
    state[0], state[1] = params, opt_state
    return elapsed


def interleaved(runs: dict[str, Callable[[], float]], repeats: int) -> dict[str, list[float]]:
    """Calls every run ``repeats`` times, alternating the order (A B, B A, ...).

    Each callable returns the seconds it measured. Alternating cancels slow drifts
    in the machine's load (other jobs on a shared CPU) between the variants.
    """
    names = list(runs)
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        for name in names if r % 2 == 0 else names[::-1]:
            times[name].append(runs[name]())
    return times


def ratio_stats(num: list[float], den: list[float]) -> dict[str, float]:
    """``num / den``: ratio of medians, median of paired ratios, and their extremes."""
    paired = [a / b for a, b in zip(num, den, strict=True)]
    return {
        "ratio_of_medians": statistics.median(num) / statistics.median(den),
        "median_paired_ratio": statistics.median(paired),
        "min_paired_ratio": min(paired),
        "max_paired_ratio": max(paired),
    }

"""CLI: rebuild a structurally pruned LeNet-5 as a smaller dense network, check it on MNIST.

Writes ``smaller_model.json`` into the run (shapes, parameter counts, test accuracy of
both, the largest logit difference, idle weights). The maths is in
:mod:`experiments.analysis.shrink`.

    python -m experiments.shrink experiments/results/lenet5_targets_structured
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from experiments import workdir as workdir_lib
from experiments.analysis.shrink import count, lenet5_forward, shapes, shrink_lenet5
from experiments.data import mnist as data_lib
from experiments.kernels import configure_cpu
from experiments.models.lenet import idle_weights


def main(argv: list[str] | None = None) -> dict[str, Any]:
    configure_cpu()  # before JAX starts its backend: XLA reads XLA_FLAGS then
    parser = argparse.ArgumentParser(
        prog="python -m experiments.shrink", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("workdir", help="a finished LeNet-5 run (its pruned/)")
    args = parser.parse_args(argv)

    try:
        cfg, params = workdir_lib.load_params(args.workdir)
    except ValueError as err:
        parser.error(str(err))
    if cfg.model != "lenet5":
        parser.error(f"{args.workdir} holds a {cfg.model} run; shrink rebuilds LeNet-5 only")
    full = {k: {n: np.asarray(v) for n, v in params[k].items()} for k in params}
    small = shrink_lenet5(full)
    x, y = data_lib.load_split("mnist", "test")
    xf = data_lib.to_float(x)
    logits_full = jax.jit(lenet5_forward)(full, xf)
    logits_small = jax.jit(lenet5_forward)(small, xf)
    result = {
        "dense_shapes": shapes(full),
        "smaller_shapes": shapes(small),
        "dense_params": count(full),
        "smaller_params": count(small),
        "test_accuracy_smaller": float(jnp.mean(jnp.argmax(logits_small, -1) == y)),
        "test_accuracy_pruned": float(jnp.mean(jnp.argmax(logits_full, -1) == y)),
        "max_abs_logit_difference": float(jnp.max(jnp.abs(logits_full - logits_small))),
        "nonzero_weights": int(sum(np.count_nonzero(d["kernel"]) for d in full.values())),
        "idle_weights": idle_weights(full),
    }
    with open(os.path.join(args.workdir, "smaller_model.json"), "w") as f:
        json.dump(result, f, indent=2)
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main(sys.argv[1:])

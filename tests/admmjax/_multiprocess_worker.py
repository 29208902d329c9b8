"""A small data-parallel ADMM run, shared by test_parallel.py and its worker processes.

As a script it is one process of a multi-process CPU run (started by
``test_parallel.py::test_two_processes_match_single_process``)::

    ADMMJAX_COORDINATOR=127.0.0.1:PORT ADMMJAX_NUM_PROCESSES=2 ADMMJAX_PROCESS_ID=I \\
        python tests/admmjax/_multiprocess_worker.py OUT_DIR LOCAL_DEVICES

It joins the run through ``admmjax.parallel.initialize`` (environment variables),
feeds its contiguous half of every global batch through ``shard_batch``, runs
:func:`run_admm` and writes ``OUT_DIR/result_<process>.npz``. Imported, it only
defines the model, the data and :func:`run_admm`, so the test runs the same code
in a single process for the reference.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

IN, HIDDEN, CLASSES = 12, 16, 4
GLOBAL_BATCH = 16
ITERS, STEPS = 3, 4  # ADMM iterations, W-steps (batches) per iteration
RHO, LR, SPARSITY = 1e-2, 1e-2, 0.75
TIE_SHAPE = (8, 6)  # heavy ties, split over every device of every process


def init_params() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "w1": (rng.standard_normal((IN, HIDDEN)) / np.sqrt(IN)).astype(np.float32),
        "b1": np.zeros(HIDDEN, np.float32),
        "w2": (rng.standard_normal((HIDDEN, CLASSES)) / np.sqrt(HIDDEN)).astype(np.float32),
        "b2": np.zeros(CLASSES, np.float32),
    }


def dataset() -> tuple[np.ndarray, np.ndarray]:
    """``ITERS * STEPS`` global batches of a linearly separable-ish problem."""
    rng = np.random.default_rng(1)
    n = ITERS * STEPS * GLOBAL_BATCH
    x = rng.standard_normal((n, IN)).astype(np.float32)
    w = rng.standard_normal((IN, CLASSES)).astype(np.float32)
    return x, np.argmax(x @ w, axis=1).astype(np.int32)


def tie_array() -> np.ndarray:
    rng = np.random.default_rng(2)
    return rng.choice(np.float32([0.0, 1.0, -1.0, 2.0]), TIE_SHAPE)


def loss_fn(params, x, y):
    import jax
    import optax

    h = jax.nn.relu(x @ params["w1"] + params["b1"])
    logits = h @ params["w2"] + params["b2"]
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


def to_host(x) -> np.ndarray:
    """The global value of ``x`` on this host (gathered across processes if needed)."""
    from jax.experimental import multihost_utils

    if x.is_fully_addressable:
        return np.asarray(x)
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def run_admm(mesh, shard_index: int = 0, num_shards: int = 1, shard_params: bool = False):
    """ADMM (W-steps with penalty + Adam, then Z/U-steps) on ``mesh``; host results.

    Each process passes only its rows ``[shard_index * b, (shard_index + 1) * b)`` of
    every global batch (``b = GLOBAL_BATCH // num_shards``), as a multi-host loader
    would. ``shard_params`` splits params and states with ``shard_leaves(min_size=0)``.
    """
    import jax
    import optax

    import admmjax
    from admmjax import parallel

    host_params = init_params()
    targets = admmjax.uniform_sparsity(host_params, SPARSITY)
    place = (
        (lambda t: parallel.shard_leaves(t, mesh, min_size=0))
        if shard_params
        else (lambda t: parallel.replicate(t, mesh))
    )
    tx = optax.chain(admmjax.penalty(RHO), optax.adam(LR))
    params = place(host_params)
    admm_state = place(admmjax.init(host_params, targets))
    opt_state = place(tx.init(host_params))
    step = admmjax.make_train_step(loss_fn, tx)
    update = jax.jit(lambda s, p: admmjax.update(s, p, targets))

    x_all, y_all = dataset()
    rows = GLOBAL_BATCH // num_shards
    losses, primal = [], []
    t = 0
    for _ in range(ITERS):
        for _ in range(STEPS):
            lo = t * GLOBAL_BATCH + shard_index * rows
            x, y = parallel.shard_batch((x_all[lo : lo + rows], y_all[lo : lo + rows]), mesh)
            params, opt_state, loss = step(params, opt_state, x, y, admm_state=admm_state)
            losses.append(to_host(loss))
            t += 1
        admm_state, info = update(admm_state, params)
        primal.append(to_host(info.primal_total))

    # The Z-step shard by shard (no gathers) on the trained params; the test checks it
    # against admmjax.project of the same params. Then the hard-prune masks, on host.
    z_sharded = jax.jit(lambda p: parallel.project_sharded(p, targets, mesh))(params)
    final = {k: to_host(v) for k, v in params.items()}
    _, masks = admmjax.prune(final, targets)
    ties = parallel.shard_leaves(tie_array(), mesh, min_size=0)
    tie_mask = parallel.keep_mask_sharded(ties, ties.size // 2 + 1, mesh)

    out = {"losses": np.array(losses), "primal": np.array(primal)}
    out.update({f"params/{k}": v for k, v in final.items()})
    out.update({f"z/{k}": to_host(v) for k, v in admm_state.z.items() if v is not None})
    out.update({f"mask/{k}": np.asarray(v) for k, v in masks.items() if v is not None})
    out.update({f"z_sharded/{k}": to_host(v) for k, v in z_sharded.items()})
    out["tie_mask"] = to_host(tie_mask)
    out["tie_spec_sharded"] = np.array(tie_mask.sharding.spec == ties.sharding.spec)
    return out


def main(out_dir: str, local_devices: int) -> None:
    import jax

    jax.config.update("jax_platforms", "cpu")
    jax.config.update("jax_num_cpu_devices", local_devices)
    from admmjax import parallel

    assert parallel.initialize(initialization_timeout=60), "expected a multi-process run"
    shard_index, num_shards = parallel.process_shard()
    mesh = parallel.data_mesh()
    out = run_admm(mesh, shard_index, num_shards)
    out["process"] = np.array([shard_index, num_shards, mesh.devices.size])
    np.savez(Path(out_dir) / f"result_{shard_index}.npz", **out)
    jax.distributed.shutdown()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))

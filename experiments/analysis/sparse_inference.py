"""Sparse inference of pruned models with ``jax.experimental.sparse`` (BCOO), and a benchmark.

The fully connected kernels (the 2-D leaves ``fc*/kernel``) become ``sparse.BCOO``
matrices holding only their nonzeros, and the model's own ``apply_fn`` runs on them
under ``sparse.sparsify``: every ``x @ W`` of ``nnx.Linear`` is rewritten to a
``bcoo_dot_general`` (checked in the jaxpr by the tests), so no model code is copied.
The convolutions of LeNet-5 stay dense: in jax 0.10.2 ``bcoo_conv_general_dilated``
handles only 1-D convolutions with one batch and one channel.

``sparsify(..., use_tracer=True)`` is used because the default jaxpr-interpreter mode
fails on these models in jax 0.10.2 (``KeyError: 'subfuns'`` while re-binding the
nested ``jit``/``custom_jvp`` of ``relu``); the tracer mode handles them.

On CPU, XLA has no sparse kernels: ``bcoo_dot_general`` lowers to a gather of the
input rows at the nonzero indices, a multiply and a scatter-add, while the dense
product is one optimised GEMM. :func:`benchmark` measures both, batch 1 (latency)
and batch 256 (throughput), so the numbers say where sparse helps and where not.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import sparse

from admmjax import path_str
from experiments import models

PyTree = Any
Include = Callable[[str, Any], bool]

__all__ = [
    "benchmark",
    "check_sparse_matches_dense",
    "dense_forward",
    "fc_to_bcoo",
    "sparse_forward",
]


def _is_fc_kernel(path: str, leaf: Any) -> bool:
    return jnp.ndim(leaf) == 2


def fc_to_bcoo(params: PyTree, include: Include = _is_fc_kernel) -> PyTree:
    """``params`` with the leaves chosen by ``include(path, leaf)`` (default: every
    2-D leaf, i.e. the fully connected kernels) as ``sparse.BCOO`` of their nonzeros."""

    def convert(path: tuple, leaf: Any) -> Any:
        if not include(path_str(path), leaf):
            return leaf
        leaf = jnp.asarray(leaf)
        return sparse.BCOO.fromdense(leaf, nse=int(jnp.count_nonzero(leaf)))

    return jax.tree_util.tree_map_with_path(convert, params)


def sparse_forward(apply_fn: Callable[..., jax.Array]) -> Callable[[PyTree, jax.Array], jax.Array]:
    """Jitted ``f(bcoo_params, x) -> logits`` running ``apply_fn`` with sparse kernels."""
    return jax.jit(sparse.sparsify(lambda params, x: apply_fn(params, x), use_tracer=True))


def dense_forward(apply_fn: Callable[..., jax.Array]) -> Callable[[PyTree, jax.Array], jax.Array]:
    """Jitted ``f(params, x) -> logits``: the dense (pruned) baseline."""
    return jax.jit(lambda params, x: apply_fn(params, x))


def _apply_fn(model: str) -> Callable[..., jax.Array]:
    return models.functional(models.create_model(model, seed=0))[2]


def _images(batch: int, seed: int = 0) -> jax.Array:
    return jax.random.uniform(jax.random.key(seed), (batch, 28, 28, 1), jnp.float32)


def check_sparse_matches_dense(
    model: str, params: PyTree, x: jax.Array | None = None, *, rtol: float = 1e-5,
    atol: float = 1e-5,
) -> dict[str, Any]:  # fmt: skip
    """Runs ``model`` densely and with BCOO fc kernels on ``x``; raises if not allclose.

    ``x`` defaults to 64 random images in [0, 1]. Returns the largest absolute
    difference of the logits and whether the predicted classes agree.
    """
    apply_fn = _apply_fn(model)
    x = _images(64) if x is None else x
    dense = np.asarray(dense_forward(apply_fn)(params, x))
    sparse_out = np.asarray(sparse_forward(apply_fn)(fc_to_bcoo(params), x))
    diff = float(np.max(np.abs(dense - sparse_out))) if dense.size else 0.0
    if not np.allclose(sparse_out, dense, rtol=rtol, atol=atol):
        raise AssertionError(
            f"{model}: sparse logits differ from dense by up to {diff:.3g} "
            f"(rtol={rtol}, atol={atol})"
        )
    same = bool(np.array_equal(dense.argmax(-1), sparse_out.argmax(-1)))
    return {"max_abs_diff": diff, "same_predictions": same, "examples": int(x.shape[0])}


def _time(fn: Callable[[], Any], repeats: int, target_s: float) -> dict[str, Any]:
    """Median seconds per call: ``repeats`` timings of enough calls for ``target_s``."""
    jax.block_until_ready(fn())  # compile and warm up
    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    once = max(time.perf_counter() - t0, 1e-7)
    number = max(1, min(10_000, int(target_s / once)))
    per_call = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(number):
            out = fn()
        jax.block_until_ready(out)
        per_call.append((time.perf_counter() - t0) / number)
    return {
        "median_s": statistics.median(per_call),
        "min_s": min(per_call),
        "calls_per_timing": number,
        "timings_s": per_call,
    }


def benchmark(
    model: str,
    params: PyTree,
    *,
    batch_sizes: tuple[int, ...] = (1, 256),
    repeats: int = 7,
    target_s: float = 0.05,
) -> dict[str, Any]:
    """Times the dense and the BCOO forward pass of ``model`` (jitted, on the default device).

    For each batch size: the median over ``repeats`` timings of the seconds per call,
    the throughput (images per second) and ``speedup`` = dense time / sparse time
    (below 1: sparse is slower). Inputs are random images; the outputs are checked
    to agree first.
    """
    apply_fn = _apply_fn(model)
    params = jax.tree.map(jnp.asarray, params)
    sparse_params = fc_to_bcoo(params)
    fns = {"dense": dense_forward(apply_fn), "sparse": sparse_forward(apply_fn)}
    args = {"dense": params, "sparse": sparse_params}
    check = check_sparse_matches_dense(model, params)
    fc = {
        path_str(p): {"shape": list(leaf.shape), "nonzero": int(leaf.nse)}
        for p, leaf in jax.tree_util.tree_flatten_with_path(
            sparse_params, is_leaf=lambda v: isinstance(v, sparse.BCOO)
        )[0]
        if isinstance(leaf, sparse.BCOO)
    }
    rows = []
    for batch in batch_sizes:
        x = _images(batch, seed=1)
        row: dict[str, Any] = {"batch": batch}
        for kind, fn in fns.items():
            t = _time(lambda fn=fn, a=args[kind], x=x: fn(a, x), repeats, target_s)
            t["images_per_s"] = batch / t["median_s"]
            row[kind] = t
        row["speedup"] = row["dense"]["median_s"] / row["sparse"]["median_s"]
        rows.append(row)
    return {
        "model": model,
        "sparse_layers": fc,
        "dense_layers": "convolutions (LeNet-5) and biases stay dense",
        "check": check,
        "results": rows,
        "statistic": f"median of {repeats} timings, each the mean of calls_per_timing calls",
        "device": str(jax.devices()[0]),
        "load_average_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }


def format_benchmark(result: dict[str, Any]) -> str:
    """A markdown table of one :func:`benchmark` result."""
    lines = [
        f"{result['model']}: BCOO for {', '.join(result['sparse_layers'])}; "
        f"max |sparse - dense| logits {result['check']['max_abs_diff']:.2g}",
        "",
        "| batch | dense ms/call | sparse ms/call | dense img/s | sparse img/s | sparse speedup |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for row in result["results"]:
        d, s = row["dense"], row["sparse"]
        lines.append(
            f"| {row['batch']} | {1e3 * d['median_s']:.3f} | {1e3 * s['median_s']:.3f} "
            f"| {d['images_per_s']:,.0f} | {s['images_per_s']:,.0f} | {row['speedup']:.2f}x |"
        )
    return "\n".join(lines)

"""Storage of a pruned (and quantized) model against its 32-bit dense weights.

For each pruned layer, the bits a deployed model needs:

* values: each nonzero stored as an index into the layer's codebook of distinct
  nonzero values, ``ceil(log2(D))`` bits for ``D`` distinct values, plus the codebook
  itself (``32 D`` bits), or as raw float32 when that is smaller (unquantized layers);
* positions: the index stream of :func:`admmjax.encode_sparse` (``"auto"``: the
  smaller of a bitmask and 8/16/32-bit relative gaps), in bits.

The ratio is ``32 * weights / (value bits + codebook bits + position bits)`` over the
pruned layers (biases excluded, as in the paper's and ADMM-NN's tables).

The CLI (a finished run's ``storage.json`` / ``storage.md``) is :mod:`experiments.storage`.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

import admmjax


def layer_storage(path: str, leaf: Any) -> dict[str, Any]:
    w = np.asarray(leaf)
    nz = w[w != 0]
    distinct = int(np.unique(nz).size)
    bits = max(1, math.ceil(math.log2(max(distinct, 2))))
    codebook = 32 * distinct
    if bits * nz.size + codebook >= 32 * nz.size:  # not quantized: raw float32 is cheaper
        bits, codebook = 32, 0
    (enc,) = admmjax.encode_sparse({"w": w}).leaves
    position_bits = 0 if enc.index is None else 8 * int(enc.index.nbytes)
    total = bits * nz.size + codebook + position_bits
    return {
        "path": path,
        "weights": int(w.size),
        "nonzero": int(nz.size),
        "distinct_values": distinct,
        "bits_per_value": bits,
        "value_bits": bits * int(nz.size),
        "codebook_bits": codebook,
        "position_bits": position_bits,
        "position_encoding": enc.encoding,
        "total_bits": total,
        "ratio": 32 * w.size / total,
    }


def storage(params: Any, targets: Any) -> dict[str, Any]:
    layers = [
        layer_storage(p, leaf) for p, leaf in admmjax.targeted_leaves(params, targets).items()
    ]
    weights = sum(r["weights"] for r in layers)
    bits = sum(r["total_bits"] for r in layers)
    return {
        "layers": layers,
        "weights": weights,
        "nonzero": sum(r["nonzero"] for r in layers),
        "total_bits": bits,
        "dense_bits": 32 * weights,
        "ratio": 32 * weights / bits,
    }


def markdown(result: dict[str, Any]) -> str:
    lines = [
        "| layer | kept / weights | distinct values | bits/value | position bits | ratio |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in result["layers"]:
        lines.append(
            f"| {r['path']} | {r['nonzero']:,} / {r['weights']:,} | {r['distinct_values']:,} "
            f"| {r['bits_per_value']} | {r['position_bits']:,} ({r['position_encoding']}) "
            f"| {r['ratio']:.0f}x |"
        )
    lines.append(
        f"| total | {result['nonzero']:,} / {result['weights']:,} | | | "
        f"{result['total_bits']:,} bits in all | **{result['ratio']:.0f}x** |"
    )
    return "\n".join(lines) + "\n"

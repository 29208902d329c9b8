"""Export a run's pruned model to one sparse file and report its size (and speed).

    python -m experiments.export WORKDIR [WORKDIR ...] [--out FILE]
        [--bench [--bench-json [PATH]] [--repeats N]]

For each workdir written by ``experiments.mnist``: reads ``WORKDIR/pruned`` (orbax)
into the model of ``WORKDIR/config.json``, writes it with
``admmjax.sparse_io.save_sparse`` to ``--out`` (one workdir only; default
``WORKDIR/pruned.admmsparse``), reads the file back and checks every leaf is
bit-identical, then prints a size table: per leaf its shape, nonzeros, encoding and
bytes; in total the sparse file's bytes against the raw dense float32 bytes
(4 bytes x parameters) and the orbax checkpoint directory ``WORKDIR/pruned``.

``--bench`` also runs the pruned model densely and with BCOO fully connected layers
(``experiments.analysis.sparse_inference``), checks the logits agree and times batch 1
(latency) and batch 256 (throughput). ``--bench-json`` writes those timings with the
command and the machine to ``experiments/results/bench/sparse_inference_<platform>.json``
(or PATH).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import stat
import sys
from pathlib import Path
from typing import Any

import jax
import numpy as np

import admmjax
from admmjax.sparse_io import SUFFIX, load_sparse, save_sparse
from experiments import workdir as workdir_lib
from experiments.environment import environment
from experiments.kernels import configure_cpu
from experiments.train import shown_path

REPO = Path(__file__).resolve().parents[1]


def directory_bytes(path: str | os.PathLike) -> tuple[int, int, int]:
    """``(file bytes, files, disk usage)`` of the tree at ``path``.

    File bytes sum the regular files' sizes (``du -b`` without the directories);
    disk usage sums the allocated blocks of the files and directories (``du -B1``),
    which for many small files is several times larger.
    """
    total = count = 0
    usage = os.lstat(path).st_blocks * 512
    for root, dirs, files in os.walk(path):
        for name in dirs:
            usage += os.lstat(os.path.join(root, name)).st_blocks * 512
        for name in files:
            st = os.lstat(os.path.join(root, name))
            usage += st.st_blocks * 512
            if stat.S_ISREG(st.st_mode):
                total += st.st_size
                count += 1
    return total, count, usage


def export_workdir(workdir: str, out: str | None = None) -> dict[str, Any]:
    """Writes ``WORKDIR/pruned`` as a sparse file, checks the round trip, returns sizes."""
    cfg, params = workdir_lib.load_params(workdir)
    pruned_dir = os.path.join(workdir, "pruned")
    out = out or os.path.join(workdir, "pruned" + SUFFIX)
    metadata = {
        "model": cfg.model,
        "dataset": cfg.dataset,
        "sparsity": cfg.sparsity,
        "source": shown_path(pruned_dir),  # no machine path inside a committed file
        "admmjax_version": admmjax.__version__,
    }
    sparse = save_sparse(out, params, metadata=metadata)
    back = load_sparse(out, params)  # params as the template: same paths and types
    for path, a, b in zip(
        admmjax.leaf_paths(params), jax.tree.leaves(params), jax.tree.leaves(back), strict=True
    ):
        a, b = np.asarray(a), np.asarray(b)
        if a.dtype != b.dtype or a.shape != b.shape or a.tobytes() != b.tobytes():
            raise RuntimeError(f"round trip of {out} changed leaf '{path}'")
    leaves = [
        {
            "path": leaf.path,
            "shape": list(leaf.shape),
            "dtype": leaf.dtype.name,
            "entries": leaf.size,
            "nonzero": leaf.nonzero,
            "encoding": leaf.encoding,
            "index_dtype": None if leaf.encoding != "relative" else leaf.index.dtype.name,
            "values_bytes": int(leaf.values.nbytes),
            "index_bytes": 0 if leaf.index is None else int(leaf.index.nbytes),
            "bytes": leaf.nbytes,
            "dense_bytes": leaf.dense_nbytes,
        }
        for leaf in sparse.leaves
    ]
    n_params = sum(leaf["entries"] for leaf in leaves)
    file_bytes = os.path.getsize(out)
    float32_bytes = 4 * n_params
    orbax_bytes, orbax_files, orbax_usage = directory_bytes(pruned_dir)
    return {
        "workdir": shown_path(workdir),
        "model": cfg.model,
        "file": shown_path(out),
        "params": n_params,
        "nonzero": sum(leaf["nonzero"] for leaf in leaves),
        "leaves": leaves,
        "payload_bytes": sparse.nbytes,
        "file_bytes": file_bytes,
        "header_and_manifest_bytes": file_bytes - sparse.nbytes,
        "dense_float32_bytes": float32_bytes,
        "orbax_pruned_checkpoint_bytes": orbax_bytes,
        "orbax_pruned_checkpoint_files": orbax_files,
        "orbax_pruned_checkpoint_disk_usage": orbax_usage,
        "file_disk_usage": os.lstat(out).st_blocks * 512,
        "ratio_vs_float32": float32_bytes / file_bytes,
        "ratio_vs_orbax": orbax_bytes / file_bytes,
        "round_trip": "bit-exact",
        "params_tree": params,
    }


def format_sizes(res: dict[str, Any]) -> str:
    """Markdown size table of one :func:`export_workdir` result."""
    lines = [
        f"{res['model']} ({res['workdir']}) -> {res['file']}",
        "",
        "| leaf | shape | nonzero | encoding | bytes | dense bytes |",
        "|---|---|---:|---|---:|---:|",
    ]
    for leaf in res["leaves"]:
        enc = leaf["encoding"] + (f" ({leaf['index_dtype']})" if leaf["index_dtype"] else "")
        lines.append(
            f"| {leaf['path']} | {'x'.join(map(str, leaf['shape'])) or 'scalar'} "
            f"| {leaf['nonzero']:,} / {leaf['entries']:,} | {enc} | {leaf['bytes']:,} "
            f"| {leaf['dense_bytes']:,} |"
        )
    lines += [
        "",
        "| storage | bytes | vs sparse file | disk usage (blocks) |",
        "|---|---:|---:|---:|",
        f"| sparse file (payload {res['payload_bytes']:,} + header and manifest "
        f"{res['header_and_manifest_bytes']:,}) | {res['file_bytes']:,} | 1.0x "
        f"| {res['file_disk_usage']:,} |",
        f"| dense float32 (4 B x {res['params']:,} params) | {res['dense_float32_bytes']:,} "
        f"| {res['ratio_vs_float32']:.1f}x | |",
        f"| orbax checkpoint `pruned/` ({res['orbax_pruned_checkpoint_files']} files) "
        f"| {res['orbax_pruned_checkpoint_bytes']:,} | {res['ratio_vs_orbax']:.1f}x "
        f"| {res['orbax_pruned_checkpoint_disk_usage']:,} |",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    configure_cpu()  # before JAX starts its backend: XLA reads XLA_FLAGS then
    argv = sys.argv[1:] if argv is None else list(argv)
    p = argparse.ArgumentParser(
        prog="python -m experiments.export", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("workdirs", nargs="+", metavar="WORKDIR", help="experiments.mnist workdirs")
    p.add_argument("--out", help=f"sparse file to write (default WORKDIR/pruned{SUFFIX})")
    p.add_argument("--bench", action="store_true", help="also time sparse vs dense inference")
    p.add_argument(
        "--bench-json",
        nargs="?",
        const="",
        default=None,
        metavar="PATH",
        help="write the timings as JSON (default experiments/results/bench/"
        "sparse_inference_<platform>.json); implies --bench",
    )
    p.add_argument("--repeats", type=int, default=7, help="timings per benchmark case")
    args = p.parse_args(argv)
    if args.out and len(args.workdirs) > 1:
        p.error("--out takes one WORKDIR")
    if args.repeats < 1:
        p.error("--repeats must be >= 1")
    bench = args.bench or args.bench_json is not None

    results = []
    for workdir in args.workdirs:
        try:
            res = export_workdir(workdir, args.out)
        except ValueError as err:  # not a finished run's workdir
            p.error(str(err))
        print(format_sizes(res), end="\n\n", flush=True)
        if bench:
            from experiments.analysis import sparse_inference

            res["bench"] = sparse_inference.benchmark(
                res["model"], res["params_tree"], repeats=args.repeats
            )
            print(sparse_inference.format_benchmark(res["bench"]), end="\n\n", flush=True)
        results.append(res)

    if args.bench_json is not None:
        env = environment()
        default = REPO / "experiments" / "results" / "bench" / "sparse_inference"
        path = Path(args.bench_json or f"{default}_{env['platform']}.json")
        doc = {
            "benchmark": "forward pass of pruned models: dense vs BCOO fully connected layers",
            **env,
            "command": shlex.join(["python", "-m", "experiments.export", *argv]),
            "models": [
                {
                    "workdir": r["workdir"],
                    "sparse_file_bytes": r["file_bytes"],
                    "dense_float32_bytes": r["dense_float32_bytes"],
                    "orbax_pruned_checkpoint_bytes": r["orbax_pruned_checkpoint_bytes"],
                    **r["bench"],
                }
                for r in results
            ],
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(doc, indent=2) + "\n")
        print(f"wrote {path}")
    for r in results:
        r.pop("params_tree")
    return results


if __name__ == "__main__":
    main()

"""Small helpers for the notebooks in ``notebooks/``: where the data is, tables, and
clearing outputs before a commit.

The notebooks hold only glue (loops, plotting calls); what they would otherwise
repeat lives here.

    python -m experiments.notebook_utils strip notebooks/*.ipynb   # clear outputs in place
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from admmjax import SparseParams
from experiments.kernels import configure_cpu

__all__ = ["default_data_dir", "sparse_sizes_markdown", "strip_outputs"]

REPO = Path(__file__).resolve().parents[1]


def default_data_dir() -> str | None:
    """The TFDS data dir holding MNIST, as an absolute path.

    ``$TFDS_DATA_DIR`` if set: a relative value is taken from the working directory
    or, where nothing is there, from the repository root (a kernel runs in
    ``notebooks/``, not where the variable was set). Else the repository's
    ``../shared/tfds`` (found from this package, else from the working directory).
    Else ``None``: TFDS's default, ``~/tensorflow_datasets``.
    """
    cwd = Path.cwd().resolve()
    env = os.environ.get("TFDS_DATA_DIR")
    if env:
        path = Path(env).expanduser()
        if not path.is_absolute() and not (cwd / path).is_dir() and (REPO / path).is_dir():
            return str((REPO / path).resolve())
        return str((cwd / path).resolve())
    for root in (REPO, cwd, *cwd.parents[:2]):
        candidate = root.parent / "shared" / "tfds"
        if candidate.is_dir():
            return str(candidate)
    return None


def sparse_sizes_markdown(
    sparse: SparseParams, file_bytes: int, dense_file_bytes: int | None = None
) -> str:
    """Markdown table of an encoding from ``admmjax.sparse_io.save_sparse``: per leaf its
    shape, nonzeros, encoding and payload bytes against raw dense bytes; then the
    file's size against the raw dense bytes (and a dense file, if given)."""
    lines = [
        "| leaf | shape | nonzero | encoding | bytes | dense bytes |",
        "|---|---|---:|---|---:|---:|",
    ]
    for leaf in sparse.leaves:
        encoding = leaf.encoding
        if leaf.encoding == "relative":
            encoding += f" ({leaf.index.dtype.name} gaps)"
        lines.append(
            f"| {leaf.path} | {'x'.join(map(str, leaf.shape)) or 'scalar'} "
            f"| {leaf.nonzero:,} / {leaf.size:,} | {encoding} | {leaf.nbytes:,} "
            f"| {leaf.dense_nbytes:,} |"
        )
    dense_bytes = sum(leaf.dense_nbytes for leaf in sparse.leaves)
    lines += [
        "",
        "| storage | bytes | vs sparse file |",
        "|---|---:|---:|",
        f"| sparse file (payload {sparse.nbytes:,} + header and manifest "
        f"{file_bytes - sparse.nbytes:,}) | {file_bytes:,} | 1.0x |",
        f"| raw dense arrays | {dense_bytes:,} | {dense_bytes / file_bytes:.1f}x |",
    ]
    if dense_file_bytes is not None:
        lines.append(
            f"| same format, every leaf dense | {dense_file_bytes:,} "
            f"| {dense_file_bytes / file_bytes:.1f}x |"
        )
    return "\n".join(lines)


def strip_outputs(path: str | os.PathLike) -> bool:
    """Clears a notebook's outputs, execution counts and execution timings in place;
    returns whether anything changed."""
    import nbformat

    nb = nbformat.read(path, as_version=4)
    changed = False
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        if cell.outputs or cell.execution_count is not None or "execution" in cell.metadata:
            changed = True
        cell.outputs, cell.execution_count = [], None
        cell.metadata.pop("execution", None)
    if changed:
        nbformat.write(nb, path)
    return changed


def main(argv: list[str] | None = None) -> None:
    configure_cpu()  # before JAX starts its backend: XLA reads XLA_FLAGS then
    p = argparse.ArgumentParser(prog="python -m experiments.notebook_utils")
    sub = p.add_subparsers(dest="command", required=True)
    strip = sub.add_parser("strip", help="clear outputs and execution counts in place")
    strip.add_argument("notebooks", nargs="+", help=".ipynb files")
    args = p.parse_args(argv)
    for path in args.notebooks:
        print(f"{path}: {'stripped' if strip_outputs(path) else 'already clean'}")


if __name__ == "__main__":
    main(sys.argv[1:])

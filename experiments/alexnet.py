"""CLI: convert Caffe's bvlc_alexnet blobs to this repository's AlexNet layout.

The model and the conversion live in :mod:`experiments.models.alexnet`.

    python -m experiments.alexnet convert CAFFE_BLOBS.npz OUT.npz
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from experiments.kernels import configure_cpu
from experiments.models.alexnet import convert_caffe


def main(argv: list[str] | None = None) -> None:
    configure_cpu()  # before JAX starts its backend: XLA reads XLA_FLAGS then
    p = argparse.ArgumentParser(
        prog="python -m experiments.alexnet",
        description="Convert Caffe bvlc_alexnet blobs (an .npz keyed 'conv1/0', 'conv1/1', "
        "...) to this repository's AlexNet layout (an .npz keyed 'conv1/kernel', ...).",
    )
    sub = p.add_subparsers(dest="command", required=True)
    conv = sub.add_parser("convert", help="Caffe blobs .npz -> AlexNet params .npz")
    conv.add_argument("caffe_npz")
    conv.add_argument("out_npz")
    args = p.parse_args(argv)
    with np.load(args.caffe_npz, allow_pickle=False) as z:
        blobs = {k: z[k] for k in z.files}
    params = convert_caffe(blobs)
    np.savez(args.out_npz, **params)
    total = sum(v.size for v in params.values())
    print(f"wrote {args.out_npz}: {len(params)} arrays, {total:,} parameters")


if __name__ == "__main__":
    main(sys.argv[1:])

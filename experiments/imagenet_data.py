"""CLI: prepare imagenet2012 for TFDS without TensorFlow, or write synthetic archives.

The reader, preprocessing and preparation live in :mod:`experiments.data.imagenet`.

    python -m experiments.imagenet_data prepare --data-dir $TFDS_DATA_DIR
    python -m experiments.imagenet_data synthetic --manual-dir DIR
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys

from experiments.data.imagenet import prepare, write_synthetic_archives
from experiments.kernels import configure_cpu


def main(argv: list[str] | None = None) -> None:
    configure_cpu()  # before JAX starts its backend: XLA reads XLA_FLAGS then
    p = argparse.ArgumentParser(
        prog="python -m experiments.imagenet_data",
        description="Prepare imagenet2012 (array_record) for TFDS without TensorFlow, or "
        "write small synthetic archives in the same layout.",
    )
    sub = p.add_subparsers(dest="command", required=True)
    prep = sub.add_parser("prepare", help="archives in the manual dir -> imagenet2012/5.1.0")
    prep.add_argument("--data-dir", help="TFDS data dir [default: $TFDS_DATA_DIR]")
    prep.add_argument("--manual-dir", help="archives [default: DATA_DIR/downloads/manual]")
    synth = sub.add_parser("synthetic", help="write synthetic archives (for smoke runs)")
    synth.add_argument("--manual-dir", required=True)
    synth.add_argument("--train", type=int, default=320, help="training images")
    synth.add_argument("--val", type=int, default=64, help="validation images")
    synth.add_argument("--classes", type=int, default=10)
    args = p.parse_args(argv)
    if args.command == "prepare":
        out = prepare(args.data_dir, manual=args.manual_dir)
        print(json.dumps({"prepared": os.fspath(out)}))
    else:
        paths = write_synthetic_archives(
            args.manual_dir, num_train=args.train, num_val=args.val, num_classes=args.classes
        )
        print(json.dumps({k: os.fspath(v) for k, v in paths.items()}))


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        main(sys.argv[1:])

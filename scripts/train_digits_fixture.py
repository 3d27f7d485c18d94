#!/usr/bin/env python3
"""Train the digits fixture (mobilevit_xxs on scikit-learn digits) and/or write digit PNG folders.

    python scripts/train_digits_fixture.py                      # train (if not cached), print accuracy
    python scripts/train_digits_fixture.py --force --epochs 6  # retrain
    python scripts/train_digits_fixture.py --write-eval DIR     # held-out digits as DIR/<class>/*.png
    python scripts/train_digits_fixture.py --write-calib DIR    # training digits as DIR/<class>/*.png

Only parses arguments and calls repo_gen.fixtures.digits.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from repo_gen.fixtures import digits as fx
from repo_gen.log import setup


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=None, help=f"checkpoint path (default {fx.default_checkpoint()})")
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: min(2, CPUs))")
    p.add_argument("--force", action="store_true", help="retrain even if the checkpoint exists")
    p.add_argument("--write-eval", type=Path, default=None, help="write held-out digits as PNG class folders")
    p.add_argument("--write-calib", type=Path, default=None, help="write training digits as PNG class folders")
    p.add_argument("--count", type=int, default=None, help="images per written folder set (default all)")
    args = p.parse_args()
    setup()
    out = args.out or fx.default_checkpoint()
    if args.force or not out.is_file():
        print(json.dumps(fx.train_digits(out, epochs=args.epochs, threads=args.threads)))
    else:
        print(json.dumps({"checkpoint": str(out), "cached": True}))
    if args.write_eval:
        print(f"eval digits -> {fx.write_digit_folders(args.write_eval, 'test', args.count)}")
    if args.write_calib:
        print(f"calibration digits -> {fx.write_digit_folders(args.write_calib, 'train', args.count)}")


if __name__ == "__main__":
    main()

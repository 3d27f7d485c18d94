"""Train (or refresh) the cached detection fixture: ssdlite_mobilevit_xxs on digits pasted onto photos.

    python scripts/train_detection_fixture.py [--steps N] [--out PATH] [--write-eval DIR [--count N]]

Prints the held-out mAP as JSON. `--write-eval DIR` also writes test scenes (PNG + COCO annotations.json)
for `repo-gen build --eval-dir DIR` and the benchmarks.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from repo_gen import log
from repo_gen.detection.fixture import (
    TRAIN_BATCH,
    TRAIN_STEPS,
    TRAIN_THREADS,
    train_detector_fixture,
    write_scenes,
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=TRAIN_STEPS)
    ap.add_argument("--batch", type=int, default=TRAIN_BATCH)
    ap.add_argument("--eval-images", type=int, default=200, help="held-out scenes for the mAP (0: skip)")
    ap.add_argument("--max-seconds", type=float, default=None, help="stop training early after this long")
    ap.add_argument("--threads", type=int, default=None,
                    help=f"torch threads (default {TRAIN_THREADS}: two spin on a busy 2-core machine)")
    ap.add_argument("--init-backbone", type=Path, default=None, metavar="CKPT",
                    help="start the backbone from this timm mobilevit_xxs classifier checkpoint (default: the digits "
                         "classifier fixture, trained and cached first when missing)")
    ap.add_argument("--random-init", action="store_true", help="start the backbone from random weights")
    ap.add_argument("--out", type=Path, default=None, help="checkpoint path (default: the repo-gen cache)")
    ap.add_argument("--write-eval", type=Path, default=None, metavar="DIR")
    ap.add_argument("--count", type=int, default=100, help="scenes written by --write-eval")
    args = ap.parse_args()
    log.setup()
    if args.write_eval:
        write_scenes(args.write_eval, "test", args.count)
    init = None if args.random_init else args.init_backbone
    if init is None and not args.random_init:
        from repo_gen.fixtures.digits import ensure_digits_checkpoint

        init = ensure_digits_checkpoint()
    print(json.dumps(train_detector_fixture(args.out, steps=args.steps, batch=args.batch, threads=args.threads,
                                            eval_images=args.eval_images, max_seconds=args.max_seconds,
                                            init_backbone=init), indent=2))


if __name__ == "__main__":
    main()

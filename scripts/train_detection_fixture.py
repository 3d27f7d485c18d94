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
from repo_gen.detection.fixture import train_detector_fixture, write_scenes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--eval-images", type=int, default=200, help="held-out scenes for the mAP (0: skip)")
    ap.add_argument("--max-seconds", type=float, default=None, help="stop training early after this long")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: min(2, CPUs))")
    ap.add_argument("--init-backbone", type=Path, default=None, metavar="CKPT",
                    help="start the backbone from a timm mobilevit_xxs classifier checkpoint (e.g. the digits fixture)")
    ap.add_argument("--out", type=Path, default=None, help="checkpoint path (default: the repo-gen cache)")
    ap.add_argument("--write-eval", type=Path, default=None, metavar="DIR")
    ap.add_argument("--count", type=int, default=100, help="scenes written by --write-eval")
    args = ap.parse_args()
    log.setup()
    if args.write_eval:
        write_scenes(args.write_eval, "test", args.count)
    print(json.dumps(train_detector_fixture(args.out, steps=args.steps, batch=args.batch, threads=args.threads,
                                            eval_images=args.eval_images, max_seconds=args.max_seconds,
                                            init_backbone=args.init_backbone), indent=2))


if __name__ == "__main__":
    main()

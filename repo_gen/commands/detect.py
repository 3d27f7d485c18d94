"""`repo-gen detect IMAGE...`: boxes, classes and scores from a served detection `<model>_pipeline`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def add_parser(sub) -> None:
    p = sub.add_parser(
        "detect",
        help="detect objects in image files with a served ssdlite_mobilevit_*_pipeline ensemble",
        description="Send each image file as it is to a Triton server running a detection <model>_pipeline "
        "(decoding, letterbox and NMS happen in the server), print its boxes (x1 y1 x2 y2 in the image's pixels), "
        "classes and scores, and optionally draw them. A file that cannot be read or decoded gets its own error "
        "message; the exit code is then 2.",
    )
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files")
    p.add_argument("--url", default=None, metavar="HOST:PORT", help="gRPC address; default 127.0.0.1:8001")
    p.add_argument("--model", default=None, metavar="NAME", help="default: the only detection pipeline ready")
    p.add_argument("--threshold", type=float, default=0.3, help="print detections scoring at least this (0-1)")
    p.add_argument("--out", type=Path, default=None, metavar="PNG",
                   help="write the image with its boxes drawn here (several images: PNG-stem_IMAGE-stem.png)")
    p.add_argument("--json", action="store_true", help="one JSON object per image on stdout")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from rich.markup import escape

    from repo_gen.detection.client import detect_files, draw
    from repo_gen.errors import UserError
    from repo_gen.log import console

    if not 0.0 <= args.threshold <= 1.0:
        raise UserError(f"--threshold {args.threshold}: must lie in [0, 1]; pass e.g. 0.3")
    if args.out is not None and args.out.suffix.lower() != ".png":
        raise UserError(f"--out {args.out}: the drawing is a PNG; pass a path ending in .png")
    results = detect_files(args.images, args.url, args.model, args.threshold)
    failed = 0
    for r in results:
        if r.error is not None:
            failed += 1
            console.print(f"[bold red]error:[/] {escape(r.path)}: {escape(r.error)}", soft_wrap=True)
            continue
        if args.json:
            print(json.dumps(r.to_dict()))
        else:
            print(f"{r.path}: {len(r.boxes)} detection(s)")
            for b in r.boxes:
                print(f"  {b.label:>10s} {b.score:6.3f}  box {b.x1:7.1f} {b.y1:7.1f} {b.x2:7.1f} {b.y2:7.1f}")
        if args.out is not None:
            out = args.out if len(args.images) == 1 else args.out.with_name(f"{args.out.stem}_{Path(r.path).stem}.png")
            draw(r.path, r.boxes, out)
            console.print(f"drew {len(r.boxes)} box(es) -> {out}")
    sys.stdout.flush()
    if failed:
        console.print(f"{failed} of {len(results)} image(s) failed")
        return 2
    return 0

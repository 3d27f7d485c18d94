"""`repo-gen classify IMAGE...`: class names for image files from a served `<model>_pipeline`."""

from __future__ import annotations

import argparse
import json
import sys


def add_parser(sub) -> None:
    p = sub.add_parser(
        "classify",
        help="classify image files with a served <model>_pipeline ensemble",
        description="Send each image file (JPEG/PNG/WebP/BMP/...) as it is to a Triton server running a "
        "<model>_pipeline ensemble (decoding and preprocessing happen in the server) and print the top-k class "
        "names with their scores. Scores are the model's logits (Triton's classification extension). "
        "Each unreadable or undecodable file gets its own error message; the exit code is then 2.",
    )
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files")
    p.add_argument("--url", default=None, metavar="HOST:PORT",
                   help="server address; default 127.0.0.1:8001 for grpc, 127.0.0.1:8000 for http")
    p.add_argument("--model", default=None, metavar="NAME",
                   help="pipeline model; default: the only *_pipeline model ready on the server")
    p.add_argument("--top-k", type=int, default=5, metavar="K", help="class names per image (default 5)")
    p.add_argument("--protocol", default="grpc", choices=["grpc", "http"], help="default grpc")
    p.add_argument("--concurrency", type=int, default=4, metavar="N", help="requests in flight at once (default 4)")
    p.add_argument("--json", action="store_true", help="print one JSON object per image on stdout instead of text")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from rich.markup import escape

    from repo_gen.errors import UserError
    from repo_gen.log import console
    from repo_gen.pipeline.client import classify_files

    if args.top_k < 1:
        raise UserError(f"--top-k {args.top_k}: must be >= 1")
    if args.concurrency < 1:
        raise UserError(f"--concurrency {args.concurrency}: must be >= 1")
    results = classify_files(args.images, args.url, args.model, args.top_k, args.protocol, args.concurrency)
    failed = 0
    for r in results:
        if r.error is not None:
            failed += 1
            console.print(f"[bold red]error:[/] {escape(r.path)}: {escape(r.error)}", soft_wrap=True)
        if args.json:
            print(json.dumps(r.to_dict()))
        elif r.error is None:
            print(r.path)
            width = max(len(p.label) for p in r.predictions) if r.predictions else 0
            for rank, p in enumerate(r.predictions, 1):
                print(f"  {rank}. {p.label:<{width}}  {p.score:9.4f}")
    sys.stdout.flush()
    if failed:
        console.print(f"{failed} of {len(results)} image(s) could not be classified")
        return 2
    return 0

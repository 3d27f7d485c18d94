"""Held-out top-1 of the digits classifiers in a repository, served (Triton, gRPC) and in process (ONNX Runtime).

    python scripts/digits_accuracy.py --model-repository model_repository --url 127.0.0.1:8001 \
        --models mobilevit_xxs_py_fp32,mobilevit_xxs_py_fp16,mobilevit_xxs_py_int8 [--json out.json]

Only parses arguments and calls repo_gen.fixtures.digits.heldout_accuracy.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

from repo_gen.errors import RepoGenError
from repo_gen.fixtures.digits import heldout_accuracy
from repo_gen.log import setup
from repo_gen.pipeline.accuracy import markdown


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model-repository", type=Path, required=True)
    p.add_argument("--models", required=True, help="comma list of classifier models")
    p.add_argument("--url", default=None, help="Triton gRPC HOST:PORT; without it only ONNX Runtime is measured")
    p.add_argument("--json", type=Path, default=None, help="also write the rows as JSON here")
    args = p.parse_args()
    setup()
    try:
        rows = heldout_accuracy(args.model_repository, [m for m in args.models.split(",") if m], args.url)
    except RepoGenError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    print(markdown(rows))
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in rows], indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

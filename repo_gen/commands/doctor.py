"""`repo-gen doctor`: what this machine can build and serve."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_parser(sub) -> None:
    p = sub.add_parser(
        "doctor",
        help="report what this machine can build and serve",
        description="Check torch, timm, ONNX Runtime, TensorRT, the GPU, tritonserver and its backends, and "
        "perf_analyzer: version, or why it is missing and how to get it. With --model-repository, also check "
        "that its TensorRT plans match the TensorRT found here.",
    )
    p.add_argument("--model-repository", type=Path, metavar="DIR", help="also check plans in this repository")
    p.add_argument("--json", action="store_true", help="print the checks as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from rich.table import Table

    from repo_gen.doctor import run_checks
    from repo_gen.log import console

    checks = run_checks(args.model_repository)
    if args.json:
        print(json.dumps([c.__dict__ for c in checks], indent=2))
        return 0
    table = Table(title="repo-gen doctor")
    table.add_column("component")
    table.add_column("")
    table.add_column("version / reason")
    table.add_column("how to get it")
    for c in checks:
        table.add_row(c.name, "[green]ok[/]" if c.ok else "[red]missing[/]", c.detail, c.fix)
    console.print(table)
    return 0

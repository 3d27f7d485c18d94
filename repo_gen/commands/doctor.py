"""`repo-gen doctor`: what this machine can build and serve."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path


def add_parser(sub) -> None:
    p = sub.add_parser(
        "doctor",
        help="report what this machine can build and serve",
        description="Check torch, timm, ONNX Runtime, TensorRT, the GPU, tritonserver and its backends, and "
        "perf_analyzer: version, or why it is missing and how to get it. With --model-repository, also check "
        "that its TensorRT plans match the TensorRT found here. Exit code 1 when a component `repo-gen build` "
        "needs is missing.",
    )
    p.add_argument("--model-repository", type=Path, metavar="DIR", help="also check plans in this repository")
    p.add_argument("--json", action="store_true", help="print the checks as JSON on stdout")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from repo_gen.doctor import run_checks

    checks = run_checks(args.model_repository)
    missing = [c for c in checks if c.required and not c.ok]
    if args.json:
        print(json.dumps([dataclasses.asdict(c) for c in checks], indent=2))
    else:
        table = Table(title="repo-gen doctor")
        for col in ("component", "", "version / reason", "how to get it"):
            table.add_column(col)
        for c in checks:
            state = "[green]ok[/]" if c.ok else "[red]missing[/]" if c.required else "[yellow]missing[/]"
            table.add_row(c.name, state, c.detail, c.fix)
        Console(soft_wrap=True).print(table)  # stdout, like --json (the log console writes to stderr)
    return 1 if missing else 0

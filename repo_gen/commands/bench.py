"""`repo-gen bench`: measure served models with perf_analyzer and write a report with plots."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_measurement_args(p: argparse.ArgumentParser, interval_ms: int = 2000, stability_help: str | None = None,
                         max_trials_help: str | None = None) -> None:
    """perf_analyzer's measurement flags (shared by bench and tune; tune words two defaults its own way)."""
    g = p.add_argument_group("measurement (perf_analyzer)")
    g.add_argument("--protocol", default="grpc", choices=["grpc", "http"])
    g.add_argument("--measurement-mode", default="time_windows", choices=["time_windows", "count_windows"])
    g.add_argument("--measurement-interval-ms", type=int, default=interval_ms, metavar="MS",
                   help="length of one time window")
    g.add_argument("--measurement-request-count", type=int, default=50, metavar="N",
                   help="requests per window in count_windows mode")
    g.add_argument("--stability-percentage", type=float, default=None if stability_help else 10.0, metavar="PCT",
                   help=stability_help or "a point is stable when its last 3 windows agree within PCT%% (throughput "
                   "and p99); unstable points are retried at 2x and 4x PCT and flagged")
    g.add_argument("--max-trials", type=int, default=None if max_trials_help else 10, metavar="N",
                   help=max_trials_help or "windows per point at most")
    g.add_argument("--shared-memory", default="none", choices=["none", "system", "cuda"],
                   help="system: the client passes tensors through POSIX shared memory instead of the "
                   "gRPC/HTTP messages (only for a client on the server's host; default none); cuda: through "
                   "CUDA memory on the GPU, which a GPU model reads without a host copy")


def settings_from_args(args: argparse.Namespace):
    from repo_gen.perf.analyzer import PerfSettings

    s = args.stability_percentage
    return PerfSettings(protocol=args.protocol, measurement_mode=args.measurement_mode,
                        measurement_interval_ms=args.measurement_interval_ms, request_count=args.measurement_request_count,
                        stability_percentage=s, max_trials=args.max_trials, relax=(2 * s, 4 * s),
                        shared_memory=args.shared_memory)


def add_parser(sub) -> None:
    p = sub.add_parser(
        "bench",
        help="measure served models with perf_analyzer (report, plots, CSVs)",
        description="Run the real perf_analyzer against each model over a concurrency range and batch sizes, with "
        "stable measurement windows; write report.md (comparison of all variants), PNG plots (throughput vs p99 "
        "latency, throughput vs concurrency), the raw CSVs and every command line. Starts tritonserver on free "
        "loopback ports when no --url is given, and stops it afterwards.",
    )
    p.add_argument("--model-repository", type=Path, default=Path("model_repository"), metavar="DIR")
    p.add_argument("--models", default=None, metavar="A,B",
                   help="models to measure (default: every model of the manifest this server can serve)")
    p.add_argument("--url", default=None, metavar="HOST:PORT",
                   help="a running server's endpoint for --protocol (default: start one here)")
    p.add_argument("--concurrency", default="1:8", metavar="SPEC",
                   help="N, START:END (powers of two, END included), START:END:STEP, or a list 1,4,8")
    p.add_argument("--batch-sizes", default="1", metavar="LIST", help="request batch sizes, e.g. 1,8")
    p.add_argument("--output", type=Path, default=None, metavar="DIR",
                   help="output directory (default: bench-<time> next to the repository)")
    p.add_argument("--input-data", default="real", choices=["real", "random"],
                   help="real: photos preprocessed exactly as each model expects (manifest data config)")
    p.add_argument("--images", type=Path, default=None, metavar="DIR",
                   help="your own images for --input-data real (default: scikit-image's bundled photos)")
    p.add_argument("--latency-budget-ms", type=float, default=None, metavar="MS",
                   help="p99 budget: the report adds the best throughput within it")
    add_measurement_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from repo_gen.log import console
    from repo_gen.perf.analyzer import parse_concurrency, parse_int_list
    from repo_gen.perf.bench import BenchConfig, run_bench

    models = [m.strip() for m in args.models.split(",") if m.strip()] if args.models else None
    cfg = BenchConfig(
        repo=args.model_repository,
        models=models,
        url=args.url,
        concurrency=parse_concurrency(args.concurrency),
        batch_sizes=parse_int_list(args.batch_sizes, "--batch-sizes"),
        output=args.output,
        input_data=args.input_data,
        latency_budget_ms=args.latency_budget_ms,
        images_dir=args.images,
        settings=settings_from_args(args),
    )
    result = run_bench(cfg)
    console.print(f"measured {len(result.points)} point(s) in {result.wall_s:.0f} s; report: {result.report}")
    for problem in result.problems:
        console.print(f"[yellow]note:[/] {problem}")
    return 0 if result.points else 1

"""`repo-gen tune`: search instance count, threads, batcher delay and batch sizes by measurement."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(sub) -> None:
    from repo_gen.commands.bench import add_measurement_args

    p = sub.add_parser(
        "tune",
        help="tune a model's config by measurement (throughput, latency or both, under a p99 budget)",
        description="Start tritonserver on the repository, load candidate configs of one model through Triton's "
        "repository API (config override, nothing on disk changes while searching), measure each with "
        "perf_analyzer, and keep the best under --objective whose p99 is within --latency-budget-ms. Dimensions are "
        "searched one at a time with Model Analyzer's rule (stop growing when the gain is < 5%); then the leaders "
        "and the current config are measured again in alternating rounds (each measurement: three 1 s windows, no "
        "stability gate; the repeats judge the noise), and a lead whose repeated runs overlap "
        "counts as a tie, settled by p99 (latency objective: by throughput); the report names the rule that "
        "decided. The winner is rendered by the build's templates, written to config.pbtxt atomically (previous file "
        "kept as config.pbtxt.orig), loaded from the file to prove Triton accepts it, and recorded in the manifest. "
        "Measurements go to --output (default: $XDG_CACHE_HOME/repo-gen/tune/<model>-<time>, i.e. ~/.cache/...).",
    )
    p.add_argument("--model-repository", type=Path, default=Path("model_repository"), metavar="DIR")
    p.add_argument("--model", required=True, metavar="NAME", help="Triton model name, e.g. mobilevit_s_py_fp32")
    p.add_argument("--objective", default="throughput", choices=["throughput", "latency", "balanced"],
                   help="throughput: most infer/s; latency: lowest p99; balanced: most infer/s per ms of p99 "
                   "(as Model Analyzer's perf_throughput / perf_latency_p99 / equal weights)")
    p.add_argument("--latency-budget-ms", type=float, default=None, metavar="MS",
                   help="p99 constraint for every objective (default: none)")
    p.add_argument("--leaders", type=int, default=2, metavar="N",
                   help="best candidates re-measured beside the current config")
    p.add_argument("--rounds", type=int, default=3, metavar="N",
                   help="measurements of each leader in all, its search measurement included: the others are taken "
                   "in alternating rounds, and a leader that can no longer win after two is not measured again "
                   "(0: decide on the search's single measurements)")
    g = p.add_argument_group("search grid")
    g.add_argument("--instance-counts", default="1,2,3,4", metavar="LIST")
    g.add_argument("--threads", default=None, metavar="LIST",
                   help="intra-op threads per instance to search (python-backend models); default: tied to the "
                   "instance count as cores // instances")
    g.add_argument("--queue-delays-us", default="0,100,500,2000", metavar="LIST", help="max_queue_delay_microseconds values")
    g.add_argument("--max-batch-sizes", default=None, metavar="LIST",
                   help="default: 1 (batching off), half the model's max and its max (never above the manifest's "
                   "max_batch_size)")
    g.add_argument("--preferred-batch-sizes", default=None, metavar="SETS",
                   help="';'-separated sets, 'none' for no preference, e.g. 'none;8;4,8' (default: none;<max>)")
    g.add_argument("--concurrency", default="1,2,4,8,16", metavar="SPEC", help="client concurrency of each candidate's sweep")
    g.add_argument("--beam", type=int, default=2, metavar="N",
                   help="search each dimension from the N best configs so far (1: plain coordinate search)")
    g.add_argument("--cores", type=int, default=None, help="CPU cores for instances x threads (default: this machine's)")
    p.add_argument("--input-data", default="real", choices=["real", "random"])
    p.add_argument("--output", "--work-dir", dest="output", type=Path, default=None, metavar="DIR",
                   help="raw measurements, server log and tune.json (default: $XDG_CACHE_HOME/repo-gen/tune/<model>-<time>, "
                   "~/.cache/repo-gen/... without XDG_CACHE_HOME)")
    p.add_argument("--dry-run", action="store_true", help="measure and report, change nothing")
    add_measurement_args(
        p, interval_ms=1000,
        stability_help="default: no gate; each measurement is exactly --max-trials windows, and tune judges the "
        "noise by repeating the leaders' measurements in alternating rounds. Give PCT to require the last 3 windows "
        "to agree within PCT%% (retried at 2x and 4x PCT), as repo-gen bench does",
        max_trials_help="windows per measurement (default: 3 without --stability-percentage, else 10 at most)")
    p.set_defaults(func=run)


def _preferred(spec: str | None):
    from repo_gen.errors import UserError

    if spec is None:
        return None
    sets: list[tuple[int, ...]] = []
    for part in spec.split(";"):
        part = part.strip()
        if part.lower() in ("", "none"):
            sets.append(())
            continue
        try:
            sets.append(tuple(sorted({int(v) for v in part.split(",")})))
        except ValueError:
            raise UserError(f"--preferred-batch-sizes {spec}: use ';'-separated comma lists, e.g. 'none;8;4,8'") from None
        if min(sets[-1]) < 1:
            raise UserError(f"--preferred-batch-sizes {spec}: sizes must be >= 1")
    return sets


def tune_settings(args: argparse.Namespace):
    """bench's settings, except that without --stability-percentage a measurement is a fixed number of
    windows with no stability gate (`repo_gen.perf.analyzer.UNGATED_STABILITY`)."""
    import dataclasses

    from repo_gen.commands.bench import settings_from_args
    from repo_gen.errors import UserError
    from repo_gen.perf.analyzer import UNGATED_STABILITY

    gated = args.stability_percentage is not None
    if args.max_trials is not None and args.max_trials < 3:
        raise UserError(f"--max-trials {args.max_trials}: perf_analyzer needs at least 3 windows")
    trials = args.max_trials if args.max_trials is not None else (10 if gated else 3)
    if gated:
        return settings_from_args(argparse.Namespace(**{**vars(args), "max_trials": trials}))
    s = settings_from_args(argparse.Namespace(**{**vars(args), "stability_percentage": UNGATED_STABILITY,
                                                 "max_trials": trials}))
    return dataclasses.replace(s, relax=())


def run(args: argparse.Namespace) -> int:
    from rich.table import Table

    from repo_gen.errors import UserError
    from repo_gen.log import console
    from repo_gen.perf.analyzer import parse_concurrency, parse_int_list
    from repo_gen.perf.tune import TuneConfig, TuneGrid, before_after_rows, run_tune

    if args.cores is not None and args.cores < 1:
        raise UserError(f"--cores {args.cores}: must be >= 1")
    grid = TuneGrid(
        instance_counts=parse_int_list(args.instance_counts, "--instance-counts", 1, 64),
        intra_op_threads=parse_int_list(args.threads, "--threads", 1, 1024) if args.threads else None,
        max_queue_delays_us=parse_int_list(args.queue_delays_us, "--queue-delays-us", 0, 10_000_000),
        max_batch_sizes=parse_int_list(args.max_batch_sizes, "--max-batch-sizes") if args.max_batch_sizes else None,
        preferred_batch_sizes=_preferred(args.preferred_batch_sizes),
        concurrency=parse_concurrency(args.concurrency),
        beam=args.beam,
    )
    cfg = TuneConfig(repo=args.model_repository, model=args.model, latency_budget_ms=args.latency_budget_ms,
                     objective=args.objective, leaders=args.leaders, rounds=args.rounds, grid=grid,
                     settings=tune_settings(args), work_dir=args.output, input_data=args.input_data,
                     cores=args.cores, dry_run=args.dry_run)
    result = run_tune(cfg)
    table = Table(title=f"{result.model}: before / after ({len(result.trials)} configs measured, {result.wall_s:.0f} s)")
    table.add_column("")
    table.add_column("before", justify="right")
    table.add_column("after", justify="right")
    for row in before_after_rows(result):
        table.add_row(*row)
    console.print(table)
    d = result.decision
    console.print(f"objective {result.objective}; decided by {d.rule}: {d.detail}" if d else
                  f"objective {result.objective}; decided on single measurements (--rounds 0)")
    if result.changed:
        console.print(f"wrote {result.config_path} (previous: config.pbtxt.orig); details: {result.work_dir / 'tune.json'}")
    else:
        why = "--dry-run" if args.dry_run else "the current config was not beaten measurably"
        console.print(f"config unchanged ({why}); details: {result.work_dir / 'tune.json'}")
    return 0

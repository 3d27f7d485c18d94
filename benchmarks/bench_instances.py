"""A/B of python-backend serving settings (instances, threads, queue delay), side by side.

    .venv/bin/python benchmarks/bench_instances.py [--model mobilevit_xxs] [--rounds 3] \
        [--variants '{"1x_all": {"count": 1}, "2x_shared": {"count": 2}}']

Copies `<model>_py_fp32` from benchmarks/out/repo (built by bench_serving.py's `ensure_built` when
missing) once per variant into a scratch repository, with the variant's instance count, queue delay
and `intra_op_threads` (0: model.py shares the cores among the instances), loads all of them into
one tritonserver and measures each with perf_analyzer (gRPC, concurrency 8, real photos), variant
after variant, `--rounds` times, so every variant sees the same machine load. This is the run that
chose the build's default of 2 python-backend instances (repo_gen/config.py, DEFAULT_INSTANCES).
JSON goes to benchmarks/out/bench_instances.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
OUT = ROOT / "benchmarks" / "out"

DEFAULT_VARIANTS = {"1x_all_cores": {"count": 1}, "2x_shared": {"count": 2}}


def write_variant(src: Path, dst: Path, name: str, opts: dict) -> None:
    """`src` copied to `dst` as model `name`, its config edited the way `repo-gen tune` edits one."""
    from dataclasses import replace

    from repo_gen.perf.tune import apply_candidate, candidate_of, config_text
    from repo_gen.triton.render import parse_config

    shutil.copytree(src, dst)
    cfg = parse_config((dst / "config.pbtxt").read_text(), str(dst / "config.pbtxt"))
    cand = replace(candidate_of(cfg), instance_count=int(opts.get("count", 1)),
                   intra_op_threads=int(opts.get("threads", 0)), max_queue_delay_us=int(opts.get("delay_us", 100)))
    cfg = apply_candidate(cfg, cand)
    cfg.name = name
    (dst / "config.pbtxt").write_text(config_text(cfg, f"bench_instances variant {name}: {cand.describe()}"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="mobilevit_xxs")
    ap.add_argument("--variants", default=json.dumps(DEFAULT_VARIANTS),
                    help='JSON {name: {"count": N, "threads": T, "delay_us": D}}')
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--interval-ms", type=int, default=4000)
    args = ap.parse_args()

    from bench_serving import ensure_built, model_stats

    from repo_gen import log
    from repo_gen.config import validate_model_name
    from repo_gen.perf.analyzer import Analyzer, PerfSettings
    from repo_gen.perf.bench import machine_description
    from repo_gen.perf.input_data import write_input_data
    from repo_gen.triton.repository import read_manifest
    from repo_gen.triton.server import TritonServer, free_ports

    log.setup()
    variants = json.loads(args.variants)
    for v in variants:
        validate_model_name(v, "--variants name")
    src_repo = OUT / "repo"
    base = ensure_built(src_repo, args.model)
    data = read_manifest(src_repo)["models"][base]["data"]
    work = OUT / "bench_instances"
    shutil.rmtree(work, ignore_errors=True)
    repo = work / "repo"
    repo.mkdir(parents=True)
    for v, opts in variants.items():
        write_variant(src_repo / base, repo / v, v, opts)
    settings = PerfSettings(measurement_interval_ms=args.interval_ms, stability_percentage=100, max_trials=4, relax=(1000,))
    rows: dict[str, list[dict]] = {v: [] for v in variants}
    results: dict = {"date": time.strftime("%Y-%m-%d %H:%M:%S"), "machine": machine_description(),
                     "command": " ".join([Path(sys.executable).name, *sys.argv]), "loadavg_start": os.getloadavg(),
                     "variants": variants}
    with TritonServer(repo, ports=free_ports(), models=list(variants), log_path=work / "tritonserver.log") as server:
        analyzer = Analyzer(server.grpc_url, work / "raw", settings)
        inputs = {v: write_input_data(work / f"{v}.json", repo / v, data, "real", count=16) for v in variants}
        for r in range(args.rounds):
            for v in variants:
                inf0, exe0 = model_stats(server.http_url, v)
                p = analyzer.measure(v, 1, args.concurrency, inputs[v])
                inf1, exe1 = model_stats(server.http_url, v)
                formed = (inf1 - inf0) / max(1, exe1 - exe0)
                rows[v].append({"served": p.throughput, "p99_ms": p.p99_ms, "formed_batch": formed})
                print(f"round {r + 1} {v}: {p.throughput:.1f} infer/s, batch formed {formed:.2f}, p99 {p.p99_ms:.0f} ms", flush=True)
    results["loadavg_end"] = os.getloadavg()
    results["rounds"] = rows
    results["median"] = {v: {k: statistics.median(x[k] for x in xs) for k in ("served", "p99_ms", "formed_batch")} for v, xs in rows.items()}
    (OUT / "bench_instances.json").write_text(json.dumps(results, indent=2))
    print("\nvariant              served infer/s  p99 ms  batch formed  (median of rounds)")
    for v, m in results["median"].items():
        print(f"{v:20s} {m['served']:14.1f}  {m['p99_ms']:6.0f}  {m['formed_batch']:12.2f}")
    print(f"wrote {OUT / 'bench_instances.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

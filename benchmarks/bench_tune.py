"""Issue 6 benchmarks, one run: batching on/off, in-process scaling, tuned vs default, bench overhead.

    .venv/bin/python benchmarks/bench_tune.py [--budget-ms 500] [--skip-overhead]

A. In-process ONNX Runtime scaling of mobilevit_s: batch 1/4/8/16 x intra-op threads 1/2 (one
   session, as the generated model.py builds it), plus 2 sessions x 1 thread run from 2 Python
   threads (what 2 Triton instances do). Measured before the tune and again after it; the best
   value seen anywhere is the reference (the strictest one).
B. Served mobilevit_s_py_fp32 at concurrency 16, gRPC: dynamic batching on (the build's config)
   vs off (the same config without dynamic_batching, loaded through the repository API).
C. `repo-gen tune` (library call, default grid) on a copy of the model with a p99 budget: the
   default config is its first candidate, so "before" and "after" are measured the same way in
   the same run. Targets: tuned >= default; tuned >= 0.9 x best in-process (A).
D. `repo-gen bench` overhead: 3 variants (mobilevit_xxs/xs/s, py fp32) x 4 concurrency points
   with the default measurement settings; target <= 5 minutes of wall time.

JSON goes to benchmarks/out/bench_tune.json; tune and bench outputs next to it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
OUT = ROOT / "benchmarks" / "out"

from bench_serving import ensure_built, in_process_throughput, model_py_session  # noqa: E402


def parallel_sessions_throughput(onnx: Path, images, sessions: int, threads: int, seconds: float) -> float:
    """`sessions` ORT sessions of `threads` threads each, one Python thread per session, batch 1
    (ORT releases the GIL while it runs): the in-process twin of `sessions` Triton instances."""
    sess = [model_py_session(onnx, threads) for _ in range(sessions)]
    rates = [0.0] * sessions
    stop = time.perf_counter() + seconds

    def work(i: int) -> None:
        sess[i].run(None, {"input": images[i : i + 1]})  # warm-up
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() < stop:
            sess[i].run(None, {"input": images[(n + i) % len(images)][None]})
            n += 1
        rates[i] = n / max(1e-9, time.perf_counter() - t0)

    ts = [threading.Thread(target=work, args=(i,)) for i in range(sessions)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return sum(rates)


def in_process_grid(onnx: Path, images, seconds: float) -> list[dict]:
    """Batch 1/4/8/16 x threads 1/2 x ORT spinning off (as model.py) / on (ORT's default)."""
    rows = []
    for spinning in (False, True):
        for threads in (1, 2):
            session = model_py_session(onnx, threads, spinning=spinning)
            for batch in (1, 4, 8, 16):
                v = in_process_throughput(session, images, batch, seconds)
                what = f"1 session x {threads} thr, batch {batch}{', spinning' if spinning else ''}"
                rows.append({"what": what, "threads": threads, "batch": batch, "spinning": spinning, "img_s": v})
                print(f"  in-process {what}: {v:.1f} img/s", flush=True)
    v = parallel_sessions_throughput(onnx, images, 2, 1, seconds)
    rows.append({"what": "2 sessions x 1 thr, batch 1", "threads": 1, "batch": 1, "sessions": 2, "img_s": v})
    print(f"  in-process {rows[-1]['what']}: {v:.1f} img/s", flush=True)
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repo", type=Path, default=OUT / "repo")
    ap.add_argument("--budget-ms", type=float, default=500.0, help="p99 budget for the tune (C)")
    ap.add_argument("--seconds", type=float, default=4.0, help="in-process timing per configuration")
    ap.add_argument("--skip-overhead", action="store_true", help="leave out D")
    args = ap.parse_args()

    from repo_gen import log
    from repo_gen.perf.analyzer import Analyzer, PerfSettings
    from repo_gen.perf.bench import BenchConfig, machine_description, run_bench
    from repo_gen.perf.input_data import real_tensors, write_input_data
    from repo_gen.perf.tune import TuneConfig, TuneGrid, config_json, run_tune
    from repo_gen.triton.render import parse_config
    from repo_gen.triton.repository import read_manifest
    from repo_gen.triton.server import TritonServer, free_ports

    log.setup()
    OUT.mkdir(parents=True, exist_ok=True)
    t_all = time.perf_counter()
    names = {m: ensure_built(args.repo, m) for m in ("mobilevit_xxs", "mobilevit_xs", "mobilevit_s")}
    s_name = names["mobilevit_s"]
    manifest = read_manifest(args.repo)["models"]
    data = manifest[s_name]["data"]
    images = real_tensors(data, 16)
    onnx = args.repo / s_name / "1" / "model.onnx"
    res: dict = {"date": time.strftime("%Y-%m-%d %H:%M:%S"), "machine": machine_description(),
                 "command": " ".join([Path(sys.executable).name, *sys.argv]), "budget_ms": args.budget_ms,
                 "loadavg_start": os.getloadavg()}

    print("A. in-process scaling (before the tune)", flush=True)
    res["in_process_before"] = in_process_grid(onnx, images, args.seconds)

    print("B. served at concurrency 16: dynamic batching on vs off", flush=True)
    work = OUT / "bench_tune"
    work.mkdir(parents=True, exist_ok=True)
    settings = PerfSettings(measurement_interval_ms=3000, stability_percentage=10, relax=(20, 40, 1000))
    with TritonServer(args.repo, ports=free_ports(), models=[s_name], log_path=work / "tritonserver.log") as server:
        analyzer = Analyzer(server.grpc_url, work / "raw", settings)
        data_arg = write_input_data(work / "input.json", args.repo / s_name, data, "real")
        on = analyzer.measure(s_name, 1, 16, data_arg)
        cfg = parse_config((args.repo / s_name / "config.pbtxt").read_text())
        cfg.ClearField("dynamic_batching")
        status, body = server.load_model(s_name, config_json(cfg))
        if status != 200:
            raise SystemExit(f"could not load the no-batching config: {body}")
        analyzer.work_dir = work / "raw_off"
        analyzer.work_dir.mkdir(parents=True, exist_ok=True)
        off = analyzer.measure(s_name, 1, 16, data_arg)
    res["batching"] = {k: {"throughput": p.throughput, "p99_ms": p.p99_ms, "queue_ms": p.server_queue_us / 1e3,
                           "infer_ms": p.server_compute_infer_us / 1e3, "stable_within_pct": p.stability_percentage,
                           "command": p.command} for k, p in (("on", on), ("off", off))}
    print(f"  on {on.throughput:.1f}/s p99 {on.p99_ms:.0f} ms; off {off.throughput:.1f}/s p99 {off.p99_ms:.0f} ms", flush=True)

    print(f"C. tune (default grid, p99 budget {args.budget_ms:g} ms)", flush=True)
    tune_repo = OUT / "tune_repo"
    shutil.rmtree(tune_repo, ignore_errors=True)
    tune_repo.mkdir(parents=True)
    shutil.copytree(args.repo / s_name, tune_repo / s_name)
    m = read_manifest(args.repo)
    m["models"] = {s_name: m["models"][s_name]}
    (tune_repo / "repo-gen.json").write_text(json.dumps(m, indent=2))
    t0 = time.perf_counter()
    # Concurrency up to 8: at ~30 img/s, 16 outstanding requests alone cost ~530 ms, over the budget.
    tr = run_tune(TuneConfig(tune_repo, s_name, latency_budget_ms=args.budget_ms,
                             grid=TuneGrid(concurrency=[1, 2, 4, 8]),
                             settings=PerfSettings(measurement_interval_ms=2000), work_dir=OUT / "tune_work"))
    res["tune"] = {"wall_s": round(time.perf_counter() - t0, 1), "changed": tr.changed,
                   "before": tr.before.row(), "after": tr.after.row(), "gain": tr.gain,
                   "trials": [{"config": t.candidate.describe(), "score": t.score, "error": t.error} for t in tr.trials]}
    print(f"  default {tr.before.score:.1f}/s -> tuned {tr.after.score:.1f}/s ({tr.after.candidate.describe()})", flush=True)

    print("A'. in-process scaling (after the tune)", flush=True)
    res["in_process_after"] = in_process_grid(onnx, images, args.seconds)
    best_in = max(res["in_process_before"] + res["in_process_after"], key=lambda r: r["img_s"])
    single = [r for r in res["in_process_before"] + res["in_process_after"] if "sessions" not in r]
    best_single = max(single, key=lambda r: r["img_s"])
    res["best_in_process"] = best_in
    res["best_in_process_single_session"] = best_single
    res["ratios"] = {
        "tuned_over_best_in_process": tr.after.score / best_in["img_s"],
        "tuned_over_best_single_session": tr.after.score / best_single["img_s"],
        "tuned_over_default": tr.after.score / tr.before.score if tr.before.score else None,
        "batching_on_over_off": on.throughput / off.throughput,
    }

    if not args.skip_overhead:
        print("D. bench overhead: 3 variants x 4 concurrency points", flush=True)
        t0 = time.perf_counter()
        br = run_bench(BenchConfig(args.repo, models=list(names.values()), concurrency=[1, 2, 4, 8],
                                   output=OUT / "bench_overhead", latency_budget_ms=args.budget_ms))
        wall = time.perf_counter() - t0
        res["bench_overhead"] = {"wall_s": round(wall, 1), "points": len(br.points), "within_5_min": wall <= 300,
                                 "unstable_points": sum(not p.stable for p in br.points), "problems": br.problems,
                                 "report": str(br.report)}
        print(f"  {len(br.points)} points in {wall:.0f} s", flush=True)

    res["wall_s"] = round(time.perf_counter() - t_all, 1)
    res["loadavg_end"] = os.getloadavg()
    (OUT / "bench_tune.json").write_text(json.dumps(res, indent=2, default=str))
    r = res["ratios"]
    print(f"\nbatching on/off at c16: {r['batching_on_over_off']:.3f}")
    print(f"tuned {tr.after.score:.1f} vs default {tr.before.score:.1f}: x{r['tuned_over_default'] or 0:.3f}")
    print(f"tuned / best in-process ({best_in['what']}, {best_in['img_s']:.1f}): {r['tuned_over_best_in_process']:.3f}")
    print(f"tuned / best single-session in-process ({best_single['what']}): {r['tuned_over_best_single_session']:.3f}")
    if "bench_overhead" in res:
        print(f"bench 3 variants x 4 points: {res['bench_overhead']['wall_s']:.0f} s")
    print(f"wrote {OUT / 'bench_tune.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

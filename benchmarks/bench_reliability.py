"""Reliability figures on the CPU machine: soak, crash-restart, hot update, bad-input matrix.

    .venv/bin/python benchmarks/bench_reliability.py --soak-seconds 120 --concurrency 32 --out benchmarks/out/reliability

1. Soak: `repo-gen serve` on a py-only repository of the test model (env REPO_GEN_TEST_MODEL, default
   mobilevit_xxs; max batch 8, the build of tests/reliability/helpers.py PY_ONLY), perf_analyzer over
   gRPC at the given concurrency for --soak-seconds (three equal windows, every request exported);
   served / failed requests, p99 of the first and the last 10 s slice, Triton's failure counter.
2. Crash-restart: under client load, SIGKILL tritonserver, start `repo-gen serve` again on the same
   ports; seconds to READY and to the first successful request (--restarts times, median).
3. Hot update: `repo-gen serve --model-control poll` with a client loop; `repo-gen build --version N+1`
   into the served repository; failed requests and whether the old version was retired.
4. Bad-input matrix: runs tests/reliability/test_bad_inputs.py and counts cases tried / intact / skipped.

Everything goes to --out (perf_analyzer log, JSON of every figure); the last lines printed are the
table for benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.conftest import TEST_MAX_BATCH  # noqa: E402
from tests.reliability.helpers import (  # noqa: E402
    PY_MODEL,
    PY_ONLY,
    REPO_GEN,
    ClientLoop,
    child_pids,
    cli,
    http_get,
    metric_sum,
    reap_orphan_stubs,
    serve_args,
    served_cli,
    stub_processes_of,
    versions_served,
    wait_ready,
)
from tests.reliability.soak import run_soak  # noqa: E402


def build_repo(out: Path, version: int = 1) -> float:
    t0 = time.perf_counter()
    r = cli(["build", *PY_ONLY, "--version", str(version), "--output", str(out)], timeout=900)
    if r.returncode != 0:
        raise SystemExit(f"build failed:\n{r.stderr[-3000:]}")
    return time.perf_counter() - t0


def soak(repo: Path, out: Path, seconds: float, concurrency: int) -> dict:
    from repo_gen.tools import find_perf_analyzer

    pa = find_perf_analyzer()
    with served_cli(repo) as (_proc, ports):
        murl = f"127.0.0.1:{ports.metrics}"
        f0 = metric_sum(murl, "nv_inference_request_failure", PY_MODEL)
        s0 = metric_sum(murl, "nv_inference_request_success", PY_MODEL)
        res = run_soak(pa, f"127.0.0.1:{ports.grpc}", PY_MODEL, concurrency, seconds, out, window_s=10.0)
        res["metric_failures"] = metric_sum(murl, "nv_inference_request_failure", PY_MODEL) - f0
        res["metric_successes"] = metric_sum(murl, "nv_inference_request_success", PY_MODEL) - s0
        res["ready_after"] = http_get(f"http://127.0.0.1:{ports.http}/v2/health/ready")[0] == 200
    res.pop("output_tail", None)
    return res


def crash_restart(repo: Path, out: Path, rounds: int) -> dict:
    from repo_gen.triton.server import free_ports

    ports = free_ports()
    args = serve_args(repo, ports)
    grpc_url, http_url = f"127.0.0.1:{ports.grpc}", f"127.0.0.1:{ports.http}"
    ready_s, first_ok_s, orphans = [], [], []
    log = open(out / "crash_restart_serve.log", "w")  # noqa: SIM115
    proc = subprocess.Popen([REPO_GEN, *args], stdout=log, stderr=subprocess.STDOUT)  # noqa: S603
    wait_ready(http_url, 300)
    loops = [ClientLoop(grpc_url, PY_MODEL) for _ in range(3)]
    for lp in loops:
        lp.__enter__()
    try:
        for _ in range(rounds):
            time.sleep(3.0)  # under load
            kids = child_pids(proc.pid)
            stubs = stub_processes_of(kids[0])
            os.kill(kids[0], signal.SIGKILL)
            rc = proc.wait(60)
            assert rc == 1, f"repo-gen serve exited {rc} after tritonserver was killed"
            time.sleep(2.0)
            orphans.append(len(reap_orphan_stubs(stubs)))  # upstream: orphaned python-backend stubs survive their server
            t0 = time.monotonic()
            proc = subprocess.Popen([REPO_GEN, *args], stdout=log, stderr=subprocess.STDOUT)  # noqa: S603
            wait_ready(http_url, 300)
            ready_s.append(time.monotonic() - t0)
            ok0 = sum(lp.ok for lp in loops)
            while sum(lp.ok for lp in loops) == ok0 and time.monotonic() - t0 < 120:
                time.sleep(0.02)
            first_ok_s.append(time.monotonic() - t0)
    finally:
        for lp in loops:
            lp.__exit__(None, None, None)
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
        log.close()
    return {"rounds": rounds, "restart_to_ready_s": [round(x, 2) for x in ready_s],
            "restart_to_ready_median_s": round(statistics.median(ready_s), 2),
            "restart_to_first_success_s": [round(x, 2) for x in first_ok_s],
            "restart_to_first_success_median_s": round(statistics.median(first_ok_s), 2),
            "orphaned_stubs_per_crash": orphans}


def hot_update(repo: Path) -> dict:
    versions = sorted(int(p.name) for p in (repo / PY_MODEL).iterdir() if p.name.isdigit())
    new = versions[-1] + 1
    with served_cli(repo, "--model-control", "poll") as (_proc, ports):
        http_url = f"127.0.0.1:{ports.http}"

        with ClientLoop(f"127.0.0.1:{ports.grpc}", PY_MODEL, period_s=0.01) as loop:
            time.sleep(2.0)
            t0 = time.monotonic()
            build_s = build_repo(repo, new)
            while versions_served(http_url) != [str(new)] and time.monotonic() - t0 < 120:
                time.sleep(0.05)
            live_s = time.monotonic() - t0
            time.sleep(3.0)
        old_ready = http_get(f"http://{http_url}/v2/models/{PY_MODEL}/versions/{new - 1}/ready")[0] == 200
        return {"new_version": new, "requests": loop.ok + loop.failed, "failed": loop.failed, "errors": loop.errors[:5],
                "served_versions_after": versions_served(http_url), "old_version_ready_after": old_ready,
                "build_s": round(build_s, 2), "live_after_build_start_s": round(live_s, 2)}


def matrix(out: Path) -> dict:
    xml = out / "bad_inputs.xml"
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",  # noqa: S603
                        "tests/reliability/test_bad_inputs.py::test_bad_input", f"--junitxml={xml}"],
                       cwd=ROOT, capture_output=True, text=True, timeout=1800)
    text = xml.read_text() if xml.exists() else ""

    def count(attr: str) -> int:
        m = re.search(rf'{attr}="(\d+)"', text)
        return int(m.group(1)) if m else -1

    tests, failures, errors, skipped = count("tests"), count("failures"), count("errors"), count("skipped")
    skip_reasons = sorted(set(re.findall(r'<skipped[^>]*message="([^"]*)"', text)))
    return {"cases": tests, "intact": tests - failures - errors - skipped, "failed": failures + errors,
            "skipped": skipped, "skip_reasons": skip_reasons, "seconds": round(time.perf_counter() - t0, 1),
            "pytest_tail": r.stdout[-1500:]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--soak-seconds", type=float, default=120.0)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--restarts", type=int, default=3)
    ap.add_argument("--skip-matrix", action="store_true")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out" / "reliability")
    args = ap.parse_args()
    out = args.out.absolute()
    out.mkdir(parents=True, exist_ok=True)
    repo = out / "model_repository"
    shutil.rmtree(repo, ignore_errors=True)
    results: dict = {"date": time.strftime("%Y-%m-%d"), "machine": f"{platform.node()} ({os.cpu_count()} CPUs)",
                     "model": f"{PY_MODEL} (max batch {TEST_MAX_BATCH}, python backend + ONNX Runtime, tritonserver 2.51)",
                     "command": " ".join(sys.argv)}
    results["build_s"] = round(build_repo(repo), 2)
    print("soak ...", flush=True)
    results["soak"] = soak(repo, out, args.soak_seconds, args.concurrency)
    print(json.dumps(results["soak"], indent=1, default=str)[:1500], flush=True)
    print("crash-restart ...", flush=True)
    results["crash_restart"] = crash_restart(repo, out, args.restarts)
    print(json.dumps(results["crash_restart"]), flush=True)
    print("hot update ...", flush=True)
    results["hot_update"] = hot_update(repo)
    print(json.dumps(results["hot_update"]), flush=True)
    if not args.skip_matrix:
        print("bad-input matrix ...", flush=True)
        results["matrix"] = matrix(out)
    (out / "reliability.json").write_text(json.dumps(results, indent=2, default=str) + "\n")

    s, c, h = results["soak"], results["crash_restart"], results["hot_update"]
    print("\n| figure | value |\n|---|---|")
    if "matrix" in results:
        mx = results["matrix"]
        print(f"| bad inputs tried / repository intact / skipped | {mx['cases']} / {mx['intact']} / {mx['skipped']} |")
    print(f"| soak {args.soak_seconds:.0f} s at concurrency {args.concurrency}: served / failed | "
          f"{s.get('served')} / {s.get('failed')} (Triton failure counter +{s.get('metric_failures'):.0f}) |")
    print(f"| soak p99 first / last 10 s slice | {s.get('p99_first_ms')} / {s.get('p99_last_ms')} ms "
          f"(ratio {s.get('p99_last_ms', 0) / max(s.get('p99_first_ms', 1), 1e-9):.2f}; overall p50 {s.get('p50_ms')} ms, "
          f"{s.get('throughput')} infer/s) |")
    print(f"| restart-to-ready after SIGKILL (median of {c['rounds']}) | {c['restart_to_ready_median_s']} s "
          f"(first success {c['restart_to_first_success_median_s']} s) |")
    print(f"| hot update v{h['new_version'] - 1} -> v{h['new_version']} (poll): requests / failed | "
          f"{h['requests']} / {h['failed']}; served after: {h['served_versions_after']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

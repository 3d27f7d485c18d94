"""A perf_analyzer soak with per-window latency: used by the short soak test and benchmarks/bench_reliability.py.

perf_analyzer measures `seconds` in three equal time windows (stability threshold set so high that
three windows always count as stable, so the run lasts exactly that long) and exports every
request with its timestamps (`--profile-export-file`). From those we count served and failed
requests and compute p99 latency per `window_s` slice of the run, so drift shows as the last
slice's p99 against the first's.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from repo_gen import procs


def run_soak(pa: Any, grpc_url: str, model: str, concurrency: int, seconds: float, out_dir: Path,
             window_s: float | None = None) -> dict[str, Any]:
    """Run perf_analyzer against `model` at `grpc_url`; `window_s` None resolves to seconds / 5."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    profile = out_dir / "soak_profile.json"
    csv = out_dir / "soak.csv"
    interval_ms = int(seconds * 1000 / 3)
    argv = [str(pa.binary), "-m", model, "-u", grpc_url, "-i", "grpc", "--concurrency-range", str(concurrency),
            "--measurement-mode", "time_windows", "--measurement-interval", str(interval_ms),
            "--stability-percentage", "100000", "--max-trials", "3", "--percentile", "99",
            "--profile-export-file", str(profile), "-f", str(csv)]
    rc, out, _ = procs.run(argv, seconds * 3 + 300, env=pa.env)  # own group, killed with us
    (out_dir / "soak_perf_analyzer.log").write_text(" ".join(argv) + "\n\n" + out)
    res: dict[str, Any] = {"argv": argv, "returncode": rc, "output_tail": out[-3000:],
                           "concurrency": concurrency, "seconds": seconds}
    if not profile.exists():
        res.update(served=0, failed=-1)
        return res
    # Output tensors are exported as raw bytes inside JSON strings: decode byte-for-byte.
    data = json.loads(profile.read_bytes().decode("latin-1"))
    starts, lat, failed = [], [], 0
    for exp in data["experiments"]:
        for r in exp["requests"]:
            if r.get("response_timestamps"):
                starts.append(r["timestamp"])
                lat.append((r["response_timestamps"][-1] - r["timestamp"]) / 1e6)
            else:
                failed += 1
    profile.unlink()  # tens of MB of logits; the numbers below are what matters
    starts_a, lat_a = np.asarray(starts, dtype=np.int64), np.asarray(lat)
    t0, t1 = int(starts_a.min()), int(starts_a.max())
    span_s = (t1 - t0) / 1e9
    window_s = window_s or span_s / 5
    n = max(1, int(span_s // window_s))
    edges = [t0 + int(i * window_s * 1e9) for i in range(n)] + [t1 + 1]
    p99s, counts = [], []
    for a, b in zip(edges[:-1], edges[1:], strict=True):
        sel = lat_a[(starts_a >= a) & (starts_a < b)]
        counts.append(int(sel.size))
        p99s.append(round(float(np.percentile(sel, 99)), 2) if sel.size else float("nan"))
    res.update(served=len(lat), failed=failed, span_s=round(span_s, 2), throughput=round(len(lat) / max(span_s, 1e-9), 2),
               p50_ms=round(float(np.percentile(lat_a, 50)), 2), p99_ms=round(float(np.percentile(lat_a, 99)), 2),
               window_s=round(window_s, 2), p99_windows_ms=p99s, requests_per_window=counts,
               p99_first_ms=p99s[0], p99_last_ms=p99s[-1])
    return res

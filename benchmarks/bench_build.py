"""Benchmark: `repo-gen build` wall time for one model (FP32 only), with the time per stage.

Target (issue 2): <= 30 s for mobilevit_s on a 2-core CPU machine. Runs the installed CLI as a
user would (a fresh process, stage cache disabled so nothing is reused), several times, and
reports the median wall time and the median of each stage from the manifest's build record.

    python benchmarks/bench_build.py [--model mobilevit_s] [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="mobilevit_s")
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    exe = str(Path(sys.executable).parent / "repo-gen")
    walls, stages = [], []
    for i in range(args.runs):
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "model_repository"
            argv = [exe, "-q", "build", "--model", args.model, "--precisions", "fp32", "--runtimes", "onnx,py",
                    "--no-pipeline", "--no-cache", "--output", str(out)]
            t0 = time.perf_counter()
            proc = subprocess.run(argv, capture_output=True, text=True)
            wall = time.perf_counter() - t0
            if proc.returncode != 0:
                print(proc.stderr, file=sys.stderr)
                return 1
            record = json.loads((out / "repo-gen.json").read_text())["builds"][args.model]
            walls.append(wall)
            stages.append(record["timings_s"])
            print(f"run {i + 1}: {wall:.1f} s wall")
    names = list(stages[0])
    result = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.node()} ({len(__import__('os').sched_getaffinity(0))} CPUs)",
        "command": " ".join(["repo-gen", "build", "--model", args.model, "--precisions", "fp32",
                             "--runtimes", "onnx,py", "--no-pipeline", "--no-cache"]),
        "runs": args.runs,
        "wall_s_median": round(statistics.median(walls), 2),
        "wall_s_all": [round(w, 2) for w in walls],
        "stage_s_median": {n: round(statistics.median(s.get(n, 0.0) for s in stages), 2) for n in names},
        "target_s": 30,
    }
    print(f"\n{'stage':<24}{'median s':>10}")
    for n, v in result["stage_s_median"].items():
        print(f"{n:<24}{v:>10.2f}")
    print(f"{'wall (process)':<24}{result['wall_s_median']:>10.2f}   target <= 30 s")
    out_dir = ROOT / "benchmarks" / "out"
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"build_{args.model}.json").write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

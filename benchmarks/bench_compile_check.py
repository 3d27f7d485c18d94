"""Benchmark: the TensorRT-RTX compile check of every TensorRT-bound graph of a model.

Builds the TensorRT plan models of each model (FP32, FP16, INT8; plan runtime only, small
calibration and evaluation sets: only the graphs matter here), then compile-checks each
`model.onnx` again `--runs` times in a fresh child process, as `repo-gen build` does, and
reports layers, engine size and the median check time. The engine is TensorRT-RTX's, built
ahead of time for SM89 and discarded: it is not the serving plan.

    python benchmarks/bench_compile_check.py [--models mobilevit_xxs,mobilevit_s] [--runs 3] [--io-dtype fp32]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> int:
    from repo_gen.build import build
    from repo_gen.config import BuildConfig
    from repo_gen.log import setup
    from repo_gen.triton.repository import read_manifest
    from repo_gen.trt.compile_check import compile_check, library_status
    from repo_gen.trt.profile import profile_shapes

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="mobilevit_xxs,mobilevit_s")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--max-batch", type=int, default=64)
    ap.add_argument("--io-dtype", default="fp32", choices=("fp32", "fp16"))
    args = ap.parse_args()
    setup(quiet=True)
    version, why = library_status()
    if version is None:
        print(f"TensorRT-RTX: {why}", file=sys.stderr)
        return 1
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for model in args.models.split(","):
            repo = Path(tmp) / model
            cfg = BuildConfig(model=model, output=repo, max_batch=args.max_batch, precisions=("fp32", "fp16", "int8"),
                              runtimes=("trt",), io_dtype=args.io_dtype, pipeline=False, calib_count=32, eval_count=16)
            build(cfg)
            assert cfg.image_size is not None and cfg.opt_batch is not None
            profile = profile_shapes("input", (3, cfg.image_size, cfg.image_size), cfg.opt_batch, cfg.max_batch)
            for name, entry in sorted(read_manifest(repo)["models"].items()):
                checks = [compile_check(repo / name / "model.onnx", profile) for _ in range(args.runs)]
                failed = [c for c in checks if c.status != "passed"]
                if failed:
                    print(f"{name}: {failed[0].summary}", file=sys.stderr)
                    return 1
                rows.append({"model": name, "precision": entry["precision"], "layers": checks[0].layers,
                             "engine_mb": round(checks[0].engine_bytes / 1e6, 1),
                             "seconds_median": round(statistics.median(c.seconds for c in checks), 2),
                             "seconds_all": [c.seconds for c in checks]})
    result = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.node()} ({len(os.sched_getaffinity(0))} CPUs, load {os.getloadavg()[0]:.1f})",
        "command": "python benchmarks/bench_compile_check.py " + " ".join(sys.argv[1:]),
        "library": f"TensorRT-RTX {version}", "target": "SM89", "io_dtype": args.io_dtype,
        "max_batch": args.max_batch, "runs": args.runs, "rows": rows,
    }
    print(f"\n{'model':<28}{'layers':>8}{'engine MB':>11}{'check s (median)':>18}")
    for r in rows:
        print(f"{r['model']:<28}{r['layers']:>8,}{r['engine_mb']:>11.1f}{r['seconds_median']:>18.2f}")
    out_dir = ROOT / "benchmarks" / "out"
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"compile_check_{args.io_dtype}.json").write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

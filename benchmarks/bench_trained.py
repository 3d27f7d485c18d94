#!/usr/bin/env python3
"""The trained model through the whole tool: served accuracy per precision and what the build decided.

    python benchmarks/bench_trained.py [--quickstart]      # --quickstart also times `bash scripts/quickstart.sh`

mobilevit_xxs trained on scikit-learn's digits (repo_gen.fixtures.digits; trained first if not cached),
built with `repo-gen build` (FP32/FP16/INT8, python-backend runtime, calibration on 256 training digits,
evaluation on all 540 held-out digits), served by a real tritonserver:

* served top-1 per precision over the 540 held-out digits (gRPC), next to ONNX Runtime in process
  on the same model.onnx files;
* FP16/INT8 fidelity vs FP32 (mean cosine, top-1 agreement) and nodes kept in higher precision, from
  the build's manifest;
* INT8 calibration time and the build's wall time; with --quickstart the main job's wall time.

Prints a table; writes every number to benchmarks/out/trained.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MODEL = "mobilevit_xxs"
PRECISIONS = ("fp32", "fp16", "int8")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quickstart", action="store_true", help="also time `bash scripts/quickstart.sh` (a few minutes)")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out" / "trained.json")
    args = p.parse_args()

    from repo_gen.build import build
    from repo_gen.config import BuildConfig
    from repo_gen.fixtures.digits import (
        default_checkpoint,
        ensure_digits_checkpoint,
        heldout_accuracy,
        write_digit_folders,
    )
    from repo_gen.log import setup
    from repo_gen.pipeline.accuracy import markdown
    from repo_gen.triton.server import TritonServer, free_ports

    setup()
    result: dict = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": platform.node(),
                    "cpus": len(os.sched_getaffinity(0)), "load_avg_1m_start": os.getloadavg()[0]}
    t0 = time.perf_counter()
    cached = default_checkpoint().is_file()
    ckpt = ensure_digits_checkpoint()
    result["training"] = {"cached": cached, "seconds": None if cached else round(time.perf_counter() - t0, 1)}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        heldout = write_digit_folders(work / "heldout", "test")
        calib = write_digit_folders(work / "calib", "train", count=256)
        cfg = BuildConfig(model=MODEL, weights=ckpt, output=work / "model_repository", max_batch=8,
                          precisions=PRECISIONS, runtimes=("py",), calib_dir=calib, calib_count=256,
                          eval_dir=heldout, eval_count=540, use_cache=False)
        t = time.perf_counter()
        report = build(cfg)
        result["build_seconds"] = round(time.perf_counter() - t, 1)
        result["timings_s"] = report.timings_s
        variants = {v.precision: v.record() for v in report.variants}
        with TritonServer(cfg.output, ports=free_ports(), exit_on_error=False) as server:
            rows = heldout_accuracy(cfg.output, [f"{MODEL}_py_{p}" for p in PRECISIONS], server.url("grpc"))
    result["accuracy"] = [asdict(r) for r in rows]
    result["variants"] = {}
    for prec, v in variants.items():
        fid, rep = (v.get("fidelity") or {}).get("metrics") or {}, v.get("report") or {}
        result["variants"][prec] = {
            "status": v["status"], "cosine_mean": fid.get("cosine_mean"), "top1_agreement": fid.get("top1_agreement"),
            "kept_higher_precision": rep.get("fp32_nodes", rep.get("kept_float_nodes")),
            "search_stop": (rep.get("search") or {}).get("stop_reason"),
        }
    result["int8_calibration_s"] = report.timings_s.get("int8 calibration")
    if args.quickstart:
        t = time.perf_counter()
        env = dict(os.environ, OUT=str(Path(tempfile.mkdtemp()) / "model_repository"))
        proc = subprocess.run(["bash", "scripts/quickstart.sh"], cwd=ROOT, env=env, capture_output=True, text=True)
        result["quickstart"] = {"seconds": round(time.perf_counter() - t, 1), "rc": proc.returncode,
                                "tail": proc.stdout[-3000:]}
    result["load_avg_1m_end"] = os.getloadavg()[0]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")

    print(markdown(rows))
    print()
    print("| precision | status | cosine mean vs FP32 | top-1 agreement | nodes kept higher | search stop |")
    print("|---|---|---|---|---|---|")
    for prec, v in result["variants"].items():
        cos = "-" if v["cosine_mean"] is None else f"{v['cosine_mean']:.6f}"
        agree = "-" if v["top1_agreement"] is None else f"{v['top1_agreement'] * 100:.1f}%"
        print(f"| {prec} | {v['status']} | {cos} | {agree} | {'-' if v['kept_higher_precision'] is None else v['kept_higher_precision']} | {v['search_stop'] or '-'} |")
    print(f"\nINT8 calibration {result['int8_calibration_s']} s; build {result['build_seconds']} s; "
          f"training {'cached' if cached else str(result['training']['seconds']) + ' s'}"
          + (f"; quickstart {result['quickstart']['seconds']} s (rc {result['quickstart']['rc']})" if args.quickstart else "")
          + f"; load average {result['load_avg_1m_start']:.1f} -> {result['load_avg_1m_end']:.1f}; -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark: the detection path end to end on this machine.

    python benchmarks/bench_detection.py [--weights CKPT] [--max-batch 8] [--out benchmarks/out]

1. Builds ssdlite_mobilevit_xxs (the cached digits-on-photos fixture; trained first when missing) with
   FP32/FP16/INT8, python + onnxruntime + TensorRT-plan configs and the pipeline: build time per stage
   and mAP per precision (held-out fixture scenes, pycocotools).
2. Serves the python-backend FP32 detector on the tritonserver here and measures it with perf_analyzer
   (gRPC, real letterboxed photos as --input-data) at batch 1 and `--batch`, against in-process ONNX
   Runtime on the same graph at the same batch (2 threads).
Prints a table; writes full numbers to OUT/detection.json.
"""

from __future__ import annotations

import argparse
import base64
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np


def ort_throughput(onnx_path: Path, x: np.ndarray, batch: int, seconds: float = 10.0) -> float:
    from repo_gen.onnx.runner import make_session

    sess = make_session(onnx_path, threads=2)
    xb = x[np.arange(batch) % len(x)]
    sess.run(None, {"input": xb})
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        sess.run(None, {"input": xb})
        n += batch
    return n / (time.perf_counter() - t0)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", type=Path, default=None, help="detector checkpoint (default: the cached fixture)")
    ap.add_argument("--max-batch", type=int, default=8)
    ap.add_argument("--batch", type=int, default=4, help="client batch of the second perf point")
    ap.add_argument("--eval-count", type=int, default=64)
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "out")
    args = ap.parse_args()

    from repo_gen import log
    from repo_gen.detection.build import DetectionBuildConfig, build_detection
    from repo_gen.detection.fixture import ensure_detector_checkpoint, make_scenes
    from repo_gen.detection.letterbox import letterbox
    from repo_gen.perf.analyzer import Analyzer
    from repo_gen.triton.server import TritonServer, free_ports

    log.setup(quiet=True)
    weights = args.weights or ensure_detector_checkpoint()
    res: dict = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": platform.platform(),
                 "cpus": len(__import__("os").sched_getaffinity(0)), "weights": str(weights)}
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "model_repository"
        cfg = DetectionBuildConfig(weights=weights, output=repo, max_batch=args.max_batch,
                                   precisions=("fp32", "fp16", "int8"), eval_count=args.eval_count)
        t0 = time.perf_counter()
        rep = build_detection(cfg)
        res["build_s"] = round(time.perf_counter() - t0, 1)
        res["stages_s"] = rep.timings_s
        res["fp32_map"] = rep.fp32_map
        res["variants"] = [{k: v[k] for k in ("precision", "map", "map_trt", "map_drop", "kept_higher_precision",
                                              "status")} for v in rep.variants]
        res["export_check"] = rep.export_check
        size = rep.weights["image_size"]
        x = np.stack([letterbox(s.image, size)[0] for s in make_scenes("test", 16, seed=7)])
        data = Path(tmp) / "input.json"
        data.write_text(json.dumps({"data": [{"input": {"b64": base64.b64encode(t.astype("<f4").tobytes()).decode()}}
                                             for t in x]}))
        model = "ssdlite_mobilevit_xxs_py_fp32"
        onnx_path = repo / model / "1" / "model.onnx"
        rows = []
        with TritonServer(repo, ports=free_ports(), models=[model], exit_on_error=False) as srv:
            analyzer = Analyzer(srv.grpc_url, Path(tmp) / "perf", server_alive=srv.alive)
            for batch, conc in ((1, 1), (1, 4), (args.batch, 1), (args.batch, 2)):
                p = analyzer.measure(model, batch, conc, str(data))
                rows.append({"batch": batch, "concurrency": conc, "served_img_s": round(p.throughput, 1),
                             "p99_ms": round(p.p99_ms, 1)})
        for r in rows:
            r["ort_img_s"] = round(ort_throughput(onnx_path, x, r["batch"]), 1)
            r["served_vs_ort"] = round(r["served_img_s"] / r["ort_img_s"], 3)
        res["serving"] = rows
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "detection.json").write_text(json.dumps(res, indent=1, default=str))
    print(f"mAP@[.5:.95] / mAP@.5 on {res['fp32_map']['images']} held-out scenes:")
    print(f"  fp32 {res['fp32_map']['map']:6.2f} / {res['fp32_map']['map50']:6.2f}")
    for v in res["variants"]:
        print(f"  {v['precision']} {v['map']['map']:6.2f} / {v['map']['map50']:6.2f}  (TensorRT form "
              f"{v['map_trt']['map']:.2f}; kept {v['kept_higher_precision']} nodes; {v['status']})")
    print("stages (s): " + ", ".join(f"{k} {v:.1f}" for k, v in res["stages_s"].items()))
    print("| batch | concurrency | served img/s | p99 ms | in-process ORT img/s | served / ORT |")
    for r in res["serving"]:
        print(f"| {r['batch']} | {r['concurrency']} | {r['served_img_s']} | {r['p99_ms']} | {r['ort_img_s']} "
              f"| {r['served_vs_ort']} |")
    print(f"full numbers: {args.out / 'detection.json'} (one run)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

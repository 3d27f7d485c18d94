#!/usr/bin/env python3
"""Precision benchmark: fidelity, real accuracy, CPU speed and calibration time of FP16/INT8 variants.

    python benchmarks/bench_precision.py                 # everything (about 5-8 min on 2 cores)
    python benchmarks/bench_precision.py --skip-s        # digits fixture only

1. Digits fixture (mobilevit_xxs trained on scikit-learn digits, 64x64; trained first if not cached):
   top-1 of FP32 / FP16 / INT8 (CPU form and TensorRT form) on all 540 held-out digits,
   calibration on 256 training digits. Targets: FP16 drop 0.0 points, INT8 drop <= 0.5 points.
2. mobilevit_s, random init, 256x256, calibration on 256 augmented scikit-image photos, evaluation
   on 64 others: FP16 cosine >= 0.9999, INT8 cosine >= 0.99, nodes kept in higher precision,
   calibration time (target <= 60 s).
3. CPU throughput at batch 16, 2 threads, same run, rounds interleaved (FP32, INT8 CPU form,
   INT8 TensorRT form, FP16): target INT8 CPU >= 1.5x FP32.

Prints a table; writes full numbers to benchmarks/out/precision.json.

    python benchmarks/bench_precision.py --speed-only benchmarks/out/precision
        re-times 3. and the 256-image calibration from the files a full run left there (fp32 ONNX,
        s_work/int8.onnx, s_work/int8_trt.onnx, calib32.npy), with onnx/onnxruntime/numpy only:
        for a quiet machine, e.g. `taskset -c 0,1 python ... --speed-only DIR` (2 cores).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def export(model: str, size: int, out: Path, weights: Path | None = None) -> Path:
    import onnx
    import torch

    from repo_gen.models import get_model_spec
    from repo_gen.onnx.export import export_onnx
    from repo_gen.onnx.passes import cleanup_graph
    from repo_gen.torch.loader import load_model

    torch.set_num_threads(2)
    loaded = load_model(get_model_spec(model), weights)
    path = out / f"{model}_{size}_fp32.onnx"
    onnx.save(cleanup_graph(export_onnx(loaded.module, size)), str(path))
    return path


def throughput(paths: dict[str, Path], x: np.ndarray, rounds: int = 10) -> dict[str, float]:
    """img/s per model at batch len(x): rounds interleaved so background load hits all alike."""
    from repo_gen.onnx.runner import make_session

    sessions = {k: make_session(p, threads=2) for k, p in paths.items()}
    feeds = {}
    for k, s in sessions.items():
        inp = s.get_inputs()[0]
        feeds[k] = {inp.name: x.astype(np.float16 if inp.type == "tensor(float16)" else np.float32)}
        s.run(None, feeds[k])  # warm-up
        s.run(None, feeds[k])
    times: dict[str, list[float]] = {k: [] for k in sessions}
    for _ in range(rounds):
        for k, s in sessions.items():
            t = time.perf_counter()
            s.run(None, feeds[k])
            times[k].append(time.perf_counter() - t)
    return {k: len(x) / float(np.median(v)) for k, v in times.items()}


def digits(out: Path) -> dict:
    from repo_gen.config import BuildConfig
    from repo_gen.fixtures.digits import ensure_digits_checkpoint, write_digit_folders
    from repo_gen.precision.stage import make_precision_variants

    ckpt = ensure_digits_checkpoint()
    fp32 = export("mobilevit_xxs", 64, out, ckpt)
    ev = write_digit_folders(out / "digits_eval", "test")
    cal = write_digit_folders(out / "digits_calib", "train")
    cfg = BuildConfig(model="mobilevit_xxs", image_size=64, weights=ckpt, precisions=("fp32", "fp16", "int8"),
                      calib_dir=cal, calib_count=256, eval_dir=ev, eval_count=10_000, output=out / "unused")
    timings: dict = {}
    vs = make_precision_variants(cfg, fp32, out / "digits_work", timings, ["fp16", "int8"])
    fp16, int8 = vs
    t32 = fp16.report["fp32_row"]["accuracy"]["top1"]
    return {
        "checkpoint": str(ckpt),
        "n_eval": fp16.fidelity.metrics["accuracy"]["n"],
        "top1_fp32": t32,
        "top1_fp16": fp16.fidelity.metrics["accuracy"]["top1"],
        "top1_fp16_emulated": fp16.trt_fidelity.metrics["accuracy"]["top1"],
        "top1_int8_cpu": int8.fidelity.metrics["accuracy"]["top1"],
        "top1_int8_trt": int8.trt_fidelity.metrics["accuracy"]["top1"],
        "drop_fp16": t32 - fp16.fidelity.metrics["accuracy"]["top1"],
        "drop_int8_cpu": t32 - int8.fidelity.metrics["accuracy"]["top1"],
        "drop_int8_trt": t32 - int8.trt_fidelity.metrics["accuracy"]["top1"],
        "status": {v.precision: v.status for v in vs},
        "fp16_fp32_nodes": fp16.report["fp32_nodes"],
        "int8_float_nodes": int8.report["kept_float_nodes"],
        "timings_s": timings,
        "table_md": fp16.report["table_md"],
    }


def mobilevit_s(out: Path, calib_count: int) -> dict:
    from repo_gen.config import BuildConfig
    from repo_gen.data.images import builtin_photos
    from repo_gen.precision.stage import make_precision_variants

    fp32 = export("mobilevit_s", 256, out)
    cfg = BuildConfig(model="mobilevit_s", precisions=("fp32", "fp16", "int8"), calib_count=calib_count,
                      eval_count=64, output=out / "unused")
    timings: dict = {}
    t0 = time.perf_counter()
    vs = make_precision_variants(cfg, fp32, out / "s_work", timings, ["fp16", "int8"])
    stage_s = time.perf_counter() - t0
    fp16, int8 = vs
    x = builtin_photos(cfg.data, 32, seed=7, offset=2).tensors
    np.save(out / "calib32.npy", x.astype(np.float16))  # for --speed-only
    x = x[:16]
    speed = throughput({"fp32": fp32, "int8_cpu": int8.serve_onnx, "int8_trt_form": int8.trt_onnx,
                        "fp16": fp16.serve_onnx}, x)
    return {
        "fp16": {"cosine_mean": fp16.fidelity.metrics["cosine_mean"], "cosine_min": fp16.fidelity.metrics["cosine_min"],
                 "rel_l2": fp16.fidelity.metrics["rel_l2"], "emulated_cosine_min": fp16.trt_fidelity.metrics["cosine_min"],
                 "emulated_rel_l2": fp16.trt_fidelity.metrics["rel_l2"], "fp32_nodes": fp16.report["fp32_nodes"],
                 "status": fp16.status, "reason": fp16.status_reason},
        "int8": {"cpu_cosine_mean": int8.fidelity.metrics["cosine_mean"], "cpu_cosine_min": int8.fidelity.metrics["cosine_min"],
                 "trt_cosine_mean": int8.trt_fidelity.metrics["cosine_mean"],
                 "trt_cosine_min": int8.trt_fidelity.metrics["cosine_min"],
                 "float_nodes": int8.report["kept_float_nodes"], "quantized_nodes_trt": int8.report["quantized_nodes_trt"],
                 "status": int8.status, "reason": int8.status_reason},
        "calibration": {"images": int8.report["calibration"]["images"], "method": int8.report["calibration"]["method"],
                        "seconds": int8.report["calibration"]["seconds"]},
        "throughput_b16_img_s": speed,
        "speedup_int8_cpu": speed["int8_cpu"] / speed["fp32"],
        "speedup_int8_trt_form": speed["int8_trt_form"] / speed["fp32"],
        "stage_seconds": round(stage_s, 1),
        "timings_s": timings,
        "table_md": fp16.report["table_md"],
    }


def speed_only(d: Path, rounds: int) -> dict:
    """Throughput (same run, interleaved) and 256-image calibration time from a full run's files."""
    from repo_gen.precision.int8 import collect_ranges

    x = np.load(d / "calib32.npy").astype(np.float32)
    paths = {"fp32": d / "mobilevit_s_256_fp32.onnx", "int8_cpu": d / "s_work" / "int8.onnx",
             "int8_trt_form": d / "s_work" / "int8_trt.onnx"}
    speed = throughput(paths, x[:16], rounds)
    xs = np.concatenate([x] * 8)  # 256 images (calibration time does not depend on pixel values)
    t0 = time.perf_counter()
    collect_ranges(paths["fp32"], xs, "max", d / "tmp_calib", threads=2)
    calib_s = time.perf_counter() - t0
    return {"throughput_b16_img_s": speed, "speedup_int8_cpu": speed["int8_cpu"] / speed["fp32"],
            "speedup_int8_trt_form": speed["int8_trt_form"] / speed["fp32"],
            "calibration_256_max_s": round(calib_s, 1)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out")
    p.add_argument("--skip-digits", action="store_true")
    p.add_argument("--skip-s", action="store_true")
    p.add_argument("--calib-count", type=int, default=256)
    p.add_argument("--speed-only", type=Path, default=None, metavar="DIR")
    p.add_argument("--rounds", type=int, default=10)
    args = p.parse_args()
    if args.speed_only:
        import onnxruntime

        r = {"onnxruntime": onnxruntime.__version__, "cpus": len(os.sched_getaffinity(0)),
             "machine": platform.processor() or platform.machine(), **speed_only(args.speed_only, args.rounds)}
        print(json.dumps(r, indent=1))
        out = os.environ.get("OUT")
        if out:
            Path(out, "precision_speed.json").write_text(json.dumps(r, indent=1))
        return
    from repo_gen.log import setup

    setup(quiet=True)
    work = args.out / "precision"
    work.mkdir(parents=True, exist_ok=True)
    res: dict = {"date": time.strftime("%Y-%m-%d"), "machine": platform.processor() or platform.machine(),
                 "cpus": len(os.sched_getaffinity(0)), "command": "python " + " ".join(sys.argv)}
    import onnxruntime

    res["onnxruntime"] = onnxruntime.__version__
    if not args.skip_digits:
        res["digits"] = digits(work)
    if not args.skip_s:
        res["mobilevit_s"] = mobilevit_s(work, args.calib_count)
    (args.out / "precision.json").write_text(json.dumps(res, indent=1, default=str))

    rows = []
    if "digits" in res:
        d = res["digits"]
        rows += [
            ("digits top-1 FP32 / FP16 / INT8-cpu / INT8-trt (%)",
             f"{d['top1_fp32']:.2f} / {d['top1_fp16']:.2f} / {d['top1_int8_cpu']:.2f} / {d['top1_int8_trt']:.2f}", ""),
            ("digits FP16 top-1 drop (pts)", f"{d['drop_fp16']:.2f}", "0.0"),
            ("digits INT8 top-1 drop cpu / trt (pts)", f"{d['drop_int8_cpu']:.2f} / {d['drop_int8_trt']:.2f}", "<= 0.5"),
        ]
    if "mobilevit_s" in res:
        s = res["mobilevit_s"]
        rows += [
            ("s FP16 cosine min (served / emulated)", f"{s['fp16']['cosine_min']:.6f} / {s['fp16']['emulated_cosine_min']:.6f}",
             ">= 0.9999"),
            ("s FP16 nodes kept FP32", str(s["fp16"]["fp32_nodes"]), ""),
            ("s INT8 cosine mean (cpu / trt form)", f"{s['int8']['cpu_cosine_mean']:.5f} / {s['int8']['trt_cosine_mean']:.5f}",
             ">= 0.99"),
            ("s INT8 nodes kept float", str(s["int8"]["float_nodes"]), ""),
            ("s b16 img/s fp32 / int8-cpu / int8-trt / fp16",
             " / ".join(f"{s['throughput_b16_img_s'][k]:.1f}" for k in ("fp32", "int8_cpu", "int8_trt_form", "fp16")), ""),
            ("s INT8 CPU speedup vs FP32", f"{s['speedup_int8_cpu']:.2f}x", ">= 1.5x"),
            ("s calibration (s)", f"{s['calibration']['seconds']:.1f} ({s['calibration']['images']} images)", "<= 60"),
        ]
    w = max(len(r[0]) for r in rows)
    print(f"{'metric':<{w}}  {'value':<40}  target")
    for name, val, tgt in rows:
        print(f"{name:<{w}}  {val:<40}  {tgt}")
    print(f"full numbers: {args.out / 'precision.json'}")


if __name__ == "__main__":
    main()

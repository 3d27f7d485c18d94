"""Pipeline (JPEG bytes -> preprocess -> classifier) vs classifier-only throughput, same server, same run.

    .venv/bin/python benchmarks/bench_pipeline.py --model mobilevit_s --concurrency 4 --rounds 3

Builds (or reuses) a repository with `<model>_py_fp32` and `<model>_pipeline`, starts one
tritonserver, and runs perf_analyzer (gRPC) alternately on the classifier with real preprocessed
tensors and on the pipeline with the same photos as JPEG files (JSON input data, b64), so both
see the same machine load; the ratio of the medians is the figure of merit. Stability is not
required of perf_analyzer (--stability-percentage 999: it reports 3 windows whatever they vary):
on shared 2-core machines it rarely stabilizes; the alternation and the median over rounds do
that job instead.
Every perf_analyzer argv and its full output go to the output directory.

perf_analyzer's JSON "b64" for a BYTES input is the serialized tensor: each element is a 4-byte
little-endian length followed by the bytes (a bare b64 JPEG is read as a length of ~3.7 GB).
"""

from __future__ import annotations

import argparse
import base64
import csv
import io
import json
import os
import platform
import statistics
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def jpeg_photos(quality: int = 90) -> list[tuple[str, bytes]]:
    from repo_gen.data.images import skimage_photos

    out = []
    for name, img in skimage_photos():
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=quality)
        out.append((name, buf.getvalue()))
    return out


def write_input_data(path: Path, rows: list[dict]) -> Path:
    path.write_text(json.dumps({"data": rows}))
    return path


def run_perf(pa, model: str, url: str, data: Path, concurrency: int, interval_ms: int, log_dir: Path, tag: str) -> dict:
    csv_path = log_dir / f"{tag}.csv"
    argv = [str(pa.binary), "-m", model, "-u", url, "-i", "grpc", "--input-data", str(data),
            "--concurrency-range", str(concurrency), "--measurement-interval", str(interval_ms),
            "--stability-percentage", "999", "--max-trials", "3", "-f", str(csv_path)]
    print("$ " + " ".join(argv), flush=True)
    r = subprocess.run(argv, env=pa.env, capture_output=True, text=True, timeout=600)  # noqa: S603 - our argv
    (log_dir / f"{tag}.log").write_text(" ".join(argv) + "\n\n" + r.stdout + "\n" + r.stderr)
    if r.returncode != 0 or not csv_path.exists():
        raise SystemExit(f"perf_analyzer failed ({r.returncode}); see {log_dir / (tag + '.log')}:\n{r.stdout[-1500:]}{r.stderr[-1500:]}")
    row = next(csv.DictReader(csv_path.open()))
    return {"throughput": float(row["Inferences/Second"]), "p50_us": float(row["p50 latency"]),
            "p99_us": float(row["p99 latency"]), "argv": argv}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="mobilevit_s")
    p.add_argument("--repo", type=Path, default=None, help="repository to reuse or build (default: a cache dir)")
    p.add_argument("--max-batch", type=int, default=8)
    p.add_argument("--concurrency", type=int, default=4)
    p.add_argument("--rounds", type=int, default=3, help="classifier/pipeline pairs, alternated")
    p.add_argument("--interval-ms", type=int, default=8000)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out", help="where logs and summary.json go (git-ignored)")
    args = p.parse_args()

    from repo_gen import log
    from repo_gen.data.preprocess import decode_image, preprocess
    from repo_gen.tools import cache_dir, find_perf_analyzer
    from repo_gen.triton.server import TritonServer, free_ports

    log.setup(quiet=True)
    repo = args.repo or cache_dir() / f"bench-pipeline-{args.model}-b{args.max_batch}"
    classifier, pipeline = f"{args.model}_py_fp32", f"{args.model}_pipeline"
    if not (repo / pipeline / "config.pbtxt").exists():
        from repo_gen.build import build
        from repo_gen.config import BuildConfig

        print(f"building {args.model} into {repo} ...", flush=True)
        build(BuildConfig(model=args.model, output=repo, max_batch=args.max_batch, precisions=("fp32",),
                          runtimes=("py",), pipeline=True))
    manifest = json.loads((repo / "repo-gen.json").read_text())
    data_cfg = manifest["models"][pipeline]["data"]
    size = int(data_cfg["input_size"][1])

    log_dir = args.out / time.strftime("pipeline-%Y%m%d-%H%M%S")
    log_dir.mkdir(parents=True, exist_ok=True)
    photos = jpeg_photos()
    pixels = {}
    t_pre = []
    for name, jpg in photos:
        for _ in range(3):
            t0 = time.perf_counter()
            x = preprocess(decode_image(jpg), size, data_cfg["interpolation"], data_cfg["crop_pct"],
                           tuple(data_cfg["mean"]), tuple(data_cfg["std"]))
            t_pre.append(time.perf_counter() - t0)
        pixels[name] = x
    jpeg_json = write_input_data(log_dir / "pipeline_input.json", [
        {"IMAGE": {"b64": base64.b64encode(struct.pack("<I", len(j)) + j).decode(), "shape": [1]}} for _, j in photos])
    tensor_json = write_input_data(log_dir / "classifier_input.json", [
        {"input": {"b64": base64.b64encode(np.ascontiguousarray(pixels[n], np.float32).tobytes()).decode(),
                   "shape": [3, size, size]}} for n, _ in photos])

    pa = find_perf_analyzer()
    server = TritonServer(repo, ports=free_ports(), models=[pipeline, f"{args.model}_preprocess", classifier],
                          log_path=log_dir / "tritonserver.log")
    runs: dict[str, list[dict]] = {"classifier": [], "pipeline": []}
    with server:
        for r in range(args.rounds):
            runs["classifier"].append(run_perf(pa, classifier, server.grpc_url, tensor_json, args.concurrency,
                                               args.interval_ms, log_dir, f"classifier-{r}"))
            runs["pipeline"].append(run_perf(pa, pipeline, server.grpc_url, jpeg_json, args.concurrency,
                                             args.interval_ms, log_dir, f"pipeline-{r}"))
            print(f"round {r}: classifier {runs['classifier'][-1]['throughput']:.1f} infer/s, "
                  f"pipeline {runs['pipeline'][-1]['throughput']:.1f} infer/s", flush=True)
    med = {k: statistics.median(x["throughput"] for x in v) for k, v in runs.items()}
    per_round = [round(p["throughput"] / c["throughput"], 3) for c, p in zip(runs["classifier"], runs["pipeline"], strict=True)]
    summary = {
        "model": args.model, "concurrency": args.concurrency, "rounds": args.rounds, "interval_ms": args.interval_ms,
        "max_batch": args.max_batch, "classifier": classifier, "pipeline": pipeline,
        "photos": [{"name": n, "jpeg_bytes": len(j)} for n, j in photos],
        "preprocess_in_process_ms_median": round(1000 * statistics.median(t_pre), 2),
        "median_throughput": med, "ratio_pipeline_over_classifier": round(med["pipeline"] / med["classifier"], 3),
        "ratio_per_round": per_round, "median_ratio_per_round": round(statistics.median(per_round), 3),
        "runs": runs, "cpus": len(os.sched_getaffinity(0)), "load_avg_at_end": os.getloadavg(),
        "python": platform.python_version(), "argv": sys.argv,
    }
    (log_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"\n{args.model}, concurrency {args.concurrency}, {args.rounds} alternating rounds, gRPC")
    print(f"  classifier-only ({classifier}, preprocessed FP32 tensors): {med['classifier']:.1f} infer/s (median)")
    print(f"  pipeline ({pipeline}, JPEG bytes):                {med['pipeline']:.1f} infer/s (median)")
    print(f"  ratio pipeline / classifier: {summary['ratio_pipeline_over_classifier']:.2f} of the medians, "
          f"{summary['median_ratio_per_round']:.2f} median of the per-round ratios {per_round} (target >= 0.70)")
    print(f"  in-process decode+preprocess per photo: {summary['preprocess_in_process_ms_median']} ms (median)")
    print(f"  full results: {log_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Serving overhead (issue 2): Triton-served throughput vs in-process ONNX Runtime, same run.

    .venv/bin/python benchmarks/bench_serving.py [--models mobilevit_xxs,mobilevit_s] [--rounds 3]

For each model: builds (or reuses) `<model>_py_fp32` in benchmarks/out/repo with the build's
defaults (dynamic batching on, max_queue_delay 100 us, 2 instances sharing the cores), starts one
tritonserver, then alternates, `--rounds` times:

  served      perf_analyzer, gRPC, concurrency 8, real preprocessed photos; the batch the dynamic
              batcher formed is read from Triton's own statistics (inference_count /
              execution_count over the measurement);
  in-process  at that batch size (rounded), on the same photos, back to back:
              - one ORT session on every core, built as model.py builds it (no spinning);
              - one ORT session with ORT's default options (intra-op spinning on);
              - as many sessions as the model has instances, each with the threads model.py
                gives an instance (cores // instances), run concurrently from Python threads
                (ORT releases the GIL): what the served instances do, minus Triton;
              the fastest of these is the reference, so the ratio never flatters the server.

The served / in-process ratio is computed per round and the median is the figure of merit:
alternating makes both sides see the same machine load (these 2-core machines are shared).
Target: >= 0.85. JSON goes to benchmarks/out/bench_serving.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import urllib.request
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
OUT = ROOT / "benchmarks" / "out"
# PerfSettings.shared_memory per client transport. Both send gRPC requests; "grpc+shm" puts the
# input and output tensors in system shared memory (what a client on the server's host can do)
# instead of serializing ~0.8 MB per image into the gRPC messages.
TRANSPORTS = {"grpc": "none", "grpc+shm": "system"}


def ensure_built(repo: Path, model: str, max_batch: int = 16) -> str:
    """`<model>_py_fp32` in `repo`, built with the CLI when missing (FP32, python runtime only)."""
    import subprocess

    name = f"{model}_py_fp32"
    manifest = repo / "repo-gen.json"
    if manifest.exists() and name in json.loads(manifest.read_text())["models"]:
        return name
    argv = [sys.executable, "-m", "repo_gen.cli", "build", "--model", model, "--output", str(repo), "--max-batch",
            str(max_batch), "--precisions", "fp32", "--runtimes", "py", "--no-pipeline"]
    print("$ " + " ".join(argv), flush=True)
    subprocess.run(argv, check=True)  # noqa: S603 - our argv
    return name


def model_stats(http_url: str, model: str) -> tuple[int, int]:
    with urllib.request.urlopen(f"http://{http_url}/v2/models/{model}/stats", timeout=10) as r:  # noqa: S310 - loopback
        s = json.loads(r.read())["model_stats"][0]
    return int(s["inference_count"]), int(s["execution_count"])


def model_py_session(onnx_path: Path, threads: int = 0, spinning: bool = False):
    """An ORT session built as templates/python_onnx_model.py.j2 builds it (threads 0: every usable
    core; no spinning). `spinning=True` gives ORT's default, measured as a second reference."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads or len(os.sched_getaffinity(0))
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    if not spinning:
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(onnx_path), so, providers=["CPUExecutionProvider"])


def instance_count(model_dir: Path) -> int:
    from repo_gen.perf.tune import candidate_of
    from repo_gen.triton.render import parse_config

    return candidate_of(parse_config((model_dir / "config.pbtxt").read_text())).instance_count


def parallel_throughput(sessions: list, images: np.ndarray, batch: int, seconds: float) -> float:
    """Images per second of `sessions` each running batches concurrently (one Python thread each)."""
    import threading

    rates = [0.0] * len(sessions)

    def work(i: int) -> None:
        rates[i] = in_process_throughput(sessions[i], images, batch, seconds)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(sessions))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(rates)


def in_process_throughput(session, images: np.ndarray, batch: int, seconds: float) -> float:
    """Images per second running batches of `batch` (cycling through `images`) for `seconds`."""
    n_img = len(images)
    batches = [np.ascontiguousarray(images[np.arange(i, i + batch) % n_img]) for i in range(0, n_img, max(1, batch))]
    session.run(None, {"input": batches[0]})  # warm-up
    done, t0, i = 0, time.perf_counter(), 0
    while time.perf_counter() - t0 < seconds:
        session.run(None, {"input": batches[i % len(batches)]})
        done += batch
        i += 1
    return done / (time.perf_counter() - t0)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="mobilevit_xxs,mobilevit_s")
    ap.add_argument("--repo", type=Path, default=OUT / "repo")
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--interval-ms", type=int, default=3000, help="perf_analyzer time window")
    ap.add_argument("--seconds", type=float, default=8.0, help="in-process timing per round")
    ap.add_argument("--transports", default="grpc,grpc+shm",
                    help="client transports measured each round: grpc (tensors in the gRPC messages) and/or "
                         "grpc+shm (gRPC requests, tensors in system shared memory: a client on the same host)")
    args = ap.parse_args()

    from repo_gen import log
    from repo_gen.perf.analyzer import Analyzer, PerfSettings
    from repo_gen.perf.bench import machine_description
    from repo_gen.perf.input_data import real_tensors, write_input_data
    from repo_gen.triton.repository import read_manifest
    from repo_gen.triton.server import TritonServer, free_ports

    log.setup()
    OUT.mkdir(parents=True, exist_ok=True)
    args.repo.parent.mkdir(parents=True, exist_ok=True)
    names = [ensure_built(args.repo, m.strip()) for m in args.models.split(",") if m.strip()]
    manifest = read_manifest(args.repo)["models"]
    work = OUT / "bench_serving"
    work.mkdir(parents=True, exist_ok=True)
    # Stability is not asked of perf_analyzer here: alternation + median over rounds does that job.
    settings = PerfSettings(measurement_interval_ms=args.interval_ms, stability_percentage=100, max_trials=4, relax=(1000,))
    results: dict = {"date": time.strftime("%Y-%m-%d %H:%M:%S"), "machine": machine_description(),
                     "loadavg_start": os.getloadavg(), "command": " ".join([Path(sys.executable).name, *sys.argv]),
                     "concurrency": args.concurrency, "protocol": "grpc", "transports": args.transports, "models": {}}
    t_start = time.perf_counter()
    with TritonServer(args.repo, ports=free_ports(), models=names, log_path=work / "tritonserver.log") as server:
        transports = [t.strip() for t in args.transports.split(",") if t.strip()]
        unknown = sorted(set(transports) - set(TRANSPORTS))
        if unknown or not transports:
            raise SystemExit(f"--transports {args.transports}: choose from {', '.join(TRANSPORTS)}")
        analyzers = {t: Analyzer(server.grpc_url, work / "raw" / t.replace("+", "_"),
                                 replace(settings, shared_memory=TRANSPORTS[t])) for t in transports}
        for name in names:
            data = manifest[name]["data"]
            data_arg = write_input_data(work / f"{name}.json", args.repo / name, data, "real", count=16)
            images = real_tensors(data, 16)
            onnx_path = args.repo / name / "1" / "model.onnx"
            session = model_py_session(onnx_path)
            spinning = model_py_session(onnx_path, spinning=True)
            n_inst = instance_count(args.repo / name)
            per_inst = max(1, len(os.sched_getaffinity(0)) // n_inst)
            instances = [model_py_session(onnx_path, threads=per_inst) for _ in range(n_inst)] if n_inst > 1 else []
            rounds: dict[str, list[dict]] = {t: [] for t in transports}
            for r in range(args.rounds):
                served = {}
                for t, analyzer in analyzers.items():
                    inf0, exe0 = model_stats(server.http_url, name)
                    p = analyzer.measure(name, 1, args.concurrency, data_arg)
                    inf1, exe1 = model_stats(server.http_url, name)
                    served[t] = (p, (inf1 - inf0) / max(1, exe1 - exe0))
                # The reference is the fastest way found to run each formed batch in process (docstring).
                part = args.seconds / (3 if instances else 2)
                refs_by_batch: dict[int, dict[str, float]] = {}
                for batch in sorted({max(1, round(formed)) for _, formed in served.values()}):
                    refs = {"one_session_all_cores": in_process_throughput(session, images, batch, part),
                            "one_session_ort_defaults": in_process_throughput(spinning, images, batch, part)}
                    if instances:
                        refs[f"{n_inst}_sessions_x_{per_inst}_threads"] = parallel_throughput(instances, images, batch, part)
                    refs_by_batch[batch] = refs
                for t, (p, formed) in served.items():
                    batch = max(1, round(formed))
                    refs = refs_by_batch[batch]
                    local = max(refs.values())
                    rounds[t].append({"served": p.throughput, "p99_ms": p.p99_ms, "formed_batch": formed,
                                      "in_process_batch": batch, "instances": n_inst, "in_process": local,
                                      "in_process_refs": refs, "ratio": p.throughput / local,
                                      "server_queue_ms": p.server_queue_us / 1e3,
                                      "server_infer_ms": p.server_compute_infer_us / 1e3,
                                      "server_input_ms": p.server_compute_input_us / 1e3, "command": p.command})
                    print(f"{name} [{t}] round {r + 1}: served {p.throughput:.1f}/s (batcher formed {formed:.2f}), "
                          f"in-process b{batch} {local:.1f}/s ({', '.join(f'{k} {v:.1f}' for k, v in refs.items())}), "
                          f"ratio {p.throughput / local:.3f}", flush=True)
            results["models"][name] = {}
            for t, rs in rounds.items():
                med = {k: statistics.median(x[k] for x in rs) for k in ("served", "in_process", "ratio", "formed_batch")}
                results["models"][name][t] = {"rounds": rs, "median": med, "meets_0.85": med["ratio"] >= 0.85}
    results["wall_s"] = round(time.perf_counter() - t_start, 1)
    results["loadavg_end"] = os.getloadavg()
    (OUT / "bench_serving.json").write_text(json.dumps(results, indent=2))
    print("\nmodel                    transport  served/s  in-process/s  formed batch  ratio (median of rounds)")
    for name, by_transport in results["models"].items():
        for t, r in by_transport.items():
            m = r["median"]
            print(f"{name:24s} {t:9s} {m['served']:9.1f}  {m['in_process']:12.1f}  {m['formed_batch']:12.2f}  "
                  f"{m['ratio']:.3f}")
    print(f"wrote {OUT / 'bench_serving.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

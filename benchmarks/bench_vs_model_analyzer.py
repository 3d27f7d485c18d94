"""`repo-gen tune` against Triton Model Analyzer on the same model and machine (issue 16).

    .venv/bin/python benchmarks/bench_vs_model_analyzer.py [--concurrency 8] [--rounds 3]

1. Build mobilevit_xxs FP32 for the python backend with the build's defaults (the "default" config).
2. `repo-gen tune` on a copy (CLI, default grid and objective, gRPC, the given concurrency): wall
   time, configs measured, its pick.
3. Model Analyzer (`triton-model-analyzer==1.58.0`, installed by this script into its own
   virtualenv under the repo-gen cache) on another copy: quick search, gRPC, the same fixed
   concurrency and input data, local launch of the same tritonserver: wall time, configs
   measured, its pick (the first row of its objective-sorted results).
   What it needs here, each found by a failed run:
   - its wheel ships no perf_analyzer: `perf_analyzer_path` points at the project's
     (.venv/opt/perf_analyzer), with the CUDA runtime it links against on LD_LIBRARY_PATH;
   - the CPU-only tritonserver of the nvidia-pytriton wheel keeps its python stubs apart from the
     backend: `backend_directory` is repo-gen's assembled one (stub next to libtriton_python.so),
     and the stub's directory and the project's venv (numpy, onnxruntime for model.py) lead PATH;
   - no GPU here: the model is profiled `cpu_only` (otherwise it waits for GPU metrics);
   - free ports instead of 8000-8002, which other servers on a shared machine may hold.
4. One tritonserver session: default, tune's pick and Model Analyzer's pick loaded in turn
   (repository API config override), measured alternately for `--rounds` rounds (order reversed
   every other round), medians and ranges.

Prints a table; writes benchmarks/out/bench_vs_model_analyzer.json (and every raw output under
benchmarks/out/bench_vs_ma/).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
OUT = ROOT / "benchmarks" / "out"
WORK = OUT / "bench_vs_ma"
MA_VERSION = "1.58.0"
MODEL = "mobilevit_xxs"
NAME = f"{MODEL}_py_fp32"


def build_default(repo: Path) -> None:
    if (repo / NAME / "config.pbtxt").is_file():
        return
    argv = [sys.executable, "-m", "repo_gen.cli", "build", "--model", MODEL, "--output", str(repo),
            "--precisions", "fp32", "--runtimes", "py", "--no-pipeline"]
    print("$ " + " ".join(argv), flush=True)
    subprocess.run(argv, check=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})  # noqa: S603 - our argv


def copy_repo(src: Path, dst: Path) -> Path:
    shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__", "*.orig"))
    return dst


def batch1_warmups_only(repo: Path) -> int:
    """Drop the model's warm-up samples above batch 1 in Model Analyzer's copy; returns how many.

    Why: the build warms up at 1 and max batch (what the dynamic batcher forms), and Model Analyzer
    1.58 keeps a config's model_warmup when it sets max_batch_size 1 for a variant, so every variant
    but the default fails to load ("failed to run warmup sample 'random_batch_64': batch size 64 ...,
    max allowed is 1") and its quick search ends after one configuration (seen 2026-12-02).
    """
    from google.protobuf import text_format

    from repo_gen.triton.render import parse_config

    path = repo / NAME / "config.pbtxt"
    cfg = parse_config(path.read_text(), str(path))
    keep = [w for w in cfg.model_warmup if w.batch_size <= 1]
    dropped = len(cfg.model_warmup) - len(keep)
    del cfg.model_warmup[:]
    cfg.model_warmup.extend(keep)
    path.write_text(text_format.MessageToString(cfg))
    return dropped


def ensure_model_analyzer() -> Path:
    """The model-analyzer entry point of a virtualenv of its own (created on first use)."""
    from repo_gen.tools import cache_dir

    venv = cache_dir() / f"ma-{MA_VERSION}"
    exe = venv / "bin" / "model-analyzer"
    if exe.is_file():
        return exe
    print(f"installing triton-model-analyzer=={MA_VERSION} into {venv} (a few minutes)", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)  # noqa: S603 - our argv
    subprocess.run([str(venv / "bin" / "pip"), "install", "-q", f"triton-model-analyzer=={MA_VERSION}"], check=True)  # noqa: S603
    return exe


def run_tune(repo: Path, concurrency: int) -> dict:
    out = WORK / "tune_out"
    shutil.rmtree(out, ignore_errors=True)
    argv = [sys.executable, "-m", "repo_gen.cli", "tune", "--model-repository", str(repo), "--model", NAME,
            "--concurrency", str(concurrency), "--protocol", "grpc", "--output", str(out)]
    print("$ " + " ".join(argv), flush=True)
    t0 = time.perf_counter()
    subprocess.run(argv, check=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})  # noqa: S603 - our argv
    wall = time.perf_counter() - t0
    rec = json.loads((out / "tune.json").read_text())
    # The leaders' samples include their search measurement (tune counts it as the first of its rounds).
    leaders = (rec.get("decision") or {}).get("leaders", [])
    remeasured = sum(len(ld["samples"]) for ld in leaders) - len(leaders)
    return {"wall_s": round(wall, 1), "configs": len(rec["trials"]), "remeasurements": remeasured,
            "decision": rec.get("decision"), "command": " ".join(argv),
            "config_text": (repo / NAME / "config.pbtxt").read_text()}


def _kill_own_servers(marker: str) -> list[int]:
    """tritonservers whose command line names `marker` (a path only this run uses): Model Analyzer
    starts its server in a session of its own, so killing Model Analyzer does not stop it (seen: one
    left serving for 36 minutes after its Model Analyzer was killed)."""
    killed = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if "tritonserver" in cmd and marker in cmd:
            try:
                os.killpg(int(proc.name), signal.SIGKILL)  # the server and its python stubs
            except (ProcessLookupError, PermissionError):
                os.kill(int(proc.name), signal.SIGKILL)
            killed.append(int(proc.name))
    return killed


def results_from_checkpoint(ckpt: Path) -> dict[str, dict]:
    """Model Analyzer's measurements per config variant, read from its checkpoint (JSON). Its CSV
    tables come only with its PDF summary step, which needs more than this machine has."""
    data = json.loads(ckpt.read_text())["ResultManager.results"]["_results"][NAME]
    out: dict[str, dict] = {}
    m_config = {variant: rc["_model_run_configs"][0]["_model_config_variant"]["model_config"]
                for variant, (rc, _) in data.items()}
    for variant, (_, measurements) in data.items():
        for m in measurements.values():
            for mc in m["_model_config_measurements"]:
                vals = {k: v["_value"] for k, v in mc["_non_gpu_data"]}
                conc = mc["_model_specific_pa_params"]["concurrency-range"]
                row = {"throughput": vals["perf_throughput"], "p99_ms": vals["perf_latency_p99"], "concurrency": conc,
                       "model_config": m_config[variant]}
                if variant not in out or row["throughput"] > out[variant]["throughput"]:
                    out[variant] = row
    return out


def run_model_analyzer(repo: Path, concurrency: int, input_data: Path, timeout_s: float, resume: bool = False) -> dict:
    """Model Analyzer's quick search. `resume`: a previous run's finished search is read back."""
    from repo_gen.tools import find_perf_analyzer, find_tritonserver
    from repo_gen.triton.server import free_ports

    exe = ensure_model_analyzer()
    out = WORK / "ma_out"
    ckpt = out / "checkpoints" / "0.ckpt"
    argv = [str(exe), "profile", "-f", str(out / "config.yaml")]
    if not (resume and ckpt.is_file() and (out / "search.json").is_file()):
        triton, perf = find_tritonserver(), find_perf_analyzer()
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)
        ports = free_ports()
        stub_dir = triton.backend_dir / "python"
        config = {
            "model_repository": str(repo.resolve()),
            "output_model_repository_path": str(out / "output_models"),
            "override_output_model_repository": True,
            "export_path": str(out / "export"),
            "checkpoint_directory": str(out / "checkpoints"),
            "triton_launch_mode": "local",
            "triton_server_path": str(triton.binary),
            "triton_output_path": str(out / "tritonserver.log"),
            "triton_server_flags": {"backend_directory": str(triton.backend_dir)},
            "triton_http_endpoint": f"127.0.0.1:{ports.http}",
            "triton_grpc_endpoint": f"127.0.0.1:{ports.grpc}",
            "triton_metrics_url": f"http://127.0.0.1:{ports.metrics}/metrics",
            "perf_analyzer_path": str(perf.binary),
            "perf_output": True,
            "perf_output_path": str(out / "perf_analyzer.log"),
            "client_protocol": "grpc",
            "run_config_search_mode": "quick",
            "run_config_search_max_model_batch_size": 64,
            # quick search sets each config's concurrency to 2 x max batch x instances, clamped here
            "run_config_search_min_concurrency": concurrency,
            "run_config_search_max_concurrency": concurrency,
            "concurrency_sweep_disable": True,
            "skip_summary_reports": True,
            "profile_models": {NAME: {"cpu_only": True, "perf_analyzer_flags": {"input-data": str(input_data)}}},
        }
        (out / "config.yaml").write_text(json.dumps(config, indent=2))  # JSON is YAML
        env = dict(perf.env)
        env["PATH"] = os.pathsep.join([str(stub_dir), str(Path(sys.executable).parent), env.get("PATH", "")])
        env.update({k: v for k, v in triton.env.items() if k != "PATH"})
        print("$ " + " ".join(argv), flush=True)
        t0 = time.perf_counter()
        log = (out / "model_analyzer.log").open("w")
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=out,  # noqa: S603 - our argv
                                start_new_session=True)
        try:
            rc = proc.wait(timeout=timeout_s)
        except BaseException:
            os.killpg(proc.pid, signal.SIGKILL)
            raise
        finally:
            log.close()
            # its server serves the copy made for it (repo_ma): a path no other server uses
            leftover = _kill_own_servers(str(repo.resolve())) + _kill_own_servers(str(out / "output_models"))
            if leftover:
                print(f"stopped Model Analyzer's leftover tritonserver(s): {leftover}", flush=True)
        if rc != 0 or not ckpt.is_file():
            tail = "\n".join((out / "model_analyzer.log").read_text().splitlines()[-15:])
            raise SystemExit(f"model-analyzer failed (exit {rc}); last lines:\n{tail}")
        (out / "search.json").write_text(json.dumps({"wall_s": round(time.perf_counter() - t0, 1)}))
    wall = json.loads((out / "search.json").read_text())["wall_s"]
    results = results_from_checkpoint(ckpt)
    if len(results) < 2:  # a search that measured only the default is a failed search, not a pick
        raise SystemExit(f"Model Analyzer measured {len(results)} configuration(s); see {out / 'model_analyzer.log'}")
    # its default objective is perf_throughput: the pick is the highest measured throughput
    pick = max(results, key=lambda v: results[v]["throughput"])
    return {"wall_s": wall, "configs": len(results), "pick": pick, "measured": results,
            "config_text": _text_of(results[pick]["model_config"]), "command": " ".join(argv)}


def _text_of(model_config: dict) -> str:
    """The config Model Analyzer measured (JSON in its checkpoint; its output repository is
    rewritten on every run) as protobuf text."""
    from google.protobuf import json_format, text_format
    from tritonclient.grpc import model_config_pb2

    return text_format.MessageToString(json_format.ParseDict(model_config, model_config_pb2.ModelConfig()))


def measure_alternately(repo: Path, configs: dict[str, str], concurrency: int, rounds: int, input_data: Path) -> dict:
    """Each config loaded in turn on one server and measured at `concurrency`; `rounds` rounds."""
    from repo_gen.perf.analyzer import Analyzer, PerfSettings
    from repo_gen.perf.tune import config_json
    from repo_gen.triton.render import parse_config
    from repo_gen.triton.server import TritonServer, free_ports

    parsed = {}
    for label, text in configs.items():
        cfg = parse_config(text, label)
        cfg.name = NAME  # Model Analyzer's variant carries its own name
        parsed[label] = cfg
    samples: dict[str, list] = {k: [] for k in configs}
    settings = PerfSettings(measurement_interval_ms=3000, stability_percentage=10, relax=(20, 40, 1000))
    with TritonServer(repo, ports=free_ports(), models=[NAME], exit_on_error=False,
                      log_path=WORK / "compare_tritonserver.log") as server:
        analyzer = Analyzer(server.grpc_url, WORK / "compare_raw", settings)
        for r in range(rounds):
            order = list(configs) if r % 2 == 0 else list(configs)[::-1]
            for label in order:
                status, body = server.load_model(NAME, config_json(parsed[label]))
                if status != 200:
                    raise SystemExit(f"{label}: tritonserver refused the config: {body[:300]}")
                p = analyzer.measure(NAME, 1, concurrency, str(input_data))
                samples[label].append({"throughput": p.throughput, "p50_ms": p.p50_ms, "p99_ms": p.p99_ms,
                                       "stable_within_pct": p.stability_percentage})
                print(f"  round {r + 1} {label}: {p.throughput:.1f} infer/s, p50 {p.p50_ms:.1f} ms, "
                      f"p99 {p.p99_ms:.1f} ms", flush=True)
    out = {}
    for label, ss in samples.items():
        t = [s["throughput"] for s in ss]
        p99 = [s["p99_ms"] for s in ss]
        out[label] = {"samples": ss, "throughput": statistics.median(t), "throughput_range": [min(t), max(t)],
                      "p50_ms": statistics.median(s["p50_ms"] for s in ss), "p99_ms": statistics.median(p99),
                      "p99_range": [min(p99), max(p99)]}
    return out


def describe(text: str) -> str:
    from repo_gen.perf.tune import candidate_of
    from repo_gen.triton.render import parse_config

    return candidate_of(parse_config(text)).describe()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--ma-timeout-s", type=float, default=3600.0)
    ap.add_argument("--resume", action="store_true", help="reuse searches a previous run finished (out/bench_vs_ma/searches.json)")
    args = ap.parse_args()

    from repo_gen import log
    from repo_gen.perf.bench import machine_description
    from repo_gen.perf.input_data import write_input_data
    from repo_gen.triton.repository import read_manifest

    log.setup()
    WORK.mkdir(parents=True, exist_ok=True)
    res: dict = {"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "machine": machine_description(),
                 "command": " ".join([Path(sys.executable).name, *sys.argv]), "concurrency": args.concurrency,
                 "rounds": args.rounds, "loadavg_start": os.getloadavg()}
    base = WORK / "repo_default"
    build_default(base)
    default_text = (base / NAME / "config.pbtxt").read_text()
    entry = read_manifest(base)["models"][NAME]
    input_data = write_input_data(WORK / "input_data.json", base / NAME, entry.get("data"), "real")

    state_path = WORK / "searches.json"  # each finished search, so --resume does not repeat it
    state = json.loads(state_path.read_text()) if args.resume and state_path.is_file() else {}
    if "model_analyzer" not in state:
        print("1. Model Analyzer", flush=True)
        resume_ma = args.resume and (WORK / "repo_ma").is_dir()
        repo_ma = WORK / "repo_ma" if resume_ma else copy_repo(base, WORK / "repo_ma")
        if not resume_ma:
            print(f"Model Analyzer's copy: dropped {batch1_warmups_only(repo_ma)} warm-up sample(s) above batch 1 "
                  "(it keeps them when it sets max batch 1)", flush=True)
        state["model_analyzer"] = run_model_analyzer(repo_ma, args.concurrency, Path(input_data), args.ma_timeout_s,
                                                     resume=resume_ma)
        state_path.write_text(json.dumps(state, indent=2, default=str))
    if "tune" not in state:
        print("2. repo-gen tune", flush=True)
        state["tune"] = run_tune(copy_repo(base, WORK / "repo_tune"), args.concurrency)
        state_path.write_text(json.dumps(state, indent=2, default=str))
    res.update(state)
    print("3. default, tune's pick and Model Analyzer's pick, alternately in one server session", flush=True)
    configs = {"default": default_text, "repo-gen tune": res["tune"]["config_text"],
               "Model Analyzer": res["model_analyzer"]["config_text"]}
    res["compare"] = measure_alternately(copy_repo(base, WORK / "repo_compare"), configs, args.concurrency,
                                         args.rounds, Path(input_data))
    res["loadavg_end"] = os.getloadavg()
    (OUT / "bench_vs_model_analyzer.json").write_text(json.dumps(res, indent=2, default=str))

    search = {"default": ("-", "-"), "repo-gen tune": (f"{res['tune']['wall_s']:.0f}",
                                                       f"{res['tune']['configs']} (+{res['tune']['remeasurements']} re-measurements)"),
              "Model Analyzer": (f"{res['model_analyzer']['wall_s']:.0f}", str(res["model_analyzer"]["configs"]))}
    print(f"\nmobilevit_xxs python backend FP32, gRPC, concurrency {args.concurrency}, {args.rounds} alternating rounds "
          f"(medians; ranges in brackets); load {res['loadavg_start'][0]:.1f} -> {res['loadavg_end'][0]:.1f}")
    print("| config | what | infer/s | p50 ms | p99 ms | search s | configs measured |")
    print("|---|---|---|---|---|---|---|")
    for label, m in res["compare"].items():
        lo, hi = m["throughput_range"]
        plo, phi = m["p99_range"]
        print(f"| {label} | {describe(configs[label])} | {m['throughput']:.1f} [{lo:.1f}-{hi:.1f}] | {m['p50_ms']:.1f} | "
              f"{m['p99_ms']:.1f} [{plo:.1f}-{phi:.1f}] | {search[label][0]} | {search[label][1]} |")
    d = res["tune"].get("decision") or {}
    if d:
        print(f"tune decided by {d['rule']}: {d['detail']}")
    print(f"wrote {OUT / 'bench_vs_model_analyzer.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

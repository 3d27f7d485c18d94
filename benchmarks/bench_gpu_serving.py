"""The torch runtime served on a GPU, side by side with in-process PyTorch, in one lease.

Phases (each writes into `<out>/gpu_serving.json` as it goes, so a run cut short keeps what it measured):

  build       `repo-gen build --runtimes torch` (mobilevit_s FP16 by default): ONNX export and checks,
              the FP16 fidelity report, and the compile of every batch bucket on this GPU with its caches.
  serve       tritonserver on that repository with an EMPTY inductor cache dir (only the build's
              artifacts help): start to READY; perf_analyzer at client batch 64 and at client batch 1
              (concurrency 1..128), over CUDA shared memory and over gRPC, p50/p99 and Triton's
              queue/compute breakdown. --serve-configs serves other instance counts / output memory in turn
              (e.g. 1xhost,2xhost,2xdevice; --two-instances = 1xhost,2xhost).
  inprocess   the same prepared module in this process: eager, torch.compile, compile + CUDA graphs
              (reduce-overhead) at batch 1 / 64 / 256, plus plain eager (no BN folding, NCHW).
  starts      server start to READY --starts times, with the model's load-time breakdown from its log.
  runner      the serving runner in-process: CUDA graph trees vs graphs captured by us, back to back and
              synchronized per call (as served).
  plugins     compile + CUDA graphs at batch 64 with our LayerNorm/attention kernels as custom ops vs
              native; numerics vs native.
  floor       Triton's own cost for these tensors: a python-backend GPU model with the served model's
              input and output that reads its input on the GPU and runs no model, at the serve phase's
              client batch 64 and batch-1 points. What it serves is the ceiling of any python-backend
              model with this contract on this machine.

Usage (on the GPU machine, with tritonserver + perf_analyzer from scripts/pack_triton_gpu.py):
    source triton/env.sh
    python benchmarks/bench_gpu_serving.py --out OUT --phases build,serve
    python benchmarks/bench_gpu_serving.py --out OUT --phases inprocess,plugins --plugin-lib plugins/build/libmobilevit_plugins.so
Prints a table last; `--markdown` renders the JSON as the RESULTS.md section.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

MODEL = "mobilevit_s"


class Results:
    def __init__(self, path: Path):
        self.path = path
        self.data: dict = json.loads(path.read_text()) if path.is_file() else {}

    def put(self, key: str, value) -> None:
        self.data[key] = value
        self.path.write_text(json.dumps(self.data, indent=2, default=str))

    def append(self, key: str, value) -> None:
        self.data.setdefault(key, []).append(value)
        self.put(key, self.data[key])


def machine() -> dict:
    import torch

    p = torch.cuda.get_device_properties(0)
    return {"gpu": p.name, "sms": p.multi_processor_count, "torch": torch.__version__, "cuda": torch.version.cuda,
            "gpus": torch.cuda.device_count(), "cpus": os.cpu_count(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


def phase_build(res: Results, repo: Path, max_batch: int, plugin_lib: str | None = None) -> None:
    """`repo-gen build --runtimes torch`; with `plugin_lib`, `--plugins auto --plugin-lib` so the build
    measures our kernels against native and keeps the faster (repo_gen/torch/kernel_choice.py)."""
    from repo_gen.build import build
    from repo_gen.config import BuildConfig

    t0 = time.perf_counter()
    report = build(BuildConfig(model=MODEL, output=repo, max_batch=max_batch, precisions=("fp16",),
                               runtimes=("torch",), pipeline=False, use_cache=False,
                               plugins="auto" if plugin_lib else "off",
                               trt_plugin_lib=Path(plugin_lib) if plugin_lib else None))
    entry = next(e for e in report.entries if e.runtime == "torch")
    res.put("build", {"wall_s": round(time.perf_counter() - t0, 1), "timings_s": report.timings_s,
                      "status": entry.status, "reason": entry.status_reason, "torch": entry.extra.get("torch"),
                      "fidelity_md": report.fidelity_md, "notes": report.notes})
    print(f"build: {entry.status} {json.dumps(entry.extra.get('torch'))}", flush=True)


def perf_points(res: Results, key: str, server, model: str, work: Path, plan: list[tuple[str, int, int]]) -> None:
    from repo_gen.perf.analyzer import Analyzer, PerfSettings

    for transport, batch, conc in plan:
        settings = PerfSettings(protocol="grpc", measurement_interval_ms=1500, stability_percentage=15, max_trials=6,
                                relax=(30.0,), timeout_s=90, shared_memory="cuda" if transport == "cuda" else "none")
        an = Analyzer(server.grpc_url, work / f"{key}-{transport}", settings, server_alive=server.alive)
        try:
            p = an.measure(model, batch, conc)
            row = {"transport": transport, **p.to_row()}
        except Exception as e:  # keep the sweep going; the failure is a result too
            row = {"transport": transport, "batch_size": batch, "concurrency": conc, "error": str(e)[-400:]}
        res.append(key, row)
        print(f"{key} {transport} b{batch} c{conc}: " + (f"{row['throughput']:.0f} img/s p50 {row['p50_ms']:.2f} "
              f"p99 {row['p99_ms']:.2f} ms queue {row['server_queue_us']:.0f} us infer {row['server_compute_infer_us']:.0f} us"
              if "throughput" in row else f"FAILED {row['error'][-200:]}"), flush=True)


def serve_once(res: Results, repo: Path, key: str, model: str, work: Path, plan) -> None:
    from repo_gen.triton.server import TritonServer, free_ports

    cache = Path(tempfile.mkdtemp(prefix="inductor-empty-"))
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(cache)  # the server starts with only the build's artifacts
    (work / f"tritonserver-{key}.log").unlink(missing_ok=True)  # a log of an earlier run would be read as this one's
    server = TritonServer(repo, ports=free_ports(), models=[model], exit_on_error=True,
                          log_path=work / f"tritonserver-{key}.log")
    t0 = time.perf_counter()
    try:
        server.start(timeout_s=400)
        ready = round(time.perf_counter() - t0, 1)
        res.put(f"{key}_start_to_ready_s", ready)
        print(f"{key}: start to READY {ready} s", flush=True)
        from repo_gen.perf.answer_check import check_answers

        wrong = check_answers(server.grpc_url, "grpc", model) if plan else None
        if wrong:  # perf_analyzer never reads answers: figures of a model answering empty would be void
            res.put(f"{key}_answers", wrong)
            raise RuntimeError(wrong)
        perf_points(res, key, server, model, work, plan)
    finally:
        server.stop()
        shutil.copy(work / f"tritonserver-{key}.log", work.parent / f"tritonserver-{key}.log") if (work / f"tritonserver-{key}.log").is_file() else None
        os.environ.pop("TORCHINDUCTOR_CACHE_DIR", None)


def serve_key(instances: int, output_memory: str) -> str:
    return "served" + ("" if instances == 1 else f"_{instances}inst") + ("" if output_memory == "host" else "_devout")


def phase_serve(res: Results, repo: Path, work: Path, quick: bool, configs: list[tuple[int | None, str]]) -> None:
    """Each (instances, output memory) config served in turn; the build's config.pbtxt is edited for it and restored."""
    model = f"{MODEL}_torch_fp16"
    b1 = [1, 8, 32, 64, 96, 128, 160]
    # Client batch 64 at concurrency >= 4: with max batch 128 the batcher merges two requests into one execute.
    plan = [("cuda", 64, 2), ("cuda", 64, 4), ("cuda", 64, 8), ("cuda", 64, 16), ("grpc", 64, 2)] + \
        [("cuda", 1, c) for c in b1] + [("grpc", 1, 64)]
    if quick:  # the two targets' points: full client batches, and batch-1 clients at the best concurrency seen
        plan = [("cuda", 64, 2), ("cuda", 64, 4), ("cuda", 64, 8), ("cuda", 64, 16), ("cuda", 1, 64)]

    def edit(instances: int, output_memory: str):
        def apply(t: str) -> str:
            t = re.sub(r"instance_group \{\n  count: \d+", f"instance_group {{\n  count: {instances}", t, count=1)
            return t.replace('string_value: "host"', f'string_value: "{output_memory}"')
        return apply

    cfg = repo / model / "config.pbtxt"
    built = re.search(r"instance_group \{\n  count: (\d+)", cfg.read_text())
    for instances, output_memory in configs:
        instances = instances or (int(built.group(1)) if built else 1)  # None: as built
        key = serve_key(instances, output_memory)
        if edit(instances, output_memory)(cfg.read_text()) == cfg.read_text():  # the build's own config
            serve_once(res, repo, key, model, work, plan)
            continue
        with edited_config(cfg, edit(instances, output_memory)):
            serve_once(res, repo, key, model, work, plan)


@contextlib.contextmanager
def edited_config(cfg: Path, edit):
    """config.pbtxt changed by `edit` for the block's duration (the change must take)."""
    text = cfg.read_text()
    changed = edit(text)
    if changed == text:
        raise RuntimeError(f"the edit did not change {cfg}")
    cfg.write_text(changed)
    try:
        yield
    finally:
        cfg.write_text(text)


FLOOR_MODEL = "floor_passthrough"
FLOOR_CODE = '''import torch
import triton_python_backend_utils as pb_utils
from torch.utils.dlpack import from_dlpack, to_dlpack


class TritonPythonModel:
    """No model: each input is read on the GPU (as the torch model's copy into its bucket does) and
    a zero output of the served model's shape goes back as one host array per request."""

    def initialize(self, args):
        self.device = torch.device("cuda", int(args["model_instance_device_id"]))

    def execute(self, requests):
        xs = [from_dlpack(pb_utils.get_input_tensor_by_name(r, "{input}").to_dlpack()) for r in requests]
        sums = [x.to(self.device, non_blocking=True).sum() for x in xs]
        torch.cuda.current_stream(self.device).synchronize()
        # Through DLPack, as the torch model: numpy-built outputs arrive empty with numpy 2 in the stub.
        return [pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor.from_dlpack(
            "{output}", to_dlpack(torch.zeros((x.shape[0], {classes}))))]) for x, _ in zip(xs, sums)]
'''


def phase_floor(res: Results, work: Path, max_batch: int) -> None:
    from repo_gen.triton.config import ModelConfigSpec, TensorSpec
    from repo_gen.triton.render import render_config

    repo = work / "floor_repo"
    version = repo / FLOOR_MODEL / "1"
    version.mkdir(parents=True, exist_ok=True)
    spec = ModelConfigSpec(name=FLOOR_MODEL, template="python", max_batch_size=max_batch,
                           inputs=[TensorSpec("input", "TYPE_FP32", [3, 256, 256])],
                           outputs=[TensorSpec("logits", "TYPE_FP32", [1000])], max_queue_delay_us=100,
                           instance_kind="KIND_GPU", gpus=[0], parameters={"FORCE_CPU_ONLY_INPUT_TENSORS": "no"})
    (repo / FLOOR_MODEL / "config.pbtxt").write_text(render_config(spec))
    (version / "model.py").write_text(FLOOR_CODE.format(input="input", output="logits", classes=1000))
    serve_once(res, repo, "floor", FLOOR_MODEL, work, [("cuda", 64, 2), ("cuda", 64, 8), ("cuda", 1, 64)])


def phase_starts(res: Results, repo: Path, work: Path, count: int) -> None:
    """Server start to READY `count` times (empty inductor cache each time: only the build's artifacts
    help), with the model's own account of its load time from the server log (serving.load_runner)."""
    model = f"{MODEL}_torch_fp16"
    for i in range(count):
        key = f"start{i + 1}"
        serve_once(res, repo, key, model, work, [])
        log = (work / f"tritonserver-{key}.log").read_text(errors="replace") if (work / f"tritonserver-{key}.log").is_file() else ""
        m = re.search(r"loaded in (\{.*\})", log)
        res.append("starts", {"start_to_ready_s": res.data.get(f"{key}_start_to_ready_s"),
                              "model_load_s": m.group(1) if m else None})
        print(f"{key}: model load {m.group(1) if m else '?'}", flush=True)


GRAPH_VARIANTS = ["trees", "manual", "manual-dynamic"]


def phase_runner(res: Results, batches: list[int]) -> None:
    """The serving path's own runner (repo_gen/torch/serving.py BucketRunner) in this process, FP32 NCHW
    input as a client sends it, CUDA graphs by torch's trees vs captured by us; timed back to back and
    with a synchronize after every call (what a served execute() does: it copies the outputs to the host)."""
    import torch

    from repo_gen.torch import serving

    rows = []
    for graphs in GRAPH_VARIANTS:
        torch.compiler.reset()
        meta = {"dtype": "fp16", "buckets": batches, "image_size": 256, "channels_last": True,
                "compile_mode": "reduce-overhead" if graphs == "trees" else "default",
                "cuda_graphs": "trees" if graphs == "trees" else "manual", "dynamic_batch": graphs == "manual-dynamic"}
        runner = serving.BucketRunner(prepared(True), meta, torch.device("cuda", 0))
        warm = runner.warm_up()
        for b in batches:
            x = torch.rand(b, 3, 256, 256, device="cuda")
            ms = timed(runner, x)

            ms_sync = timed(lambda t, r=runner: r(t).cpu(), x)
            row = {"graphs": graphs, "batch": b, "ms": round(ms, 3), "img_s": round(b * 1e3 / ms),
                   "ms_synced_host_out": round(ms_sync, 3), "img_s_synced": round(b * 1e3 / ms_sync),
                   "warm_up_s": warm.get(b)}
            rows.append(row)
            res.put("runner", rows)
            print(f"runner {graphs} b{b}: {ms:.3f} ms back to back ({row['img_s']} img/s), {ms_sync:.3f} ms synced "
                  f"({row['img_s_synced']} img/s), warm-up {warm.get(b)} s", flush=True)


def timed(fn, x, iters: int = 30, reps: int = 3) -> float:
    """Median over `reps` of the mean ms per call of `iters` back-to-back calls (after warm-up)."""
    import torch

    for _ in range(5):
        fn(x)
    torch.cuda.synchronize()
    samples = []
    for _ in range(reps):
        t0 = time.perf_counter()
        for _ in range(iters):
            fn(x)
        torch.cuda.synchronize()
        samples.append((time.perf_counter() - t0) * 1e3 / iters)
    return statistics.median(samples)


def prepared(fold_cl: bool, kernels: str | None = None):
    import torch

    from repo_gen.models import get_model_spec
    from repo_gen.torch import serving
    from repo_gen.torch.loader import load_model

    module = load_model(get_model_spec(MODEL), None, False, 0).module.eval()
    if fold_cl:
        serving.fold_batchnorm(module)
    if kernels:
        from repo_gen.torch.kernel_ops import swap_in_kernels

        print(f"kernels swapped in: {swap_in_kernels(module, kernels)}", flush=True)
    module = module.to("cuda", torch.float16)
    return module.to(memory_format=torch.channels_last) if fold_cl else module


def phase_inprocess(res: Results, batches: list[int]) -> None:
    import torch

    rows = []
    variants = [("eager (NCHW, BN)", False, None), ("eager", True, None), ("compiled", True, "default"),
                ("compiled + CUDA graphs", True, "reduce-overhead")]
    for label, fold_cl, mode in variants:
        module = prepared(fold_cl)
        fn = torch.compile(module, mode=None if mode == "default" else mode, dynamic=False) if mode else module
        for b in batches:
            x = torch.rand(b, 3, 256, 256, device="cuda", dtype=torch.float16)
            if fold_cl:
                x = x.contiguous(memory_format=torch.channels_last)
            t0 = time.perf_counter()
            with torch.inference_mode():
                fn(x)
                torch.cuda.synchronize()
                first_s = time.perf_counter() - t0
                ms = timed(fn, x)
            row = {"variant": label, "batch": b, "ms": round(ms, 3), "img_s": round(b * 1e3 / ms), "first_call_s": round(first_s, 1)}
            rows.append(row)
            res.put("inprocess", rows)
            print(f"in-process {label} b{b}: {ms:.3f} ms {row['img_s']} img/s (first call {first_s:.1f} s)", flush=True)
        torch.compiler.reset()


def phase_plugins(res: Results, lib: str, batch: int) -> None:
    import torch

    x = torch.rand(batch, 3, 256, 256, device="cuda", dtype=torch.float16).contiguous(memory_format=torch.channels_last)
    out = {}
    for label, kernels in (("native", None), ("plugins", lib)):
        torch.compiler.reset()
        module = prepared(True, kernels)
        with torch.inference_mode():
            ref_eager = module(x).float()
            for mode in ("reduce-overhead",):
                fn = torch.compile(module, mode=mode, dynamic=False)
                fn(x)
                ms = timed(fn, x)
                got = fn(x).float().clone()
            out[label] = {"ms": round(ms, 3), "img_s": round(batch * 1e3 / ms), "eager_logits": ref_eager.cpu(), "compiled_logits": got.cpu()}
        print(f"{label} compiled+graphs b{batch}: {ms:.3f} ms {out[label]['img_s']} img/s", flush=True)
    ref, got = out["native"]["compiled_logits"], out["plugins"]["compiled_logits"]
    summary = {k: {"ms": v["ms"], "img_s": v["img_s"]} for k, v in out.items()}
    e_ref, e_got = out["native"]["eager_logits"], out["plugins"]["eager_logits"]
    summary["eager_rel_l2_plugins_vs_native"] = float((e_got - e_ref).norm() / e_ref.norm())
    summary["speedup_plugins_vs_native"] = round(out["native"]["ms"] / out["plugins"]["ms"], 3)
    summary["rel_l2_plugins_vs_native"] = float((got - ref).norm() / ref.norm())
    summary["top1_agreement"] = float((got.argmax(1) == ref.argmax(1)).float().mean())
    summary["batch"] = batch
    res.put("plugins", summary)
    print(f"plugins vs native: {summary}", flush=True)


def table(data: dict) -> str:
    lines = []
    if "build" in data:
        b = data["build"]
        lines.append(f"build: {b['status']} {b.get('reason', '')} compile {b.get('torch', {}).get('compile_s')} s "
                     f"per bucket {b.get('torch', {}).get('compile_s_per_bucket')}, total {b['wall_s']} s")
    for r in data.get("starts", []):
        lines.append(f"start to READY {r['start_to_ready_s']} s, model load {r['model_load_s']}")
    for r in data.get("runner", []):
        lines.append(f"runner {r['graphs']:14} b{r['batch']:<4} {r['ms']:.3f} ms ({r['img_s']} img/s) back to back, "
                     f"{r['ms_synced_host_out']:.3f} ms ({r['img_s_synced']} img/s) synced")
    # served_inflight1: the execute()-answered rows of runs 10 and 12 (thread-answer experiment, RESULTS.md)
    served = sorted(k for k in data if k.startswith("served") and isinstance(data[k], list))
    for key in dict.fromkeys(served + ["floor"]):
        if f"{key}_start_to_ready_s" in data:
            lines.append(f"{key}: start to READY {data[f'{key}_start_to_ready_s']} s")
        for r in data.get(key, []):
            if "throughput" in r:
                lines.append(f"  {r['transport']:5} b{r['batch_size']:<3} c{r['concurrency']:<4} {r['throughput']:>8.0f} img/s "
                             f"p50 {r['p50_ms']:.2f} p99 {r['p99_ms']:.2f} ms  queue {r['server_queue_us']:.0f} "
                             f"in {r['server_compute_input_us']:.0f} infer {r['server_compute_infer_us']:.0f} "
                             f"out {r['server_compute_output_us']:.0f} us")
            else:
                lines.append(f"  {r['transport']:5} b{r['batch_size']:<3} c{r['concurrency']:<4} FAILED")
    for r in data.get("inprocess", []):
        lines.append(f"in-process {r['variant']:24} b{r['batch']:<4} {r['ms']:8.3f} ms {r['img_s']:>7} img/s")
    if "plugins" in data:
        lines.append(f"plugins: {json.dumps(data['plugins'])}")
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--phases", default="build,serve,inprocess,plugins")
    p.add_argument("--repo", type=Path, default=None, help="model repository (default: <out>/../gpu_repo)")
    p.add_argument("--max-batch", type=int, default=64)
    p.add_argument("--batches", default="1,64,256")
    p.add_argument("--plugin-lib", default=None,
                   help="libmobilevit_plugins.so: the build phase measures our kernels with it, the plugins phase A/Bs them")
    p.add_argument("--quick", action="store_true", help="fewer concurrency points")
    p.add_argument("--two-instances", action="store_true", help="serve phase: also 2 instances on the one GPU "
                   "(= --serve-configs 1xhost,2xhost)")
    p.add_argument("--serve-configs", default=None,
                   help="serve phase: <instances>x<output memory> configs to serve in turn, e.g. 1xhost,2xhost,2xdevice "
                        "(default: the build's own config)")
    p.add_argument("--starts", type=int, default=3, help="starts phase: server starts to time")
    p.add_argument("--runner-batches", default="64,128", help="runner phase: batch buckets")
    p.add_argument("--runner-variants", default=",".join(GRAPH_VARIANTS), help="runner phase: graph variants")
    p.add_argument("--table", action="store_true", help="print the table of an existing JSON and exit")
    a = p.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    res = Results(a.out / "gpu_serving.json")
    if a.table:
        print(table(res.data))
        return 0
    repo = a.repo or Path(tempfile.gettempdir()) / "gpu_repo"
    work = Path(tempfile.gettempdir()) / "gpu_serving_work"
    work.mkdir(parents=True, exist_ok=True)
    spec = a.serve_configs or ("1xhost,2xhost" if a.two_instances else "")
    serve_configs: list[tuple[int | None, str]] = [] if spec else [(None, "host")]  # default: the build's config
    for item in filter(None, spec.split(",")):
        count, _, memory = item.strip().partition("x")
        if not count.isdigit() or memory not in ("host", "device"):
            p.error(f"--serve-configs: {item!r} is not <instances>x<host|device>, e.g. 2xdevice")
        serve_configs.append((int(count), memory))
    res.put("machine", machine())
    ok = True
    for phase in [x.strip() for x in a.phases.split(",") if x.strip()]:
        t0 = time.perf_counter()
        try:
            if phase == "build":
                phase_build(res, repo, a.max_batch, a.plugin_lib)
            elif phase == "serve":
                phase_serve(res, repo, work, a.quick, serve_configs)
            elif phase == "floor":
                phase_floor(res, work, a.max_batch)
            elif phase == "starts":
                phase_starts(res, repo, work, a.starts)
            elif phase == "runner":
                GRAPH_VARIANTS[:] = a.runner_variants.split(",")
                phase_runner(res, [int(b) for b in a.runner_batches.split(",")])
            elif phase == "inprocess":
                phase_inprocess(res, [int(b) for b in a.batches.split(",")])
            elif phase == "plugins":
                phase_plugins(res, a.plugin_lib, 64)
            else:
                raise SystemExit(f"unknown phase {phase}")
        except Exception:
            ok = False
            res.append("errors", {"phase": phase, "traceback": traceback.format_exc()[-3000:]})
            traceback.print_exc()
        res.append("phase_seconds", {phase: round(time.perf_counter() - t0, 1)})
        print(f"== phase {phase}: {time.perf_counter() - t0:.0f} s", flush=True)
    print(table(res.data))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

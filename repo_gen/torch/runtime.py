"""The `torch` runtime: a python-backend Triton model that runs the PyTorch model itself.

On a machine with a CUDA GPU, `repo-gen build --runtimes torch` writes a KIND_GPU model that runs
FP16 (FP32 for the fp32 variant, `--torch-dtype bf16` for BF16) with BatchNorm folded, channels_last,
one static-shape `torch.compile` graph per batch bucket, each captured as a CUDA graph, and
compiles it here, on the target GPU, ahead of time (Dynamo's AOT precompile, one file per bucket), so
a server start loads each bucket in about a second instead of tracing and compiling it. Without a GPU it writes an eager FP32 CPU model (what CI
serves on the CPU tritonserver) and says so in one line.

The artifacts (`<version>/`): model.py (templates/torch_model.py.j2), repo_gen_torch.py (a copy of
repo_gen/torch/serving.py), weights.pt (state dict, read with weights_only=True), torch_meta.json
(architecture, dtype, buckets, torch version and GPU), rebuild.sh, and for GPU builds compiled_b<bucket>.bin
(one AOT-precompiled graph per bucket, repo_gen/torch/serving.py) or compile_cache.bin (torch.compile's
caches, where a bucket cannot be precompiled).
"""

from __future__ import annotations

import json
import shlex
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from repo_gen.errors import BuildFailure, UserError
from repo_gen.torch.kernel_choice import KernelChoice
from repo_gen.triton.config import ModelConfigSpec
from repo_gen.triton.models import warmups, write_config_and_labels
from repo_gen.triton.render import render_template

RUNTIME = "torch"
# Batch sizes compiled as their own CUDA graph: a batch is padded up to the next one. 1 for lone
# requests, 8 and 32 for what the dynamic batcher forms from batch-1 clients, 64 for full client
# batches when max is larger (the batcher merges them up to max), max for full batches.
DEFAULT_BUCKETS = (1, 8, 32, 64)


@dataclass
class TorchModelResult:
    files: list[str]
    status: str
    reason: str
    extra: dict[str, Any] = field(default_factory=dict)


def visible_gpus() -> int:
    """CUDA GPUs torch sees here (0 without torch's CUDA or a driver)."""
    try:
        import torch

        return torch.cuda.device_count() if torch.cuda.is_available() else 0
    except ImportError:
        return 0


def resolve_gpus(gpus: tuple[int, ...] | None, flag: str = "--gpus") -> tuple[int, ...]:
    """The GPU indices to place instances on: all visible ones by default, else the validated list.

    A list on a machine without GPUs, an empty list or an index that does not exist is a UserError
    naming the fix (issue 21's bad inputs); no GPU and no list gives ().
    """
    count = visible_gpus()
    if gpus is None:
        return tuple(range(count))
    if not gpus:
        raise UserError(f"{flag}: empty list; name GPU indices (e.g. {flag} 0,1) or leave {flag} out to use all")
    if count == 0:
        raise UserError(f"{flag} {','.join(map(str, gpus))}: this machine has no CUDA GPU; leave {flag} out "
                        "(the torch runtime then builds a CPU model) or build on the GPU machine")
    bad = [g for g in gpus if not 0 <= g < count]
    if bad:
        raise UserError(f"{flag} {','.join(map(str, gpus))}: GPU {bad[0]} does not exist; this machine has "
                        f"{count} GPU(s): use indices 0..{count - 1}")
    return tuple(dict.fromkeys(gpus))


def parse_gpus(spec: str | None) -> tuple[int, ...] | None:
    """`--gpus 0,1` -> (0, 1); None -> None (all visible); '' -> () (rejected by resolve_gpus)."""
    if spec is None:
        return None
    try:
        return tuple(int(p) for p in spec.split(",") if p.strip())
    except ValueError:
        raise UserError(f"--gpus {spec}: use a comma list of GPU indices, e.g. --gpus 0 or --gpus 0,1") from None


def buckets_for(max_batch: int) -> list[int]:
    return sorted({b for b in DEFAULT_BUCKETS if b < max_batch} | {max_batch})


def rebuild_argv(cfg: Any) -> list[str]:
    """`repo-gen build` of this build's torch models, without `--output`: rebuild.sh adds the repository
    it sits in, so a moved repository rebuilds in place. The checkpoint and plugin library are files
    outside the repository and keep their absolute paths."""
    argv = ["repo-gen", "build", "--model", cfg.model, "--runtimes", RUNTIME, "--precisions", ",".join(cfg.precisions),
            "--max-batch", str(cfg.max_batch), "--image-size", str(cfg.image_size)]
    if cfg.weights is not None:
        argv += ["--weights", str(Path(cfg.weights).absolute())]
    elif cfg.pretrained:
        argv.append("--pretrained")
    if not cfg.pipeline:
        argv.append("--no-pipeline")
    if cfg.plugins != "off":  # measure our kernels again on the new GPU
        argv += ["--plugins", cfg.plugins]
    if cfg.trt_plugin_lib is not None:
        argv += ["--plugin-lib", str(Path(cfg.trt_plugin_lib).absolute())]
    return argv


def rebuild_script(argv: list[str]) -> str:
    return ("#!/bin/sh\n# Recompile this model's torch.compile artifacts for the GPU and torch of this machine, in the\n"
            "# model repository this script sits in (<repository>/<model>/<version>/rebuild.sh).\n"
            'HERE=$(cd "$(dirname "$0")" && pwd)\n'
            f'exec {shlex.join(argv)} --output "$HERE/../.."\n')


_MODULES: dict[tuple, Any] = {}  # the FP32 PyTorch module per (model, weights, seed): loaded once per build


def write_torch_request(req: Any) -> Any:
    """The runtime table's writer (`repo_gen.runtimes`): WriteRequest -> WrittenModel."""
    from repo_gen.config import DEFAULT_INSTANCES, TORCH_GPU_INSTANCES
    from repo_gen.results import WrittenModel
    from repo_gen.torch.loader import load_model

    cfg = req.cfg
    key = (cfg.model, str(cfg.weights), cfg.pretrained, cfg.seed)
    if key not in _MODULES:
        _MODULES.clear()
        _MODULES[key] = load_model(cfg.spec, cfg.weights, cfg.pretrained, cfg.seed).module
    gpus = resolve_gpus(cfg.gpus)
    count = cfg.instance_count or (TORCH_GPU_INSTANCES if gpus else DEFAULT_INSTANCES["torch"])
    result = write_torch_model(req.model_dir, req.name, cfg, _MODULES[key], req.variant.precision, req.labels,
                               req.inputs, req.outputs, count, gpus, cfg.torch_dtype, eval_reference=eval_reference(req),
                               kernel_library=kernel_library(cfg, req.plugin_library))
    status, reason = result.status, result.reason
    torch_extra = result.extra.get("torch", {})
    fid = torch_extra.get("fidelity") or torch_extra.get("fidelity_vs_fp32_torch")
    on = "the evaluation set vs the FP32 ONNX graph" if torch_extra.get("fidelity") else "random inputs vs FP32 PyTorch"
    if fid and req.variant.precision != "fp32" and (fid["rel_l2"] > cfg.fp16_tolerance or fid["top1_agreement"] < 1.0):
        status, reason = "inaccurate", (f"compiled {req.variant.precision} torch model on {on}: relative L2 "
                                        f"{fid['rel_l2']:.2e} (--fp16-tolerance {cfg.fp16_tolerance:g}), top-1 agreement "
                                        f"{fid['top1_agreement'] * 100:.1f}% (100% required)")
    if reason:
        from repo_gen.log import logger

        logger.warning(reason)
    own = None
    if torch_extra.get("fidelity"):
        from repo_gen.results import Fidelity

        variant_fid = req.variant.fidelity_for(RUNTIME)
        own = Fidelity(torch_extra.pop("fidelity"), variant_fid.tolerance if variant_fid else None,
                       f"{req.name} ({torch_extra['what']})")
    return WrittenModel(result.files, status, reason, cfg.max_batch, req.inputs, req.outputs, result.extra, own)


@dataclass
class EvalReference:
    """The build's evaluation images and the FP32 ONNX graph's outputs on them: what the precision
    stage judges the ONNX variants against, so the torch model gets the same table row."""

    x: Any  # [N, 3, H, W] float32
    ref: Any  # [N, classes] FP32 ONNX Runtime logits
    judge: Any  # (outputs) -> metrics dict (the task's fidelity, + accuracy with labels)


_EVAL_REFS: dict[tuple, EvalReference] = {}  # per build's FP32 graph: the fp32 and fp16 models share it


def eval_reference(req: Any) -> EvalReference | None:
    """The evaluation set of `req`'s build with FP32 reference logits; None without the build's FP32 graph."""
    from repo_gen.compare import accuracy
    from repo_gen.data.calibration import load_eval
    from repo_gen.onnx.runner import make_session, run_batches
    from repo_gen.tasks import get_task

    cfg = req.cfg
    fp32 = Path(req.work) / "fp32.onnx" if req.work is not None else None
    if fp32 is None or not fp32.is_file():
        return None
    key = (str(fp32), fp32.stat().st_mtime_ns, str(cfg.eval_dir), cfg.eval_count, cfg.seed)
    if key in _EVAL_REFS:
        return _EVAL_REFS[key]
    evalset = load_eval(cfg.eval_dir, cfg.data, cfg.eval_count, cfg.model_data.labels, cfg.seed)
    ref = run_batches(make_session(fp32), evalset.tensors)
    task = get_task(cfg.task)

    def judge(out: Any) -> dict[str, Any]:
        f: dict[str, Any] = task.fidelity(ref, out)
        if evalset.labels is not None:
            f["accuracy"] = accuracy(out, evalset.labels, cfg.model_data.labels.names)
        return f

    _EVAL_REFS.clear()
    _EVAL_REFS[key] = EvalReference(evalset.tensors, ref, judge)
    return _EVAL_REFS[key]


def run_in_chunks(fn: Any, x: Any, chunk: int) -> Any:
    """numpy [N, ...] -> numpy logits, `fn` taking and returning CPU torch tensors `chunk` rows at a time."""
    import numpy as np
    import torch

    with torch.inference_mode():
        return np.concatenate([fn(torch.from_numpy(np.ascontiguousarray(x[i : i + chunk]))).float().cpu().numpy()
                               for i in range(0, len(x), chunk)])


def kernel_library(cfg: Any, library: tuple[Path | None, dict[str, Any]] | None) -> Path | str:
    """The plugin library to measure our kernels with, or why they are not measured (a reason string).

    `library` is the build's `plugin_library(cfg)` (resolved once per build when `--plugins` is on
    or auto); `--plugins off`, the default, serves native without measuring; `on` keeps the kernels
    when their answers agree (measured all the same), `auto` keeps the faster.
    """
    if cfg.plugins == "off" or library is None:
        return "--plugins off: native, not measured (pass --plugins auto to measure our kernels against it)"
    lib, info = library
    if lib is None or not info.get("exists"):
        return f"no plugin library: {info.get('note') or info.get('path')}; native kept"
    return lib


def write_torch_model(model_dir: Path, name: str, cfg: Any, module: Any, precision: str, labels: list[str],
                      inputs: list[Any], outputs: list[Any], instance_count: int, gpus: tuple[int, ...],
                      dtype: str | None = None, eval_reference: EvalReference | None = None,
                      kernel_library: Path | str = "--plugins off") -> TorchModelResult:
    """Stage one torch-runtime model in `model_dir`; compile it on the GPU when there is one.

    Args:
        module: the FP32 PyTorch module (CPU) whose state dict is stored.
        precision: the variant's precision; "int8" has no torch counterpart (status "skipped").
        gpus: GPU indices for KIND_GPU instance groups; () means a CPU (eager) model.
        dtype: compute dtype override (e.g. "bf16"); None: the variant's precision.
        kernel_library: the plugin library to measure our kernels against native with
            (`repo_gen.torch.kernel_choice`), or the reason they are not measured.
    """
    import torch

    from repo_gen.torch import serving

    if precision == "int8":
        return TorchModelResult([], "skipped", "the torch runtime has no INT8 path (use the trt/onnx int8 variants)")
    on_gpu = bool(gpus)
    wanted = compute = dtype or precision
    if not on_gpu:
        compute = "fp32"  # half convolutions on the CPU are slow or missing; the note says so
    version_dir = model_dir / str(cfg.version)
    version_dir.mkdir(parents=True, exist_ok=True)
    torch.save({k: v.detach().cpu() for k, v in module.state_dict().items()}, version_dir / serving.WEIGHTS_FILE)
    shutil.copyfile(Path(serving.__file__), version_dir / "repo_gen_torch.py")
    buckets = buckets_for(cfg.max_batch) if on_gpu else [cfg.max_batch]
    meta: dict[str, Any] = {
        "timm_name": cfg.spec.timm_name, "num_classes": int(outputs[0].dims[-1]), "image_size": cfg.image_size,
        "dtype": compute, "device": "cuda" if on_gpu else "cpu", "channels_last": on_gpu, "fold_bn": True,
        "compile_mode": "default" if on_gpu else None, "cuda_graphs": "manual",
        "buckets": buckets, "cache_file": None,
        "kernels": "native", **serving.gpu_identity(gpus[0] if on_gpu else 0),
        "rebuild": f"sh {name}/{cfg.version}/rebuild.sh in the model repository (runs {shlex.join(rebuild_argv(cfg))} "
                   "--output <that repository>)",
    }
    extra: dict[str, Any] = {"torch": {k: meta[k] for k in ("dtype", "device", "compile_mode", "cuda_graphs", "buckets",
                                                             "torch_version")}}
    if on_gpu:
        extra["torch"].update(compile_here(meta, version_dir, gpus[0], module, eval_reference, kernel_library,
                                           cfg.fp16_tolerance, force_kernels=cfg.plugins == "on"))
    else:
        meta["kernel_choice"] = extra["torch"]["kernel_choice"] = {
            "kernels": "native", "reason": "no CUDA GPU: our kernels run on a GPU only"}
    if not on_gpu and eval_reference is not None:  # the eager CPU model the server will run, on the same images
        import copy

        cpu = copy.deepcopy(module).float().eval()
        extra["torch"]["fidelity"] = eval_reference.judge(run_in_chunks(cpu, eval_reference.x, 16))
    (version_dir / serving.META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    (version_dir / "rebuild.sh").write_text(rebuild_script(rebuild_argv(cfg)))
    (version_dir / "rebuild.sh").chmod(0o755)

    inp = inputs[0]
    spec = ModelConfigSpec(
        name=name, template="python", max_batch_size=cfg.max_batch, inputs=list(inputs), outputs=list(outputs),
        max_queue_delay_us=cfg.max_queue_delay_us,
        preferred_batch_sizes=[b for b in buckets if b > 1] if on_gpu else [],
        instance_count=instance_count, instance_kind="KIND_GPU" if on_gpu else "KIND_CPU", gpus=list(gpus),
        warmup=warmups(inp, [1]),
        # GPU inputs stay on the GPU (DLPack) when the client sends them in CUDA shared memory.
        parameters={"FORCE_CPU_ONLY_INPUT_TENSORS": "no", "output_memory": "host"} if on_gpu else {},
    )
    files = write_config_and_labels(model_dir, spec, labels)
    what = (f"{compute} on the GPU, torch.compile + one CUDA graph per bucket {buckets}" if on_gpu
            else "eager FP32 on the CPU (built without a GPU)")
    if meta["kernels"] == "plugins":
        what += ", our LayerNorm/attention kernels"
    extra["torch"]["what"] = what
    (version_dir / "model.py").write_text(render_template(
        "torch_model.py.j2", model=cfg.model, what=what, input_name=inputs[0].name, output_name=outputs[0].name))
    names = ["model.py", "repo_gen_torch.py", serving.WEIGHTS_FILE, serving.META_FILE, "rebuild.sh"]
    if meta["cache_file"]:
        names.append(meta["cache_file"])
    names += sorted(meta.get("precompiled", {}).values())
    names += meta.get("kernel_files", [])
    files += [f"{cfg.version}/{n}" for n in names]
    reason = "" if on_gpu else (f"no CUDA GPU here: built {name} as an eager FP32 CPU model; build on the GPU machine "
                                f"for the compiled {wanted} GPU model ({meta['rebuild']})")
    return TorchModelResult(files, "ready", reason, extra)


def compile_here(meta: dict[str, Any], version_dir: Path, gpu: int, module: Any,
                 eval_ref: EvalReference | None = None, kernel_library: Path | str = "--plugins off",
                 tolerance: float = 5e-3, force_kernels: bool = False) -> dict[str, Any]:
    """Choose native or our kernels, compile every bucket on this GPU, check it against the FP32
    module, store the caches.

    Returns timings, the fidelity of the compiled model against FP32 PyTorch (relative L2 of the
    logits and top-1 agreement on random inputs in [0, 1)) and, with `eval_ref`, on the build's
    evaluation images against the FP32 ONNX graph (the ONNX variants' table metrics).
    """
    import copy

    import torch

    from repo_gen.torch import serving

    device = torch.device("cuda", gpu)
    torch.compiler.reset()
    t0 = time.perf_counter()
    prepared = serving.build_module(meta, version_dir / serving.WEIGHTS_FILE, device)
    choice = choose_here(meta, version_dir, prepared, device, kernel_library, tolerance, force_kernels)
    if choice.batch is not None:
        # The measurement compiled two models; the served buckets must not count against Dynamo's
        # per-function recompile limit (8). Recorded cache artifacts survive a reset.
        torch.compiler.reset()
    if choice.kernels == "plugins":  # what the server will build: the staged copies, from the weights
        prepared = serving.build_module(meta, version_dir / serving.WEIGHTS_FILE, device)
    runner = serving.BucketRunner(prepared, meta, device)
    precompile_s: dict[int, float] = {}
    compile_s: dict[int, float] = {}
    saved_bytes, reload_s = 0, 0.0
    why_not = runner.can_precompile()
    if why_not is None:
        try:
            precompile_s = runner.precompile()
            meta["precompiled"] = runner.save_precompiled(version_dir)
            meta["precompiled_bound"] = runner.precompiled_bound
            saved_bytes = sum((version_dir / f).stat().st_size for f in meta["precompiled"].values())
            # What the server will load: the files, read back into a fresh runner, which captures each
            # bucket's CUDA graph (once: the live functions are never captured) and answers below.
            t1 = time.perf_counter()
            runner = serving.BucketRunner(prepared, meta, device)
            runner.load_precompiled(version_dir, meta["precompiled"], meta["precompiled_bound"])
            compile_s = runner.warm_up()
            reload_s = round(time.perf_counter() - t1, 1)
        except Exception as e:  # the torch.compile path below still serves, started more slowly
            for name in meta.pop("precompiled", {}).values():
                (version_dir / name).unlink(missing_ok=True)
            meta.pop("precompiled_bound", None)
            runner = serving.BucketRunner(prepared, meta, device)
            why_not = f"AOT precompile failed ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
            precompile_s, saved_bytes = {}, 0
    if not meta.get("precompiled"):
        from repo_gen.log import logger

        logger.warning(  # the user should know a server start now takes minutes
            f"torch: buckets will be compiled at server start with the build's caches (slower start): {why_not}")
        compile_s = runner.warm_up()
        saved = torch.compiler.save_cache_artifacts()
        if saved is None:
            raise BuildFailure("torch.compiler.save_cache_artifacts() returned nothing after compiling; "
                               "check TORCHINDUCTOR_* settings (caches must be enabled)")
        (version_dir / serving.CACHE_FILE).write_bytes(saved[0])
        meta["cache_file"] = serving.CACHE_FILE
        saved_bytes = len(saved[0])
    total_s = round(time.perf_counter() - t0, 1)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(16, 3, meta["image_size"], meta["image_size"], generator=g)
    with torch.inference_mode():
        reference = copy.deepcopy(module).float()
        reference.train(False)
        ref = reference(x)
    # In chunks of the largest bucket (the runner would split any batch; chunks bound the memory).
    got = torch.from_numpy(run_in_chunks(lambda t: runner(t.to(device)), x.numpy(), runner.buckets[-1]))
    rel_l2 = float((got - ref).norm() / ref.norm())
    top1 = float((got.argmax(1) == ref.argmax(1)).float().mean())
    out: dict[str, Any] = {"compile_s_per_bucket": {b: round(precompile_s.get(b, 0) + s, 2) for b, s in compile_s.items()},
                           "compile_s": total_s, "artifact_bytes": saved_bytes,
                           "start_artifacts": (f"AOT-precompiled buckets (reloaded and checked in {reload_s} s)"
                                               if meta.get("precompiled") else f"compile caches ({why_not})"),
                           "kernel_choice": choice.to_dict(),
                           "fidelity_vs_fp32_torch": {"rel_l2": rel_l2, "top1_agreement": top1,
                                                      "inputs": "16 random [0,1)"}}
    if eval_ref is not None:
        out["fidelity"] = eval_ref.judge(run_in_chunks(lambda t: runner(t.to(device)), eval_ref.x, runner.buckets[-1]))
    return out


def choose_here(meta: dict[str, Any], version_dir: Path, prepared: Any, device: Any, kernel_library: Path | str,
                tolerance: float, force: bool = False) -> KernelChoice:
    """Measure our kernels against `prepared` when a library is at hand; with a win, stage them and
    record it in `meta` ("kernels", "plugin_lib", "kernel_choice", "kernel_files")."""
    from repo_gen.log import logger
    from repo_gen.plugins.kernels import LIBRARY_NAME
    from repo_gen.torch.kernel_choice import choose_kernels, not_measured, stage_kernel_files

    if isinstance(kernel_library, str):
        choice = not_measured(kernel_library)
    elif meta["dtype"] not in ("fp16", "fp32"):
        choice = not_measured(f"our kernels have FP16 and FP32 paths only: native for {meta['dtype']}")
    else:
        choice = choose_kernels(prepared, meta, device, kernel_library, tolerance, force)
        logger.info(f"kernels: {choice.reason}")
    if choice.kernels == "plugins":
        meta.update(kernels="plugins", plugin_lib=LIBRARY_NAME,
                    kernel_files=stage_kernel_files(version_dir, Path(kernel_library)))
    meta["kernel_choice"] = choice.to_dict()
    return choice


def gpu_config_override(config_text: str, gpus: tuple[int, ...]) -> str | None:
    """The JSON config that Triton's load API takes, with every KIND_GPU instance group moved to `gpus`.

    None when the config has no KIND_GPU group (nothing to place). `repo-gen serve --gpus` loads the GPU
    models with it, so the repository on disk is never rewritten.
    """
    from google.protobuf import json_format

    from repo_gen.triton.render import parse_config

    cfg = parse_config(config_text)
    groups = [g for g in cfg.instance_group if g.kind == g.KIND_GPU]
    if not groups:
        return None
    for g in groups:
        del g.gpus[:]
        g.gpus.extend(gpus)
    return json_format.MessageToJson(cfg, preserving_proto_field_name=True)

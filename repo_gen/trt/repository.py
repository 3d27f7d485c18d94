"""Write one `<model>_trt_<precision>` model directory: config, ONNX, rebuild script, README, plan.

    <model>_trt_<precision>/
      config.pbtxt          platform tensorrt_plan, max_batch_size = profile max, CUDA graphs
      labels.txt
      model.onnx            the strongly typed graph trtexec compiles
      rebuild_engine.sh     the trtexec command (run it inside the serving tritonserver image)
      README.md             why and how to rebuild, with the exact docker command
      trt_build.json        what was built (only when built here), next to
      trt_layers.json       the engine inspector's layer information
      <version>/            always (Triton needs a version folder); holds model.plan once built
      <version>/model.plan  only when TensorRT and a GPU are both present here (else rebuild_engine.sh)

The plan is built with `builder.py` only when TensorRT imports *and* a GPU is visible.
Otherwise everything but the plan is written, the status is "not_built" with one reason line,
and one log line names the skipped plan and how to get it. Nothing pretends a plan exists: a
plan carried over from an earlier build of the same version is removed, since it was compiled
from another ONNX.

`--plugins` policy: `off` compiles the precision variant's graph; `on` compiles the graph with
plugin nodes (`plugin_onnx`) against the plugin library; `auto` builds both where TensorRT is
present, keeps the one with the lower median latency at the opt batch and records both in the
manifest; without TensorRT both stay "pending" and both rebuild scripts are written.

Every graph bound for TensorRT (the native one and, when made, the one with plugin nodes) is
also compile-checked with TensorRT-RTX ahead of time where it is installed (`compile_check.py`):
the result goes into the manifest and the README. A native graph the check rejects leaves the
model "not_built" with the parser's one-line reason (no plan could be built from it either).

Nothing written names a path of the build machine: the README's commands run from the
repository root, and the rebuild script finds its model folder itself, so the repository can
be moved or mounted anywhere.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

from repo_gen.config import DEFAULT_INSTANCES, BuildConfig
from repo_gen.errors import UserError
from repo_gen.log import logger, warn_once
from repo_gen.precision import PrecisionVariant
from repo_gen.results import WriteRequest, WrittenModel
from repo_gen.triton.config import ModelConfigSpec
from repo_gen.triton.models import warmups, write_config_and_labels
from repo_gen.triton.render import render_template
from repo_gen.trt import profile as prof
from repo_gen.trt.compile_check import WHAT_IT_PROVES, CompileCheck, compile_check, not_run
from repo_gen.trt.trtexec import (
    LAYER_INFO_NAME,
    ONNX_NAME,
    PLAN_NAME,
    SCRIPT_NAME,
    RebuildSpec,
    docker_command,
    render_rebuild_script,
)

README_NAME = "README.md"
BUILD_REPORT_NAME = "trt_build.json"
PLUGIN_ONNX_NAME = "model_plugins.onnx"
PLUGIN_SCRIPT_NAME = "rebuild_engine_plugins.sh"
ALLOCATION_STRATEGY = "STATIC"  # one profile: STATIC and ON_PROFILE_CHANGE allocate the same memory, once
STANDARD_ONNX_DOMAINS = ("", "ai.onnx", "ai.onnx.ml")
Candidate = tuple[str, Path, tuple[str, ...]]  # (kind "native" | "plugin", ONNX graph, plugin libraries)


def default_timing_cache() -> Path:
    """Where Python builds keep their timing cache when --timing-cache is not given."""
    from repo_gen.tools import cache_dir

    return cache_dir() / "trt-timing.cache"


def plugin_op_types(onnx_path: Path) -> tuple[str, ...]:
    """Op types of nodes outside the standard ONNX domains: TensorRT must find a plugin creator
    named after each (its ONNX parser's fallback importer looks creators up by op type)."""
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    ops = {n.op_type for n in model.graph.node if n.domain not in STANDARD_ONNX_DOMAINS}
    return tuple(sorted(ops))


def can_build_here() -> tuple[bool, str]:
    """(True, "TensorRT x on <gpu>") when a plan can be built on this machine, else (False, reason)."""
    from repo_gen.trt.builder import tensorrt_missing_reason, tensorrt_version
    from repo_gen.trt.cuda import gpu_available

    version = tensorrt_version()
    if version is None:
        return False, tensorrt_missing_reason()
    ok, gpu = gpu_available()
    if not ok:
        return False, f"TensorRT {version} is installed but there is {gpu}"
    return True, f"TensorRT {version} on {gpu}"


def _candidates(cfg: BuildConfig, variant: PrecisionVariant, plugin_onnx: Path | None,
                plugin_lib: Path | None) -> list[Candidate]:
    """(kind, onnx, plugin libs) to build, in preference order for ties."""
    native = ("native", Path(variant.trt_onnx), ())
    if cfg.plugins == "off":
        return [native]
    lib = plugin_lib or cfg.trt_plugin_lib
    if cfg.plugins == "on":
        if plugin_onnx is None:
            raise UserError(f"--plugins on: no plugin graph was made for {variant.precision} (the ONNX plugin "
                            "rewrite did not run); pass --plugins off or auto")
        if lib is None:
            raise UserError("--plugins on: pass --plugin-lib /abs/path/libmobilevit_plugins.so")
    if plugin_onnx is None or lib is None:
        return [native]  # auto without a plugin graph or library: nothing to compare
    plugin = ("plugin", Path(plugin_onnx), (str(Path(lib).absolute()),))
    return [plugin] if cfg.plugins == "on" else [native, plugin]


def check_candidates(candidates: list[Candidate], profile: prof.ProfileShapes) -> dict[str, CompileCheck]:
    """Compile-check each candidate graph with TensorRT-RTX; a plugin graph whose library is
    not there is "not_run" with the path."""
    out: dict[str, CompileCheck] = {}
    for kind, onnx_path, libs in candidates:
        missing = [lib for lib in libs if not Path(lib).is_file()]
        if missing:
            out[kind] = not_run(onnx_path, f"plugin library {missing[0]} not found (build plugins/ first)")
        else:
            ops = plugin_op_types(onnx_path) if libs else ()
            out[kind] = compile_check(onnx_path, profile, plugin_libs=tuple(Path(lib) for lib in libs),
                                      plugin_ops=ops)
        check = out[kind]
        if check.status == "failed":
            logger.error(check.summary)
        elif check.status == "not_run":
            warn_once(check.summary.replace(f" for {check.graph}", ""))
        else:
            logger.info(check.summary)
    return out


def _rebuild_spec(cfg: BuildConfig, profile: prof.ProfileShapes, libs: tuple[str, ...], onnx_name: str) -> RebuildSpec:
    return RebuildSpec(
        profile=profile,
        version=cfg.version,
        opt_level=cfg.builder_opt_level,
        version_compatible=cfg.version_compatible,
        plugin_libs=libs,
        timing_cache=str(Path(cfg.timing_cache).absolute()) if cfg.timing_cache else None,
        onnx_name=onnx_name,
    )


def _write_script(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(0o755)


def write_plan_model(req: WriteRequest) -> WrittenModel:
    """The `trt` runtime writer: the plugin graph first when the build uses plugins, then the plan model."""
    from repo_gen.trt.plugin_graph import plugin_graph, uses_plugins

    if not uses_plugins(req.cfg):
        return write_tensorrt_model(req)
    assert req.work is not None
    plugin_onnx, plugin_lib, rewrite = plugin_graph(req.cfg, req.variant, req.work, req.plugin_library)
    written = write_tensorrt_model(req, plugin_onnx=plugin_onnx, plugin_lib=plugin_lib)
    written.details["plugin_rewrite"] = rewrite
    return written


def write_tensorrt_model(req: WriteRequest, *, plugin_onnx: Path | None = None,
                         plugin_lib: Path | None = None) -> WrittenModel:
    """Write the plan model `req.name` into the staged `req.model_dir`.

    Args:
        plugin_onnx: the variant's graph with plugin nodes (from the ONNX plugin rewrite); None
            means there is none, so `--plugins auto` builds only the native engine.
        plugin_lib: plugin library; None means `cfg.trt_plugin_lib`.

    Returns:
        status "ready" (plan built here) or "not_built" (one-line reason), and the plan's details.
    """
    cfg, model_dir, name = req.cfg, req.model_dir, req.name
    assert cfg.image_size is not None and cfg.opt_batch is not None
    profile = prof.profile_shapes(req.inputs[0].name, tuple(req.inputs[0].dims), cfg.opt_batch, cfg.max_batch)
    candidates = _candidates(cfg, req.variant, plugin_onnx, plugin_lib)
    checks = check_candidates(candidates, profile)
    build_here, why = can_build_here()
    results: dict[str, dict[str, Any]] = {}
    chosen = candidates[0]
    if build_here:
        chosen, results = _build_and_choose(model_dir, name, cfg, profile, candidates)
    kind, onnx_src, libs = chosen

    spec = _plan_config(req, profile)
    files = write_config_and_labels(model_dir, spec, req.labels)
    shutil.copyfile(onnx_src, model_dir / ONNX_NAME)
    rebuild = _rebuild_spec(cfg, profile, libs, ONNX_NAME)
    _write_script(model_dir / SCRIPT_NAME, render_rebuild_script(rebuild, name))
    files += [ONNX_NAME, SCRIPT_NAME, README_NAME]
    pending_plugin = cfg.plugins == "auto" and not build_here and len(candidates) > 1
    if pending_plugin:
        files += _write_pending_plugin(req, profile, candidates[1])
    details = _plan_details(cfg, profile, spec, kind, libs, candidates, results, build_here, pending_plugin)
    # name each checked graph as the file it became in the model folder
    graph_files = {kind: ONNX_NAME, **({candidates[1][0]: PLUGIN_ONNX_NAME} if pending_plugin else {})}
    checks = {k: replace(c, graph=graph_files.get(k, f"{k} graph (not kept)")) for k, c in checks.items()}
    details["compile_check"] = {k: c.to_dict() for k, c in checks.items()}
    rejected = checks.get("native")

    if build_here:
        details["tensorrt_version"] = results[kind]["tensorrt_version"]
        status, reason = "ready", f"built with {why}"
        files += [details["plan"], BUILD_REPORT_NAME] + ([LAYER_INFO_NAME] if (model_dir / LAYER_INFO_NAME).exists() else [])
        report = {"model": name, "engine": kind, "built_with": why, "results": results,
                  "rebuild": render_rebuild_script(rebuild, name).splitlines()[-1:]}
        (model_dir / BUILD_REPORT_NAME).write_text(json.dumps(report, indent=1, default=str) + "\n")
        plan_status = f"built here with {why}"
    else:
        _remove_stale_plan(model_dir, name, details["plan"])
        # Triton expects a version folder; the rebuild script writes the plan into it
        (model_dir / str(cfg.version)).mkdir(parents=True, exist_ok=True)
        status = "not_built"
        reason = f"plan not built: {why}; run {SCRIPT_NAME} inside the serving tritonserver image"
        plan_status = f"**not built yet** ({why})"
        if rejected is not None and rejected.status == "failed" and kind == "native":
            reason = (f"TensorRT's ONNX parser/builder rejected model.onnx ({rejected.library} compile check): "
                      + "; ".join(rejected.errors)[:400])
            plan_status = "**cannot be built**: the compile check below rejected the graph"
        final_dir = Path(cfg.output).absolute() / name
        logger.warning(f"{name}: skipped {details['plan']}: {why}; build it with {final_dir / SCRIPT_NAME} inside the "
                       f"tritonserver image you serve with (command in {final_dir / README_NAME})")

    alternatives = _alternatives(details["plan"], profile, kind, candidates, results, pending_plugin)
    _write_readme(req, profile, spec, details, rebuild, libs, plan_status, alternatives, build_here, checks)
    return WrittenModel(files, status, reason, spec.max_batch_size, req.inputs, req.outputs, details)


def _plan_config(req: WriteRequest, profile: prof.ProfileShapes) -> ModelConfigSpec:
    """config.pbtxt of a plan: max_batch_size = the profile's max, preferred sizes, CUDA graphs, warm-up."""
    cfg = req.cfg
    assert cfg.opt_batch is not None
    preferred = prof.preferred_batch_sizes(cfg.opt_batch, cfg.max_batch)
    graphs = prof.cuda_graph_batch_sizes(preferred, cfg.max_batch)
    return ModelConfigSpec(
        name=req.name,
        template="tensorrt_plan",
        max_batch_size=profile.max_batch,
        inputs=req.inputs,
        outputs=req.outputs,
        max_queue_delay_us=cfg.max_queue_delay_us,
        preferred_batch_sizes=preferred,
        instance_count=cfg.instance_count or DEFAULT_INSTANCES["trt"],
        instance_kind="KIND_GPU",
        warmup=warmups(req.inputs[0], prof.warmup_batch_sizes(profile.max_batch)),
        parameters={"execution_context_allocation_strategy": ALLOCATION_STRATEGY},
        cuda_graphs=[(r.batch_size, r.lower_bound) for r in prof.graph_ranges(graphs)],
        default_model_filename=PLAN_NAME,
    )


def _write_pending_plugin(req: WriteRequest, profile: prof.ProfileShapes, plugin: Candidate) -> list[str]:
    """`--plugins auto` without TensorRT here: the plugin graph and its own rebuild script, to time later."""
    _, p_onnx, p_libs = plugin
    shutil.copyfile(p_onnx, req.model_dir / PLUGIN_ONNX_NAME)
    p_spec = _rebuild_spec(req.cfg, profile, p_libs, PLUGIN_ONNX_NAME)
    _write_script(req.model_dir / PLUGIN_SCRIPT_NAME, render_rebuild_script(p_spec, req.name))
    return [PLUGIN_ONNX_NAME, PLUGIN_SCRIPT_NAME]


def _plan_details(cfg: BuildConfig, profile: prof.ProfileShapes, spec: ModelConfigSpec, kind: str,
                  libs: tuple[str, ...], candidates: list[Candidate], results: dict[str, dict[str, Any]],
                  build_here: bool, pending_plugin: bool) -> dict[str, Any]:
    """The manifest's record of a plan model (`tensorrt_version` is filled in once built)."""
    return {
        "tensorrt_version": None,
        "plan": f"{cfg.version}/{PLAN_NAME}",
        "engine": kind,
        "plugin_libs": list(libs) + ([lib for lib in candidates[1][2] if lib not in libs] if pending_plugin else []),
        "version_compatible": cfg.version_compatible,
        "builder_opt_level": cfg.builder_opt_level,
        "profile": {"input": profile.input_name, "min": list(profile.min), "opt": list(profile.opt),
                    "max": list(profile.max)},
        "preferred_batch_sizes": spec.preferred_batch_sizes,
        "cuda_graph_batch_sizes": [b for b, _ in spec.cuda_graphs],
        "rebuild_script": SCRIPT_NAME,
        "plugins": {"mode": cfg.plugins, "chosen": kind if (build_here or len(candidates) == 1) else "pending",
                    "candidates": {k: results.get(k, {"status": "pending"}) for k, _, _ in candidates}},
    }


def _remove_stale_plan(model_dir: Path, name: str, plan_rel: str) -> None:
    stale = model_dir / plan_rel
    if stale.exists():
        stale.unlink()
        logger.info(f"{name}: removed {plan_rel} carried over from an earlier build (compiled from another ONNX)")


def _alternatives(plan_rel: str, profile: prof.ProfileShapes, kind: str, candidates: list[Candidate],
                  results: dict[str, dict[str, Any]], pending_plugin: bool) -> str:
    """The README's paragraph on native vs plugin engines ("" with one candidate)."""
    if pending_plugin:
        p_libs = candidates[1][2]
        return (
            f"Not decided yet (TensorRT was not available at build time). `{SCRIPT_NAME}` builds the native "
            f"engine, `{PLUGIN_SCRIPT_NAME}` the one with plugins; time both at the opt batch, e.g. "
            f"`trtexec --loadEngine={plan_rel} --shapes={prof.shape_arg(profile, 'opt')} "
            + "".join(f"--staticPlugins={lib} " for lib in p_libs)
            + "--useCudaGraph`, and keep the faster (GUIDE: plugins can break TensorRT's fusions and lose)."
        )
    if len(results) > 1:
        return "Both were built and timed at the opt batch here; kept: " + kind + ". " + ", ".join(
            f"{k}: {r.get('latency_ms', float('nan')):.3f} ms" for k, r in results.items())
    return ""


def _write_readme(req: WriteRequest, profile: prof.ProfileShapes, spec: ModelConfigSpec, details: dict[str, Any],
                  rebuild: RebuildSpec, libs: tuple[str, ...], plan_status: str, alternatives: str,
                  built_here: bool, checks: dict[str, CompileCheck]) -> None:
    cfg = req.cfg
    image = cfg.triton_image
    readme = render_template(
        "trt_model_README.md.j2",
        model_name=req.name,
        precision=req.variant.precision,
        max_batch=profile.max_batch,
        preferred=", ".join(str(b) for b in spec.preferred_batch_sizes),
        graphs=", ".join(str(b) for b in details["cuda_graph_batch_sizes"]),
        plan_rel=details["plan"],
        plan_status=plan_status,
        version_compatible=cfg.version_compatible,
        image_given=image or "",
        docker_command=docker_command(req.name, rebuild, image),
        built_here=built_here,
        compile_checks=list(checks.items()),
        compile_check_proves=WHAT_IT_PROVES,
        plugin_libs=list(libs),
        alternatives=alternatives,
    )
    (req.model_dir / README_NAME).write_text(readme)


def _build_and_choose(
    model_dir: Path, name: str, cfg: BuildConfig, profile: prof.ProfileShapes,
    candidates: list[Candidate],
) -> tuple[Candidate, dict[str, dict[str, Any]]]:
    """Build every candidate; with more than one, keep the lowest latency at the opt batch."""
    from repo_gen.trt.builder import EngineSpec, build_engine, plan_latency_ms

    work = model_dir / ".trt-candidates"
    work.mkdir(exist_ok=True)
    results: dict[str, dict[str, Any]] = {}
    try:
        for kind, onnx_path, libs in candidates:
            spec = EngineSpec(
                onnx=onnx_path,
                plan=work / f"{kind}.plan",
                profile=profile,
                opt_level=cfg.builder_opt_level,
                version_compatible=cfg.version_compatible,
                timing_cache=Path(cfg.timing_cache) if cfg.timing_cache else default_timing_cache(),
                plugin_libs=tuple(Path(lib) for lib in libs),
                plugin_ops=plugin_op_types(onnx_path) if libs else (),
                layer_info=work / f"{kind}.layers.json",
            )
            results[kind] = {"status": "built", **build_engine(spec).to_dict()}
            if len(candidates) > 1:
                ms = plan_latency_ms(spec.plan, profile, spec.plugin_libs)
                results[kind]["latency_ms"] = round(ms, 4)
                logger.info(f"{name}: {kind} engine {ms:.3f} ms at batch {profile.opt_batch}")
        best = min(candidates, key=lambda c: results[c[0]].get("latency_ms", 0.0))
        kind = best[0]
        vdir = model_dir / str(cfg.version)
        vdir.mkdir(parents=True, exist_ok=True)
        shutil.move(str(work / f"{kind}.plan"), vdir / PLAN_NAME)
        layers = work / f"{kind}.layers.json"
        if layers.exists():
            shutil.move(str(layers), model_dir / LAYER_INFO_NAME)
        for r in results.values():
            r.pop("plan", None)
            r.pop("layer_info", None)
        return best, results
    finally:
        shutil.rmtree(work, ignore_errors=True)

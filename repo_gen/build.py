"""`repo-gen build`: one model from checkpoint to served repository, stage by stage.

    BuildConfig
      -> load_model            (repo_gen.torch.loader)      PyTorch module + provenance
      -> export_onnx           (repo_gen.onnx.export)       raw ONNX, checked vs PyTorch
      -> cleanup_graph         (repo_gen.onnx.passes)       folded, no Identity, shapes; checked again
      -> make_precision_variants (repo_gen.precision.stage) fp32 / fp16 / int8 ONNX + fidelity
      -> rewrite_plugins       (repo_gen.onnx.plugin_rewrite) TensorRT graph with plugin nodes (--plugins on|auto)
      -> write_*_model         (repo_gen.triton.models, repo_gen.trt.repository)  staged model dirs
      -> write_pipeline        (repo_gen.pipeline.ensemble) preprocess + classifier + top-k ensemble
      -> commit                (repo_gen.triton.repository) atomic swap + manifest
      -> report                (BuildReport)

Every stage takes plain values and returns an artifact; nothing touches the repository until
`commit`, so a failure anywhere leaves it exactly as it was.
"""

from __future__ import annotations

import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from repo_gen import __version__
from repo_gen.cache import (
    StageCache,
    fp32_stage_inputs,
    restore_fp32,
    restore_variants,
    store_fp32,
    store_variants,
    variant_keys,
)
from repo_gen.compare import max_relative_error
from repo_gen.config import DEFAULT_INSTANCES, BuildConfig, triton_model_name
from repo_gen.errors import BuildFailure
from repo_gen.labels import labels_for
from repo_gen.log import console, logger, step
from repo_gen.precision import PrecisionVariant
from repo_gen.triton.repository import ModelEntry, RepositoryTransaction

CHECK_BATCHES = (1, 3)  # plus max_batch


@dataclass
class BuildReport:
    model: str
    repository: str
    entries: list[dict] = field(default_factory=list)
    export_check: dict = field(default_factory=dict)
    timings_s: dict[str, float] = field(default_factory=dict)
    weights: dict = field(default_factory=dict)
    variants: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    fidelity_md: str = ""


def planned_models(cfg: BuildConfig) -> list[str]:
    """Names of every Triton model this build writes (known before any work starts)."""
    names = [triton_model_name(cfg.model, r, p) for p in cfg.precisions for r in cfg.runtimes
             if not (r == "torch" and p == "int8")]  # the torch runtime has no INT8 path
    if cfg.pipeline:
        from repo_gen.pipeline import ensemble_model_names

        names += ensemble_model_names(cfg.model)
    return names


def torch_reference(module: Any, image_size: int, batches: list[int], seed: int = 0) -> dict[int, tuple]:
    """Inputs in [0, 1) and PyTorch logits for each batch size, computed once for every check.

    PyTorch eager is slow on these CPUs (about 5 img/s for mobilevit_s), so a batch larger
    than 8 is made of 5 distinct images repeated: PyTorch runs 5 images, ONNX Runtime still
    runs the full batch, and every row is compared. 5 divides none of the usual batch sizes,
    so a graph that mixed rows of the batch would still show up as an error.
    """
    import torch

    rng = np.random.default_rng(seed)
    out = {}
    for b in batches:
        distinct = b if b <= 8 else 5
        x = rng.random((distinct, 3, image_size, image_size), dtype=np.float32)
        with torch.inference_mode():
            ref = module(torch.from_numpy(x)).numpy()
        reps = -(-b // distinct)
        out[b] = (np.tile(x, (reps, 1, 1, 1))[:b], np.tile(ref, (reps, 1))[:b])
    return out


def check_onnx(onnx_model: Any, reference: dict[int, tuple]) -> dict[str, float]:
    """Max relative error of ONNX Runtime vs the PyTorch reference, per batch size."""
    from repo_gen.onnx.runner import make_session

    session = make_session(onnx_model)
    return {
        str(b): max_relative_error(ref, session.run(None, {"input": x})[0]) for b, (x, ref) in reference.items()
    }


def build(cfg: BuildConfig, lock_timeout_s: float = 0.0) -> BuildReport:
    report = BuildReport(model=cfg.model, repository=str(cfg.output.absolute()))
    t = report.timings_s
    t_start = time.perf_counter()
    assert cfg.image_size is not None
    # Resolved once, before any stage runs: a missing library fails the build here.
    library = plugin_library(cfg) if uses_plugins(cfg) else None
    with RepositoryTransaction(cfg.output, planned_models(cfg), lock_timeout_s=lock_timeout_s) as tx:
        assert tx.work is not None
        work = tx.work

        # Stage cache (repo_gen.cache): same weights, model, options and tools -> reuse the checked
        # FP32 ONNX file instead of loading PyTorch, exporting and checking again.
        batches = sorted({*CHECK_BATCHES, cfg.max_batch})
        fp32_path = work / "fp32.onnx"
        cache = StageCache.for_config(cfg)
        fp32_key = cache.key("fp32", fp32_stage_inputs(cfg, batches))
        num_classes = restore_fp32(cache, fp32_key, fp32_path, cfg, report)
        if num_classes is None:
            t_stage = time.perf_counter()
            num_classes = fp32_stage(cfg, work, batches, t, report)
            store_fp32(cache, fp32_key, fp32_path, report, time.perf_counter() - t_stage)
        ec = report.export_check
        worst = max([*ec["raw"].values(), *ec["cleaned"].values()])
        if worst > cfg.export_tolerance:
            raise BuildFailure(
                f"ONNX export of {cfg.model} differs from PyTorch: max relative error {worst:.2e} > "
                f"{cfg.export_tolerance:.0e} (per batch: raw {ec['raw']}, cleaned {ec['cleaned']})"
            )

        variants = make_variants(cfg, fp32_path, work, t, cache=cache, fp32_key=fp32_key, report=report)
        labels = labels_for(num_classes)
        write_variants(cfg, tx, variants, labels, num_classes, report, library)

        if cfg.pipeline:
            from repo_gen.pipeline import write_pipeline

            with step("ensemble pipeline", t):
                for entry in write_pipeline(cfg, tx, labels, report):
                    tx.add(entry)

        t["total"] = round(time.perf_counter() - t_start, 3)
        record = {
            "model": cfg.model,
            "repo_gen_version": __version__,
            "python": platform.python_version(),
            "options": cfg.to_dict(),
            "weights": report.weights,
            "export_check": report.export_check,
            "variants": report.variants,
            "timings_s": t,
            "notes": report.notes,
            "cache": cache.summary(),
        }
        if report.fidelity_md:
            tx.add_root_file(fidelity_file(cfg.model), f"# Fidelity of {cfg.model} variants vs FP32\n\n{report.fidelity_md}\n")
        with step("commit", t):
            tx.commit(record)
        report.entries = [e.__dict__ for e in tx.entries.values()]
    return report


def fp32_stage(cfg: BuildConfig, work: Path, batches: list[int], t: dict, report: BuildReport) -> int:
    """Load the model, export it, check it against PyTorch, clean the graph up and check again.

    Writes `work/fp32.onnx`, fills `report.weights` / `report.export_check` / notes and returns the
    number of classes. The caller applies the export tolerance (to fresh and cached results alike).
    """
    from repo_gen.onnx.export import export_onnx
    from repo_gen.onnx.passes import cleanup_graph
    from repo_gen.torch.loader import load_model

    assert cfg.image_size is not None
    with step("load model", t):
        loaded = load_model(cfg.spec, cfg.weights, cfg.pretrained, cfg.seed)
    num_classes = int(loaded.module.get_classifier().out_features)
    report.weights = {
        "source": loaded.source,
        "trained": loaded.trained,
        "checkpoint_sha256": loaded.checkpoint_sha256,
        "path": loaded.weights_path,
        "num_classes": num_classes,
    }
    if not loaded.trained:
        report.notes.append(f"UNTRAINED: {cfg.model} has random weights (seed {cfg.seed}); predictions are meaningless")

    with step("export onnx", t):
        raw = export_onnx(loaded.module, cfg.image_size, cfg.opset)
    with step("check export", t):
        reference = torch_reference(loaded.module, cfg.image_size, batches, cfg.seed)
        raw_err = check_onnx(raw, reference)
    with step("cleanup graph", t):
        clean = cleanup_graph(raw)
        fp32_path = work / "fp32.onnx"
        import onnx

        onnx.save(clean, str(fp32_path))
    with step("check cleaned graph", t):
        clean_err = check_onnx(clean, reference)
    report.export_check = {
        "tolerance": cfg.export_tolerance,
        "metric": "max|onnx - torch| / max|torch| per batch (inputs uniform [0,1))",
        "raw": raw_err,
        "cleaned": clean_err,
        "nodes_raw": len(raw.graph.node),
        "nodes_cleaned": len(clean.graph.node),
    }
    return num_classes


def make_variants(cfg: BuildConfig, fp32_path: Path, work: Path, timings: dict,
                  cache: StageCache | None = None, fp32_key: str | None = None,
                  report: BuildReport | None = None) -> list[PrecisionVariant]:
    """FP32 always exists; FP16/INT8 come from the precision stage when requested.

    With a `cache` (and the FP32 stage's key), each FP16/INT8 variant keyed by its own options is
    restored from the stage cache when present, and stored there when made.
    """
    variants = []
    if "fp32" in cfg.precisions:
        variants.append(PrecisionVariant("fp32", fp32_path, fp32_path, "fp32", {}, "ready"))
    others = [p for p in cfg.precisions if p != "fp32"]
    cache = cache or StageCache(enabled=False)
    keys = variant_keys(cache, fp32_key, cfg, others)
    cached = restore_variants(cache, keys, work, report)
    todo = [p for p in others if p not in cached]
    made: dict[str, PrecisionVariant] = {}
    if todo:
        try:
            from repo_gen.precision.stage import make_precision_variants
        except ImportError as e:
            raise BuildFailure(f"precisions {todo} are not available in this build of repo-gen ({e})") from e
        t0 = time.perf_counter()
        made = {v.precision: v for v in make_precision_variants(cfg, fp32_path, work, timings, todo)}
        store_variants(cache, keys, list(made.values()), time.perf_counter() - t0)
    variants += [cached[p] if p in cached else made[p] for p in others if p in cached or p in made]
    return variants


def write_variants(
    cfg: BuildConfig,
    tx: RepositoryTransaction,
    variants: list[PrecisionVariant],
    labels: list[str],
    num_classes: int,
    report: BuildReport,
    library: tuple[Path | None, dict[str, Any]] | None = None,
) -> None:
    """Stage every (variant, runtime) model; `library` is `plugin_library(cfg)` when plugins are used."""
    from repo_gen.triton.models import write_onnxruntime_model, write_python_onnx_model

    assert cfg.image_size is not None
    data = cfg.data.to_dict()
    torch_module: list[Any] = []  # loaded once, only when a torch-runtime model is written
    for v in variants:
        if v.report.get("table_md") and not report.fidelity_md:
            report.fidelity_md = v.report["table_md"]
        report.variants.append(
            {"precision": v.precision, "status": v.status, "status_reason": v.status_reason,
             "io_dtype": v.io_dtype, "fidelity": v.fidelity, "report": v.report}
        )
        common: dict[str, Any] = dict(version=cfg.version, image_size=cfg.image_size, num_classes=num_classes, labels=labels,
                      max_batch=cfg.max_batch, io_dtype=v.io_dtype, max_queue_delay_us=cfg.max_queue_delay_us)
        status = v.status
        reason = v.status_reason
        if status == "inaccurate" and cfg.allow_inaccurate:
            reason += " (served anyway: --allow-inaccurate)"
        for runtime in cfg.runtimes:
            if runtime == "torch":
                if v.precision == "int8":
                    report.notes.append("--runtimes torch: no INT8 torch model (the torch runtime has no INT8 path)")
                else:
                    tx.add(write_torch_variant(cfg, tx, v, labels, num_classes, data, torch_module, report))
                continue
            name = triton_model_name(cfg.model, runtime, v.precision)
            d = tx.model_dir(name)
            backend = {"onnx": "onnxruntime", "py": "python", "trt": "tensorrt"}[runtime]
            # A plan compiles trt_onnx, whose fidelity (FP16 emulation / TensorRT-form Q/DQ) is
            # measured separately from the CPU-served graph's.
            fid = v.fidelity.get("trt", v.fidelity) if runtime == "trt" else v.fidelity
            extra: dict[str, Any] = {"fidelity": fid}
            common["instance_count"] = cfg.instance_count or DEFAULT_INSTANCES[runtime]
            if runtime == "onnx":
                files = write_onnxruntime_model(d, name, v.serve_onnx, **common)
                rstatus, rreason = status, reason
            elif runtime == "py":
                files = write_python_onnx_model(d, name, v.serve_onnx, **common)
                rstatus, rreason = status, reason
            else:
                from repo_gen.trt.repository import write_tensorrt_model

                plugin_onnx, plugin_lib, rewrite = None, None, None
                if uses_plugins(cfg):
                    assert tx.work is not None
                    plugin_onnx, plugin_lib, rewrite = plugin_graph(cfg, v, tx.work, library)
                result = write_tensorrt_model(d, name, v, cfg, labels, num_classes, plugin_onnx=plugin_onnx,
                                              plugin_lib=plugin_lib)
                files, rstatus, rreason, extra_trt = result
                extra.update(extra_trt)
                if rewrite is not None:
                    extra["plugin_rewrite"] = rewrite
                if status == "inaccurate":
                    rstatus, rreason = status, reason
            tx.add(
                ModelEntry(
                    name=name,
                    base_model=cfg.model,
                    runtime=runtime,
                    backend=backend,
                    precision=v.precision,
                    versions=tx.staged_versions(name, cfg.version),
                    files=[f"{name}/{f}" for f in files],
                    status=rstatus,
                    status_reason=rreason,
                    max_batch_size=cfg.max_batch,
                    data=data,
                    extra=extra,
                )
            )


def write_torch_variant(cfg: BuildConfig, tx: RepositoryTransaction, v: PrecisionVariant, labels: list[str],
                        num_classes: int, data: dict, module_cache: list[Any], report: BuildReport) -> ModelEntry:
    """The torch runtime's model for variant `v` (repo_gen.torch.runtime); loads the PyTorch model once."""
    from repo_gen.torch.loader import load_model
    from repo_gen.torch.runtime import resolve_gpus, write_torch_model

    if not module_cache:
        module_cache.append(load_model(cfg.spec, cfg.weights, cfg.pretrained, cfg.seed).module)
    name = triton_model_name(cfg.model, "torch", v.precision)
    gpus = resolve_gpus(cfg.gpus)
    with step(f"torch model {name}", report.timings_s):
        result = write_torch_model(tx.model_dir(name), name, cfg, module_cache[0], v.precision, labels, num_classes,
                                   v.io_dtype, cfg.instance_count or DEFAULT_INSTANCES["torch"], gpus, cfg.torch_dtype)
    status, reason = result.status, result.reason
    if reason:
        report.notes.append(reason)
    fid = result.extra.get("torch", {}).get("fidelity_vs_fp32_torch")
    if fid and v.precision != "fp32" and fid["rel_l2"] > cfg.fp16_tolerance:
        status, reason = "inaccurate", (f"compiled {v.precision} torch model: relative L2 {fid['rel_l2']:.2e} vs FP32 "
                                        f"PyTorch > --fp16-tolerance {cfg.fp16_tolerance:g}")
    return ModelEntry(name=name, base_model=cfg.model, runtime="torch", backend="python", precision=v.precision,
                      versions=tx.staged_versions(name, cfg.version), files=[f"{name}/{f}" for f in result.files],
                      status=status, status_reason=reason, max_batch_size=cfg.max_batch, data=data,
                      extra={"fidelity": v.fidelity, **result.extra})


def uses_plugins(cfg: BuildConfig) -> bool:
    return cfg.plugins in ("on", "auto") and "trt" in cfg.runtimes


def plugin_library(cfg: BuildConfig) -> tuple[Path | None, dict[str, Any]]:
    """The plugin library the plugin engines load, and a manifest note about it.

    `--plugin-lib` must exist. Without it: `$REPO_GEN_PLUGIN_LIB`, then
    `plugins/build/libmobilevit_plugins.so` of this checkout. When none exists, `--plugins on` is
    a UserError; `auto` keeps only the native engine where TensorRT could build here (nothing to
    compare), and elsewhere names the default path, so both engines stay pending with their
    rebuild scripts (the plugin script expects the library there).
    """
    import os

    from repo_gen.errors import MissingDependency, UserError
    from repo_gen.plugins.kernels import LIBRARY_ENV, LIBRARY_NAME, find_library

    build_hint = "build it with `cmake -S plugins -B plugins/build && cmake --build plugins/build -j`"
    if cfg.trt_plugin_lib is not None:
        lib = Path(cfg.trt_plugin_lib).absolute()
        if not lib.is_file():
            raise UserError(f"--plugin-lib {cfg.trt_plugin_lib}: no such file; {build_hint}, or pass --plugins off")
        return lib, {"path": str(lib), "exists": True, "source": "--plugin-lib"}
    try:
        lib = find_library(None).absolute()
        return lib, {"path": str(lib), "exists": True, "source": "default"}
    except MissingDependency as e:
        if cfg.plugins == "on":
            raise UserError(f"--plugins on needs the plugin library: {e}; or pass --plugin-lib PATH "
                            "(or --plugins auto / off)") from e
    from repo_gen.trt.repository import can_build_here

    default = Path(os.environ.get(LIBRARY_ENV) or Path(__file__).resolve().parents[1] / "plugins" / "build" / LIBRARY_NAME)
    if can_build_here()[0]:
        return None, {"path": str(default), "exists": False, "source": "default",
                      "note": f"not found ({build_hint}): only the native engine was built"}
    return default.absolute(), {"path": str(default.absolute()), "exists": False, "source": "default",
                                "note": f"not built yet: {build_hint} before running the plugin rebuild script"}


def plugin_graph(cfg: BuildConfig, variant: PrecisionVariant, work: Path,
                 library: tuple[Path | None, dict[str, Any]] | None = None) -> tuple[Path | None, Path | None, dict]:
    """`variant.trt_onnx` with the plugin nodes (`work/<precision>_plugins.onnx`), the library
    (`library`, else `plugin_library(cfg)`), and the rewrite's counts for the manifest. No graph
    (None) when nothing matched: `auto` then keeps native."""
    import onnx

    from repo_gen.errors import UserError
    from repo_gen.onnx.plugin_rewrite import plugin_rewrite_report, rewrite_plugins

    lib, lib_info = library or plugin_library(cfg)
    rewritten = rewrite_plugins(onnx.load(str(variant.trt_onnx)))
    counts = plugin_rewrite_report(rewritten) or {}
    record: dict[str, Any] = {"library": lib_info}
    for kind, c in counts.items():
        if c is not None:
            record[kind] = {**{k: c[k] for k in ("found", "replaced", "left_native", "layouts", "dtypes")},
                            "unmatched": c["unmatched"][:10]}
    if not any(c and c["replaced"] for c in counts.values()):
        if cfg.plugins == "on":
            raise UserError(f"--plugins on: no LayerNorm or attention of {variant.precision} matched the plugin "
                            f"patterns ({record}); pass --plugins off or auto")
        return None, lib, record
    path = work / f"{variant.precision}_plugins.onnx"
    onnx.save(rewritten, str(path))
    return path, lib, record


def fidelity_file(model: str) -> str:
    return f"FIDELITY_{model}.md"


def print_summary(report: BuildReport) -> None:
    from rich.table import Table

    table = Table(title=f"repo-gen build: {report.model} -> {report.repository}")
    for col in ("model", "backend", "precision", "status", "note"):
        table.add_column(col)
    for e in report.entries:
        table.add_row(e["name"], e["backend"], e["precision"], e["status"], e["status_reason"][:80])
    console.print(table)
    ec = report.export_check
    if ec:
        worst = max([*ec["raw"].values(), *ec["cleaned"].values()])
        console.print(f"export check: max relative error vs PyTorch {worst:.2e} (tolerance {ec['tolerance']:.0e}), "
                      f"nodes {ec['nodes_raw']} -> {ec['nodes_cleaned']} after cleanup")
    if report.fidelity_md:
        console.print(f"fidelity vs FP32 (also in {report.repository}/{fidelity_file(report.model)}):")
        console.print(report.fidelity_md, markup=False)
    console.print("time per stage (s): " + ", ".join(f"{k} {v:.2f}" for k, v in report.timings_s.items()))
    for n in report.notes:
        console.print(f"[bold yellow]note:[/] {n}")
    logger.debug("build report written to the manifest")

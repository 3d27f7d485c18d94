"""`repo-gen build`: one model from checkpoint to served repository, stage by stage.

    BuildConfig
      -> fp32_stage            load (repo_gen.torch.loader), export (repo_gen.onnx.export), check vs
                               PyTorch, clean up (repo_gen.onnx.passes), check again -> ExportResult
      -> make_variants         fp32 / fp16 / int8 (repo_gen.precision.stage) -> [PrecisionVariant]
      -> write_variants        one writer per runtime (repo_gen.runtimes)    -> [ModelEntry]
      -> write_pipeline        preprocess + classifier + top-k ensemble      -> [ModelEntry]
      -> commit                (repo_gen.triton.repository) atomic swap + manifest
      -> BuildReport           rendered from the results above

Every stage takes plain values and returns a typed result (repo_gen.results); the stage cache
(repo_gen.cache) stores and returns the same results. `build()` only composes those calls and
assembles the report and the manifest record from what they returned. Nothing touches the
repository until `commit`, so a failure anywhere leaves it exactly as it was.
"""

from __future__ import annotations

import platform
import time
from dataclasses import asdict, dataclass, field
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
from repo_gen.config import BuildConfig, triton_model_name
from repo_gen.errors import BuildFailure
from repo_gen.log import console, logger, step
from repo_gen.manifest import ModelEntry
from repo_gen.precision import PrecisionVariant
from repo_gen.results import ExportCheck, ExportResult, WeightsInfo, WriteRequest
from repo_gen.runtimes import RUNTIME_WRITERS
from repo_gen.tasks import get_task
from repo_gen.triton.repository import RepositoryTransaction
from repo_gen.trt.plugin_graph import plugin_library, uses_plugins

CHECK_BATCHES = (1, 3)  # plus max_batch


@dataclass
class BuildReport:
    """What one build made, rendered from the stages' results (`--json` prints `to_dict()`)."""

    model: str
    repository: str
    entries: list[ModelEntry] = field(default_factory=list)
    export: ExportResult | None = None
    variants: list[PrecisionVariant] = field(default_factory=list)
    timings_s: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def fidelity_md(self) -> str:
        """The markdown fidelity table (the same in every variant of a build; "" with FP32 only), then
        the torch runtime's models judged on the same evaluation set (`repo_gen.torch.runtime`)."""
        table = next((v.report["table_md"] for v in self.variants if v.report.get("table_md")), "")
        rows = [{"variant": e.precision, "graph": e.fidelity.graph, "fidelity": e.fidelity.metrics,
                 "accuracy": e.fidelity.metrics.get("accuracy"), "kept": "-", "status": e.status}
                # the torch writer names its own model as the graph; otherwise it is the variant's ONNX graph's
                for e in self.entries if e.runtime == "torch" and e.fidelity and e.fidelity.graph.startswith(e.name)]
        if rows:
            from repo_gen.precision.report import table_rows

            table += ("\n\n" if table else "") + ("The torch runtime's models on the same evaluation images, vs the "
                                                  "FP32 ONNX graph:\n\n" + table_rows(rows))
        return table

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "repository": self.repository,
                "entries": [e.to_dict() for e in self.entries],
                "export_check": asdict(self.export.check) if self.export else {},
                "weights": asdict(self.export.weights) if self.export else {},
                "variants": [v.record() for v in self.variants],
                "timings_s": self.timings_s, "notes": self.notes, "fidelity_md": self.fidelity_md}

    def manifest_record(self, cfg: BuildConfig, cache: StageCache) -> dict[str, Any]:
        """The manifest's `builds[<model>]` record."""
        d = self.to_dict()
        return {"model": cfg.model, "repo_gen_version": __version__, "python": platform.python_version(),
                # "output" is this repository itself: its build-machine path is left out so it can move
                "options": {**cfg.to_dict(), "output": "."},
                "labels": {**cfg.model_data.labels.to_dict(), "names": list(cfg.model_data.labels.names)},
                "weights": d["weights"], "export_check": d["export_check"],
                "variants": d["variants"], "timings_s": self.timings_s, "notes": self.notes,
                "cache": cache.summary()}


def planned_models(cfg: BuildConfig) -> list[str]:
    """Names of every Triton model this build writes (known before any work starts)."""
    names = [triton_model_name(cfg.model, r, p) for p in cfg.precisions for r in cfg.runtimes
             if RUNTIME_WRITERS[r].serves(p)]
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
    t: dict[str, float] = {}
    t_start = time.perf_counter()
    # Resolved once, before any stage runs: a missing library fails the build here.
    # The torch runtime measures our kernels as custom ops against native with the same library.
    wants_library = uses_plugins(cfg) or (cfg.plugins != "off" and "torch" in cfg.runtimes)
    library = plugin_library(cfg) if wants_library else None
    with RepositoryTransaction(cfg.output, planned_models(cfg), lock_timeout_s=lock_timeout_s) as tx:
        assert tx.work is not None
        cache = StageCache.for_config(cfg)
        export, fp32_key = fp32_cached(cfg, tx.work, cache, t)
        check_export(cfg, export)
        variants = make_variants(cfg, export.onnx, tx.work, t, cache=cache, fp32_key=fp32_key)
        if export.num_classes != cfg.model_data.num_classes:  # the checkpoint changed since the config read it
            raise BuildFailure(f"{cfg.weights}: head has {export.num_classes} outputs, "
                               f"{cfg.model_data.num_classes} when first read")
        labels = list(cfg.model_data.labels.names)
        entries = write_variants(cfg, tx, variants, labels, library)
        notes = [*export.notes, *cache.notes]
        if cfg.pipeline:
            from repo_gen.pipeline import write_pipeline

            with step("ensemble pipeline", t):
                pipeline, why_not = write_pipeline(cfg, tx, entries, labels)
            entries += pipeline
            notes += [why_not] if why_not else []
        for entry in entries:
            tx.add(entry)

        t["total"] = round(time.perf_counter() - t_start, 3)
        report = BuildReport(cfg.model, str(cfg.output.absolute()), entries, export, variants, t, notes)
        # Every python model of the repository after this commit, other base models' builds included.
        python_models = sorted({n for n, e in tx.manifest.get("models", {}).items() if e.get("backend") == "python"}
                               | {e.name for e in tx.entries.values() if e.backend == "python"})
        if python_models:
            from repo_gen.triton.python_env import REQUIREMENTS_NAME, requirements_text

            tx.add_root_file(REQUIREMENTS_NAME, requirements_text(python_models))
        if report.fidelity_md:
            tx.add_root_file(fidelity_file(cfg.model), f"# Fidelity of {cfg.model} variants vs FP32\n\n{report.fidelity_md}\n")
        with step("commit", t):
            tx.commit(report.manifest_record(cfg, cache))
    return report


def fp32_cached(cfg: BuildConfig, work: Path, cache: StageCache, timings: dict) -> tuple[ExportResult, str | None]:
    """The FP32 stage's result, from the stage cache when the same weights, model, options and
    tools made it before (a checked FP32 ONNX file instead of loading PyTorch, exporting and
    checking again); also its cache key, which the precision variants' keys extend."""
    batches = sorted({*CHECK_BATCHES, cfg.max_batch})
    key = cache.key("fp32", fp32_stage_inputs(cfg, batches))
    export = restore_fp32(cache, key, work / "fp32.onnx", cfg)
    if export is None:
        t0 = time.perf_counter()
        export = fp32_stage(cfg, work, batches, timings)
        store_fp32(cache, key, export, time.perf_counter() - t0)
    timings.update(cache.restore_timings)
    return export, key


def check_export(cfg: BuildConfig, export: ExportResult) -> None:
    """The export tolerance, applied to fresh and cached results alike."""
    ec = export.check
    if ec.worst > cfg.export_tolerance:
        raise BuildFailure(
            f"ONNX export of {cfg.model} differs from PyTorch: max relative error {ec.worst:.2e} > "
            f"{cfg.export_tolerance:.0e} (per batch: raw {ec.raw}, cleaned {ec.cleaned})"
        )


def fp32_stage(cfg: BuildConfig, work: Path, batches: list[int], t: dict) -> ExportResult:
    """Load the model, export it, check it against PyTorch, clean the graph up and check again.

    Writes `work/fp32.onnx`. The caller applies the export tolerance (`check_export`).
    """
    import onnx

    from repo_gen.onnx.export import export_onnx
    from repo_gen.onnx.passes import cleanup_graph
    from repo_gen.torch.loader import load_model

    assert cfg.image_size is not None
    with step("load model", t):
        loaded = load_model(cfg.spec, cfg.weights, cfg.pretrained, cfg.seed)
    num_classes = int(loaded.module.get_classifier().out_features)
    weights = WeightsInfo(loaded.source, loaded.trained, loaded.checkpoint_sha256, loaded.weights_path, num_classes)
    notes = []
    if not loaded.trained:
        notes.append(f"UNTRAINED: {cfg.model} has random weights (seed {cfg.seed}); predictions are meaningless")

    with step("export onnx", t):
        raw = export_onnx(loaded.module, cfg.image_size, cfg.opset)
    with step("check export", t):
        reference = torch_reference(loaded.module, cfg.image_size, batches, cfg.seed)
        raw_err = check_onnx(raw, reference)
    fp32_path = work / "fp32.onnx"
    with step("cleanup graph", t):
        clean = cleanup_graph(raw)
        onnx.save(clean, str(fp32_path))
    with step("check cleaned graph", t):
        clean_err = check_onnx(clean, reference)
    check = ExportCheck(raw_err, clean_err, len(raw.graph.node), len(clean.graph.node), cfg.export_tolerance)
    inputs, outputs = get_task(cfg.task).io(cfg.image_size, num_classes, "fp32")
    return ExportResult(fp32_path, inputs, outputs, check, weights, notes)


def make_variants(cfg: BuildConfig, fp32_path: Path, work: Path, timings: dict,
                  cache: StageCache | None = None, fp32_key: str | None = None) -> list[PrecisionVariant]:
    """FP32 always exists; FP16/INT8 come from the precision stage when requested.

    With a `cache` (and the FP32 stage's key), each FP16/INT8 variant keyed by its own options is
    restored from the stage cache when present, and stored there when made.
    """
    variants = []
    if "fp32" in cfg.precisions:
        variants.append(PrecisionVariant("fp32", fp32_path, fp32_path, "fp32", None, "ready"))
    others = [p for p in cfg.precisions if p != "fp32"]
    cache = cache or StageCache(enabled=False)
    keys = variant_keys(cache, fp32_key, cfg, others)
    cached = restore_variants(cache, keys, work)
    timings.update(cache.restore_timings)
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
    library: tuple[Path | None, dict[str, Any]] | None = None,
) -> list[ModelEntry]:
    """Stage every (variant, runtime) model through the runtime's writer; `library` is
    `plugin_library(cfg)` when plugins are used."""
    data = cfg.data.to_dict()
    entries = []
    for v in variants:
        reason = v.status_reason
        if v.status == "inaccurate" and cfg.allow_inaccurate:
            reason += " (served anyway: --allow-inaccurate)"
        for runtime in cfg.runtimes:
            rt = RUNTIME_WRITERS[runtime]
            if not rt.serves(v.precision):
                continue
            name = triton_model_name(cfg.model, runtime, v.precision)
            req = WriteRequest.make(cfg, name, tx.model_dir(name), v, labels, work=tx.work, plugin_library=library)
            written = rt.write(req)
            # A variant that missed its tolerance says so, whatever its writer made of it.
            status, status_reason = (v.status, reason) if v.status == "inaccurate" else (written.status,
                                                                                          written.status_reason)
            entries.append(ModelEntry(
                name=name, base_model=cfg.model, runtime=runtime, backend=rt.backend, precision=v.precision,
                versions=tx.staged_versions(name, cfg.version), files=[f"{name}/{f}" for f in written.files],
                status=status, status_reason=status_reason, max_batch_size=written.max_batch_size,
                inputs=written.inputs, outputs=written.outputs, fidelity=written.fidelity or v.fidelity_for(runtime), data=data,
                extra=written.details,
            ))
    return entries


def fidelity_file(model: str) -> str:
    return f"FIDELITY_{model}.md"


def print_summary(report: BuildReport) -> None:
    from rich.table import Table

    table = Table(title=f"repo-gen build: {report.model} -> {report.repository}")
    for col in ("model", "backend", "precision", "status", "note"):
        table.add_column(col)
    for e in report.entries:
        table.add_row(e.name, e.backend, e.precision, e.status, e.status_reason[:80])
    console.print(table)
    if report.export is not None:
        ec = report.export.check
        console.print(f"export check: max relative error vs PyTorch {ec.worst:.2e} (tolerance {ec.tolerance:.0e}), "
                      f"nodes {ec.nodes_raw} -> {ec.nodes_cleaned} after cleanup")
    if report.fidelity_md:
        console.print(f"fidelity vs FP32 (also in {report.repository}/{fidelity_file(report.model)}):")
        console.print(report.fidelity_md, markup=False)
    console.print("time per stage (s): " + ", ".join(f"{k} {v:.2f}" for k, v in report.timings_s.items()))
    for n in report.notes:
        console.print(f"[bold yellow]note:[/] {n}")
    logger.debug("build report written to the manifest")

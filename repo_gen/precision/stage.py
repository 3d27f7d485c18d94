"""Stage 4 of `repo-gen build`: FP16 and INT8 variants of the checked FP32 graph, with fidelity proof.

    fp32.onnx --+-- FP16: greedy FP32-fallback search (search set) -> fp16.onnx (served and TensorRT)
                +-- INT8: calibrate once -> greedy float-fallback search on the TensorRT form
                |         -> int8_trt.onnx (symmetric int8 Q/DQ, TensorRT)
                |         -> int8.onnx     (uint8/int8 QDQ, what ONNX Runtime runs fastest; served)
                +-- fidelity of every graph vs FP32 on the evaluation set (disjoint from calibration),
                    real top-1/top-5 when --eval-dir has class folders, one markdown table.

Tolerances (BuildConfig):
    fp16_tolerance: relative L2 error of the logits (||out - ref|| / ||ref|| over the whole set),
        and top-1 agreement must be 100%.
    int8_tolerance: mean cosine similarity of the logits per image, and (int8_top1_tolerance) at most
        that fraction of images may change their top-1 class (`repo_gen.precision.gate`).
The searches run on `SEARCH_IMAGES` calibration images; the verdict ("ready" / "inaccurate") is
taken on the evaluation set, which the searches never see.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from repo_gen.compare import accuracy, fidelity
from repo_gen.config import BuildConfig
from repo_gen.data.calibration import LabeledSet, load_calibration, load_eval, overlap
from repo_gen.data.images import ImageSet
from repo_gen.errors import UserError
from repo_gen.log import logger, step
from repo_gen.precision import PrecisionVariant
from repo_gen.precision.evaluate import Evaluator, OrtCpuEvaluator
from repo_gen.precision.gate import int8_verdict
from repo_gen.precision.report import per_class_table, table_rows
from repo_gen.precision.search import SearchResult, greedy_search
from repo_gen.results import Fidelity, Tolerance
from repo_gen.tasks import get_task

SEARCH_IMAGES = 32
SEARCH_MAX_STEPS = 8  # greedy rounds at most (each round tries every remaining candidate group)
SUPPORTED = ("fp16", "int8")


@dataclass
class PrecisionContext:
    """What every precision variant is judged against, computed once."""

    cfg: BuildConfig
    fp32_path: Path
    model: onnx.ModelProto
    work: Path
    evaluator: Evaluator
    calib: ImageSet
    evalset: LabeledSet
    search_x: np.ndarray
    ref_search: np.ndarray
    ref_eval: np.ndarray
    threads: int
    data_report: dict

    def accuracy_fails(self, name: str, f: dict) -> list[str]:
        """With a labelled evaluation set: `name` loses more top-1 than --accuracy-tolerance points vs FP32."""
        if self.evalset.labels is None or "accuracy" not in f:
            return []
        ref = accuracy(self.ref_eval, self.evalset.labels)["top1"]
        got, tol = f["accuracy"]["top1"], self.cfg.accuracy_tolerance
        return [f"{name}: top-1 {got:.2f}% < FP32 {ref:.2f}% - {tol:g} points"] if got < ref - tol else []

    def judge(self, out: np.ndarray) -> dict:
        """The task's fidelity metrics vs FP32 on the evaluation set (+ accuracy with labels)."""
        f: dict = get_task(self.cfg.task).fidelity(self.ref_eval, out)
        if self.evalset.labels is not None:
            f["accuracy"] = accuracy(out, self.evalset.labels, self.cfg.model_data.labels.names)
        return f


def _threads() -> int:
    return min(2, len(os.sched_getaffinity(0)))


def _ort_run(model: onnx.ModelProto | Path, x: np.ndarray, threads: int) -> np.ndarray:
    from repo_gen.onnx.runner import make_session, run_batches

    return run_batches(make_session(model, threads=threads), x)


def prepare(cfg: BuildConfig, fp32_path: Path, work: Path, timings: dict) -> PrecisionContext:
    """Load the calibration and evaluation images and the FP32 reference logits."""
    model = onnx.load(str(fp32_path))
    threads = _threads()
    evaluator: Evaluator = OrtCpuEvaluator(threads=threads)
    with step("precision data", timings):
        calib = load_calibration(cfg.calib_dir, cfg.data, cfg.calib_count, cfg.seed)
        evalset = load_eval(cfg.eval_dir, cfg.data, cfg.eval_count, cfg.model_data.labels, cfg.seed)
    n_overlap = overlap(calib, evalset.images, cfg.calib_dir, cfg.eval_dir)
    if n_overlap:
        logger.warning(f"{n_overlap} evaluation images are also calibration images: the fidelity report is optimistic")
    search_x = calib.tensors[:SEARCH_IMAGES]
    with step("precision fp32 reference", timings):
        from repo_gen.onnx.runner import make_session, run_batches

        session = make_session(model, threads=threads)  # one session for both sets
        ref_search = run_batches(session, search_x)
        ref_eval = run_batches(session, evalset.tensors)
    data_report = {
        "calibration": {
            "source": str(cfg.calib_dir) if cfg.calib_dir else "built-in scikit-image photos (augmented)",
            "images": len(calib.names),
            "requested": cfg.calib_count,
            "representative": calib.representative,
            "note": calib.note,
            "skipped_count": len(calib.skipped),
            "skipped": [{"file": n, "reason": r} for n, r in calib.skipped],
        },
        "evaluation": {
            "source": str(cfg.eval_dir) if cfg.eval_dir else "built-in scikit-image photos (augmented, disjoint stream)",
            "images": len(evalset.images.names),
            "labels": evalset.labels is not None,
            "classes": len(evalset.class_folders),
            "note": evalset.images.note,
            "skipped_count": len(evalset.images.skipped),
            "skipped": [{"file": n, "reason": r} for n, r in evalset.images.skipped],
        },
        "search_images": int(len(search_x)),
        "calibration_eval_overlap": n_overlap,
        "evaluator": evaluator.name,
        "preprocessing": cfg.data.to_dict(),
    }
    return PrecisionContext(cfg, fp32_path, model, work, evaluator, calib, evalset, search_x, ref_search, ref_eval,
                            threads, data_report)


def _search_report(res: SearchResult, candidates: dict[str, list[str]]) -> dict:
    return {
        "candidates": {k: len(v) for k, v in candidates.items()},
        "kept_groups": res.kept_groups,
        "kept_nodes": res.kept_nodes,
        "met_on_search_set": res.met,
        "stop_reason": res.stop_reason,
        "evaluations": res.evaluations,
        "seconds": res.seconds,
        "steps": [
            {"step": s["step"], "kept": s["kept"], "chosen": s.get("chosen"), "error": s["error"],
             "tried": s["tried"], "cosine_mean": s["metrics"]["cosine_mean"], "rel_l2": s["metrics"]["rel_l2"],
             "top1_agreement": s["metrics"]["top1_agreement"],
             **({"all_candidates_error": s["all_candidates_error"]} if "all_candidates_error" in s else {})}
            for s in res.steps
        ],
    }


def make_fp16(ctx: PrecisionContext, timings: dict) -> PrecisionVariant:
    from repo_gen.precision.fp16 import forced_fp32_nodes, fp16_candidates, fp16_from_fp32, node_dtypes

    cfg, model = ctx.cfg, ctx.model
    tol = cfg.fp16_tolerance

    def meets(m: dict) -> bool:
        return m["rel_l2"] <= tol and m["top1_agreement"] >= 1.0

    def evaluate(kept: set[str]) -> dict:
        g = fp16_from_fp32(model, kept, cfg.io_dtype)
        return fidelity(ctx.ref_search, ctx.evaluator.run(g, ctx.search_x, "fp16"))

    candidates = fp16_candidates(model)
    with step("fp16 fallback search", timings):
        res = greedy_search(candidates, evaluate, meets, lambda m: m["rel_l2"], max_steps=SEARCH_MAX_STEPS,
                            label="fp16 search")
    path = ctx.work / "fp16.onnx"
    with step("fp16 graph + fidelity", timings):
        final = fp16_from_fp32(model, set(res.kept_nodes), cfg.io_dtype)
        onnx.save(final, str(path))
        served = ctx.judge(_ort_run(path, ctx.evalset.tensors, ctx.threads))
        faithful = ctx.judge(ctx.evaluator.run(final, ctx.evalset.tensors, "fp16"))
    forced = sorted(forced_fp32_nodes(model))
    dtypes = node_dtypes(final)
    n_fp32 = len(set(res.kept_nodes) | set(forced))
    casts = sum(1 for n in final.graph.node if n.op_type == "Cast") - sum(1 for n in model.graph.node if n.op_type == "Cast")
    fails = [f"{name}: rel L2 {f['rel_l2']:.2e} (tolerance {tol:.0e}), top-1 agreement {f['top1_agreement']:.1%}"
             for name, f in (("FP16 emulation (" + ctx.evaluator.name + ")", faithful), ("served ONNX Runtime", served))
             if not meets(f)]
    fails += ctx.accuracy_fails("FP16 served ONNX Runtime", served)
    status = "inaccurate" if fails else "ready"
    reason = "; ".join(fails) + (f" ({res.stop_reason})" if fails else "")
    kept_txt = f"{n_fp32} FP32 nodes"
    rows = [
        {"variant": "fp16", "graph": "fp16.onnx (ONNX Runtime CPU, served)", "fidelity": served,
         "accuracy": served.get("accuracy"), "kept": kept_txt, "status": status},
        {"variant": "fp16", "graph": f"fp16.onnx (FP16 emulation: {ctx.evaluator.name})", "fidelity": faithful,
         "accuracy": faithful.get("accuracy"), "kept": kept_txt, "status": status},
    ]
    tolerance = Tolerance("rel_l2 <= tolerance and top-1 agreement 100%", tol)
    report = {
        "accuracy_tolerance_points": cfg.accuracy_tolerance,
        "search": _search_report(res, candidates),
        "fp32_nodes": n_fp32,
        "forced_fp32_nodes": forced,
        "node_dtypes": {k: sum(1 for v in dtypes.values() if v == k) for k in ("fp16", "fp32", "mixed")},
        "casts_added": casts,
        "emulation": "FP16 storage, FP32 compute (see repo_gen/precision/fp16.py for how this differs from TensorRT)",
        "rows": rows,
        "data": ctx.data_report,
    }
    logger.info(f"fp16: {status}; served rel L2 {served['rel_l2']:.2e}, cosine {served['cosine_mean']:.6f}, "
                f"{n_fp32} nodes kept FP32")
    return PrecisionVariant("fp16", path, path, cfg.io_dtype, Fidelity(served, tolerance, str(rows[0]["graph"])), status,
                            reason, report, trt_fidelity=Fidelity(faithful, tolerance, str(rows[1]["graph"])))


def make_int8(ctx: PrecisionContext, timings: dict) -> PrecisionVariant:
    from repo_gen.precision import int8

    cfg = ctx.cfg
    tol = cfg.int8_tolerance
    qwork = ctx.work / "int8"
    with step("int8 calibration", timings):
        calib = int8.calibrate(ctx.fp32_path, ctx.calib.tensors, cfg.calib_method, qwork, threads=ctx.threads)

    top1_tol = cfg.int8_top1_tolerance

    def meets(m: dict) -> bool:
        return int8_verdict(m, tol, top1_tol).ok

    tmp = qwork / "search.onnx"

    def evaluate(kept: set[str]) -> dict:
        g = int8.trt_qdq(ctx.fp32_path, tmp, calib, sorted(kept))
        return fidelity(ctx.ref_search, ctx.evaluator.run(g, ctx.search_x, "int8"))

    candidates = int8.int8_candidates(ctx.model)
    with step("int8 sensitivity search", timings):
        res = greedy_search(candidates, evaluate, meets, lambda m: 1.0 - m["cosine_mean"],
                            max_steps=SEARCH_MAX_STEPS, label="int8 search")
    tmp.unlink(missing_ok=True)
    trt_path, cpu_path = ctx.work / "int8_trt.onnx", ctx.work / "int8.onnx"
    with step("int8 graphs + fidelity", timings):
        trt = int8.trt_qdq(ctx.fp32_path, trt_path, calib, res.kept_nodes)
        int8.cpu_qdq(ctx.fp32_path, cpu_path, calib, res.kept_nodes)
        violations = int8.check_trt_rules(trt)
        fid_trt = ctx.judge(ctx.evaluator.run(trt, ctx.evalset.tensors, "int8"))
        fid_cpu = ctx.judge(_ort_run(cpu_path, ctx.evalset.tensors, ctx.threads))
    n_kept = len(res.kept_nodes)
    n_quant_trt = len(int8.quantized_nodes(trt))
    verdicts = {name: int8_verdict(f, tol, top1_tol) for name, f in (("TensorRT form", fid_trt), ("CPU form", fid_cpu))}
    fails = [f"{name}: {', '.join(v.failures())}" for name, v in verdicts.items() if not v.ok]
    fails += ctx.accuracy_fails("INT8 CPU form", fid_cpu) + ctx.accuracy_fails("INT8 TensorRT form", fid_trt)
    if violations:
        fails.append(f"TensorRT Q/DQ rules violated ({len(violations)}): {violations[0]}")
    status = "inaccurate" if fails else "ready"
    reason = "; ".join(fails) + (f" ({res.stop_reason})" if fails else "")
    kept_txt = f"{n_kept} float nodes"
    rows = [
        {"variant": "int8", "graph": "int8.onnx (uint8/int8 QDQ, ONNX Runtime CPU, served)", "fidelity": fid_cpu,
         "accuracy": fid_cpu.get("accuracy"), "kept": kept_txt, "status": status},
        {"variant": "int8", "graph": "int8_trt.onnx (symmetric int8 Q/DQ for TensorRT; ORT, no fusion)",
         "fidelity": fid_trt, "accuracy": fid_trt.get("accuracy"), "kept": kept_txt, "status": status},
    ]
    calib_info = {k: v for k, v in calib.items() if k != "cache"}
    tolerance = Tolerance(f"mean cosine similarity >= tolerance and top-1 agreement >= {1 - top1_tol:g} "
                          f"(--int8-top1-tolerance {top1_tol:g})", tol)
    report = {
        "verdict": {name: v.to_dict() for name, v in verdicts.items()},
        "accuracy_tolerance_points": cfg.accuracy_tolerance,
        "quantizer": "onnxruntime.quantization.quantize_static (QDQ), calibration cached once",
        "calibration": {**calib_info, **ctx.data_report["calibration"]},
        "search": _search_report(res, candidates),
        "kept_float_nodes": n_kept,
        "quantized_nodes_trt": n_quant_trt,
        "trt_rule_violations": violations,
        "cpu_form": {"activations": "uint8 asymmetric", "weights": "int8 symmetric per-channel",
                     "op_types": list(int8.CPU_OP_TYPES), "fidelity": fid_cpu},
        "trt_form": {"activations": "int8 symmetric per-tensor", "weights": "int8 symmetric per-channel",
                     "op_types": list(int8.QUANT_OP_TYPES), "fidelity": fid_trt},
        "rows": rows,
        "data": ctx.data_report,
    }
    decided = "; ".join(f"{name}: {v.decided_by} ({v.describe()})" for name, v in verdicts.items())
    report["decided_by"] = decided
    logger.info(f"int8: {status}, decided by {decided}; {n_kept} nodes kept in float")
    return PrecisionVariant("int8", cpu_path, trt_path, "fp32", Fidelity(fid_cpu, tolerance, str(rows[0]["graph"])), status,
                            reason, report, trt_fidelity=Fidelity(fid_trt, tolerance, str(rows[1]["graph"])))


def fp32_row(ctx: PrecisionContext) -> dict:
    acc = (accuracy(ctx.ref_eval, ctx.evalset.labels, ctx.cfg.model_data.labels.names)
           if ctx.evalset.labels is not None else None)
    return {"variant": "fp32", "graph": "fp32.onnx (ONNX Runtime CPU, reference)", "fidelity": None,
            "accuracy": acc, "kept": "-", "status": "ready"}


def data_note(ctx: PrecisionContext) -> str:
    d = ctx.data_report
    c, e = d["calibration"], d["evaluation"]
    lines = [f"Evaluation: {e['images']} images from {e['source']}"
             + (f", {e['classes']} classes (real accuracy)" if e["labels"] else " (no labels: fidelity only)") + "."]
    lines.append(f"Calibration: {c['images']} images from {c['source']}"
                 + ("" if c["representative"] else " -- NOT representative of your data; pass --calib-dir") + ".")
    if c["skipped_count"]:
        lines.append(f"Skipped {c['skipped_count']} unreadable calibration file(s): "
                     + ", ".join(s["file"] for s in c["skipped"][:10]) + ("..." if c["skipped_count"] > 10 else ""))
    if e["skipped_count"]:
        lines.append(f"Skipped {e['skipped_count']} unreadable evaluation file(s): "
                     + ", ".join(s["file"] for s in e["skipped"][:10]))
    if d["calibration_eval_overlap"]:
        lines.append(f"WARNING: {d['calibration_eval_overlap']} evaluation images are also calibration images.")
    return "\n".join(lines)


def make_precision_variants(cfg: BuildConfig, fp32_onnx: Path, work: Path, timings: dict,
                            precisions: list[str]) -> list[PrecisionVariant]:
    """FP16 / INT8 variants of `fp32_onnx` (requested in `precisions`), each with fidelity and report.

    Every variant's `report["table_md"]` holds the same markdown fidelity table of this build
    (FP32 reference row, then every graph made), and `report["rows"]` its own rows.
    """
    bad = [p for p in precisions if p not in SUPPORTED]
    if bad:
        raise UserError(f"--precisions {','.join(bad)}: unknown precision; choose from fp32,{','.join(SUPPORTED)}")
    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    ctx = prepare(cfg, Path(fp32_onnx), work, timings)
    variants = []
    if "fp16" in precisions:
        variants.append(make_fp16(ctx, timings))
    if "int8" in precisions:
        variants.append(make_int8(ctx, timings))
    first = fp32_row(ctx)
    rows = [first, *[r for v in variants for r in v.report["rows"]]]
    table = table_rows(rows) + "\n\n" + data_note(ctx)
    per_class = per_class_table(rows)
    if per_class:
        table += "\n\nPer-class top-1 on the evaluation set (correct / images):\n\n" + per_class
    for v in variants:
        v.report["fp32_row"] = first
        v.report["table_md"] = table
        v.report["seconds"] = round(time.perf_counter() - t0, 2)
    return variants

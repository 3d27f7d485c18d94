"""FP16 and INT8 (Q/DQ) detectors, judged by COCO mAP against FP32 on held-out images.

Reuses the classifier's machinery (repo_gen.precision): the FP16 rewrite and its candidate groups,
ORT calibration and the two Q/DQ forms, and the greedy higher-precision fallback search. What
differs is the judge: a variant's error is its mAP@[.5:.95] drop from FP32 (in points) against the
ground truth, after the same FP32 NMS tail. The precision rewrite applies to the core graph
(backbone + head + box decode) only; the NMS tail is appended afterwards, so it is always FP32.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx

from repo_gen.detection.export import run_detections
from repo_gen.detection.metrics import Detections, MapResult, coco_map
from repo_gen.detection.nms_graph import NmsOptions, append_nms
from repo_gen.log import logger, step
from repo_gen.precision.search import greedy_search

SEARCH_MAX_STEPS = 4


@dataclass
class DetVariant:
    """One precision of a detector.

    Attributes:
        serve_onnx: graph (NMS inside) served by ONNX Runtime (python and onnxruntime backends).
        trt_onnx: graph TensorRT compiles strongly typed (same as serve_onnx for fp32/fp16).
        map_serve / map_trt: mAP of each graph on the evaluation images (ORT on the CPU).
        map_drop: FP32 mAP minus this variant's (served graph), in points.
        kept: node names kept in higher precision by the search.
        status: "ready" or "inaccurate" (missed the tolerance).
    """

    precision: str
    serve_onnx: Path
    trt_onnx: Path
    map_serve: MapResult
    map_trt: MapResult
    map_drop: float
    kept: list[str] = field(default_factory=list)
    status: str = "ready"
    status_reason: str = ""
    search: dict = field(default_factory=dict)
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return {"precision": self.precision, "serve_onnx": self.serve_onnx.name, "trt_onnx": self.trt_onnx.name,
                "map": self.map_serve.to_dict(), "map_trt": self.map_trt.to_dict(),
                "map_drop": round(self.map_drop, 2), "kept_higher_precision": len(self.kept),
                "kept_nodes": self.kept, "status": self.status, "status_reason": self.status_reason,
                "search": self.search, "seconds": round(self.seconds, 1)}


@dataclass
class DetPrecisionInputs:
    """Everything a variant is judged with, computed once (truth in input pixels)."""

    core_fp32: Path  # the core graph (boxes + scores) on disk: ORT's calibrator reads a path
    nms: NmsOptions
    num_classes: int
    num_anchors: int
    calib_x: np.ndarray
    search_x: np.ndarray
    search_truth: Sequence[Detections]
    eval_x: np.ndarray
    eval_truth: Sequence[Detections]
    work: Path
    threads: int = 2
    tolerance: float = 1.0  # mAP points a variant may lose against FP32
    calib_method: str = "max"


class _Judge:
    def __init__(self, inp: DetPrecisionInputs) -> None:
        self.inp = inp
        self.fp32_search = self.map_of(self.full(onnx.load(str(inp.core_fp32))), inp.search_x, inp.search_truth)

    def full(self, core: onnx.ModelProto) -> onnx.ModelProto:
        return append_nms(core, self.inp.nms, self.inp.num_classes, self.inp.num_anchors)

    def map_of(self, graph: onnx.ModelProto | Path, x: np.ndarray, truth: Sequence[Detections]) -> MapResult:
        from repo_gen.onnx.runner import make_session

        dets = run_detections(make_session(graph, threads=self.inp.threads), x)
        return coco_map(truth, dets, self.inp.num_classes)


def _search(judge: _Judge, candidates: dict[str, list[str]], make: Callable[[set[str]], onnx.ModelProto],
            label: str) -> tuple[list[str], dict]:
    inp = judge.inp

    def evaluate(kept: set[str]) -> dict:
        r = judge.map_of(judge.full(make(kept)), inp.search_x, inp.search_truth)
        return {"map": r.map, "map50": r.map50, "map_drop": judge.fp32_search.map - r.map}

    res = greedy_search(candidates, evaluate, lambda m: m["map_drop"] <= inp.tolerance, lambda m: m["map_drop"],
                        max_steps=SEARCH_MAX_STEPS, min_gain=0.0, label=label)
    report = {"candidate_groups": len(candidates), "kept_groups": res.kept_groups, "met_on_search_set": res.met,
              "stop_reason": res.stop_reason, "evaluations": res.evaluations, "seconds": res.seconds,
              "search_images": int(len(inp.search_x)), "fp32_search_map": round(judge.fp32_search.map, 2),
              "steps": [{"step": s["step"], "kept": s["kept"], "map_drop": round(s["metrics"]["map_drop"], 2)}
                        for s in res.steps]}
    return res.kept_nodes, report


def make_detection_variants(inp: DetPrecisionInputs, precisions: Sequence[str],
                            timings: dict) -> tuple[MapResult, list[DetVariant]]:
    """(FP32 mAP on the evaluation set, the requested FP16 / INT8 variants)."""
    from repo_gen.precision import int8
    from repo_gen.precision.fp16 import fp16_candidates, fp16_from_fp32

    work = Path(inp.work)
    work.mkdir(parents=True, exist_ok=True)
    core = onnx.load(str(inp.core_fp32))
    with step("detection fp32 reference", timings):
        judge = _Judge(inp)
        fp32_eval = judge.map_of(judge.full(core), inp.eval_x, inp.eval_truth)
    out: list[DetVariant] = []

    def finish(precision: str, serve: onnx.ModelProto, trt: onnx.ModelProto, kept: list[str], search: dict,
               t0: float) -> DetVariant:
        serve_path, trt_path = work / f"detect_{precision}.onnx", work / f"detect_{precision}_trt.onnx"
        onnx.save(serve, str(serve_path))
        if trt is serve:
            trt_path = serve_path
        else:
            onnx.save(trt, str(trt_path))
        m_serve = judge.map_of(serve_path, inp.eval_x, inp.eval_truth)
        m_trt = m_serve if trt_path == serve_path else judge.map_of(trt_path, inp.eval_x, inp.eval_truth)
        drop = fp32_eval.map - min(m_serve.map, m_trt.map)
        ok = drop <= inp.tolerance
        reason = "" if ok else f"mAP drop {drop:.2f} > tolerance {inp.tolerance} points"
        v = DetVariant(precision, serve_path, trt_path, m_serve, m_trt, fp32_eval.map - m_serve.map, kept,
                       "ready" if ok else "inaccurate", reason, search, time.perf_counter() - t0)
        logger.info(f"{precision}: {v.status}; mAP {m_serve.map:.2f} (FP32 {fp32_eval.map:.2f}), "
                    f"{len(kept)} nodes kept in higher precision")
        return v

    if "fp16" in precisions:
        t0 = time.perf_counter()
        with step("detection fp16 search", timings):
            kept, rep = _search(judge, fp16_candidates(core), lambda k: fp16_from_fp32(core, k, "fp32"), "fp16 mAP")
            g = judge.full(fp16_from_fp32(core, set(kept), "fp32"))
        out.append(finish("fp16", g, g, kept, rep, t0))
    if "int8" in precisions:
        t0 = time.perf_counter()
        qwork = work / "int8"
        with step("detection int8 calibration", timings):
            calib = int8.calibrate(inp.core_fp32, inp.calib_x, inp.calib_method, qwork, threads=inp.threads)
        tmp = qwork / "search.onnx"
        with step("detection int8 search", timings):
            kept, rep = _search(judge, int8.int8_candidates(core),
                                lambda k: int8.trt_qdq(inp.core_fp32, tmp, calib, sorted(k)), "int8 mAP")
            trt_core = int8.trt_qdq(inp.core_fp32, qwork / "core_trt.onnx", calib, kept)
            cpu_core = int8.cpu_qdq(inp.core_fp32, qwork / "core_cpu.onnx", calib, kept)
            rep["trt_rule_violations"] = int8.check_trt_rules(trt_core)
            rep["calibration"] = {k: v for k, v in calib.items() if k != "cache"}
        out.append(finish("int8", judge.full(cpu_core), judge.full(trt_core), kept, rep, t0))
    return fp32_eval, out


def precision_table(fp32: MapResult, variants: Sequence[DetVariant], tolerance: float) -> str:
    """Markdown: mAP per precision and what was kept in higher precision."""
    lines = ["| precision | graph | mAP@[.5:.95] | mAP@.5 | drop vs FP32 | kept higher precision | status |",
             "|---|---|---|---|---|---|---|",
             f"| fp32 | detect_fp32.onnx | {fp32.map:.2f} | {fp32.map50:.2f} | - | - | reference |"]
    for v in variants:
        for graph, m in ((v.serve_onnx.name, v.map_serve), (v.trt_onnx.name, v.map_trt)):
            if graph == v.serve_onnx.name or v.trt_onnx != v.serve_onnx:
                lines.append(f"| {v.precision} | {graph} | {m.map:.2f} | {m.map50:.2f} | {fp32.map - m.map:+.2f} "
                             f"| {len(v.kept)} nodes | {v.status} |")
    lines.append(f"\nTolerance: a variant may lose at most {tolerance} mAP points against FP32 "
                 f"({fp32.images} evaluation images, ground truth boxes).")
    return "\n".join(lines)

"""Export the detector to ONNX (dynamic batch, NMS inside) and check it against PyTorch.

`export_core` exports `DetectorCore` (boxes + scores); `nms_graph.append_nms` adds the NMS and the
padded outputs. Precision variants are made from the core graph (see precision.py), so every
variant gets the same FP32 NMS tail.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx

from repo_gen.detection.metrics import Detections
from repo_gen.detection.nms_graph import BOXES, SCORES, NmsOptions
from repo_gen.errors import BuildFailure

INPUT_NAME = "input"
MIN_IOU = 0.99
SCORE_ATOL = 1e-4


def export_core(model: Any, opset: int = 17) -> onnx.ModelProto:
    """`DetectorCore(model)` as ONNX: input [N, 3, S, S] float32 -> boxes [N, A, 4], scores [N, C, A]."""
    import torch

    from repo_gen.detection.model import DetectorCore
    from repo_gen.onnx.passes import cleanup_graph

    core = DetectorCore(model).eval()
    size = model.repo_gen_info.image_size
    dummy = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    buf = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(core, (dummy,), buf, input_names=[INPUT_NAME], output_names=[BOXES, SCORES],  # type: ignore[arg-type]
                              dynamic_axes={INPUT_NAME: {0: "batch"}, BOXES: {0: "batch"}, SCORES: {0: "batch"}},
                              opset_version=opset, do_constant_folding=True, dynamo=False)
        except Exception as e:
            raise BuildFailure(f"ONNX export of the detector failed at opset {opset}: {e}") from e
    m = cleanup_graph(onnx.load_from_string(buf.getvalue()))
    m.producer_name, m.producer_version = "repo-gen", ""
    return m


def run_detections(session: Any, x: np.ndarray, batch: int = 16) -> list[Detections]:
    """Run a detection graph (NMS inside) and unpad its outputs, in input pixels."""
    inp = session.get_inputs()[0]
    want = np.float16 if inp.type == "tensor(float16)" else np.float32
    out: list[Detections] = []
    for i in range(0, len(x), batch):
        n, b, s, c = session.run(["num_detections", "detection_boxes", "detection_scores", "detection_classes"],
                                 {inp.name: x[i : i + batch].astype(want, copy=False)})
        for j in range(len(n)):
            k = int(n[j, 0])
            out.append(Detections(b[j, :k].astype(np.float32), s[j, :k].astype(np.float32), c[j, :k].astype(np.int64)))
    return out


def torch_detections(model: Any, x: np.ndarray, opts: NmsOptions, batch: int = 16) -> list[Detections]:
    """The PyTorch reference (torchvision's per-class NMS) on input tensors `x`."""
    import torch

    from repo_gen.detection.model import DetectorCore, reference_detections

    core = DetectorCore(model).eval()
    out = []
    with torch.inference_mode():
        for i in range(0, len(x), batch):
            boxes, scores = core(torch.from_numpy(x[i : i + batch]))
            for d in reference_detections(boxes, scores, opts.score_threshold, opts.iou_threshold,
                                          opts.max_detections):
                out.append(Detections(d["boxes"].numpy(), d["scores"].numpy(), d["classes"].numpy()))
    return out


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """[n, m] IoU of two box sets."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=-1)
    area = lambda t: np.prod(np.clip(t[:, 2:] - t[:, :2], 0, None), axis=-1)  # noqa: E731
    union = area(a)[:, None] + area(b)[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 1.0)


@dataclass
class MatchResult:
    """How one list of detections matches a reference list (same class, best IoU)."""

    matched: int = 0
    unmatched: int = 0  # in either list, beyond what ties at the score threshold / K-th place explain
    min_iou: float = 1.0
    max_score_diff: float = 0.0
    examples: list[str] = field(default_factory=list)


def match(ref: Sequence[Detections], out: Sequence[Detections], opts: NmsOptions,
          score_atol: float = SCORE_ATOL) -> MatchResult:
    """Pair each reference detection with an output detection of the same class (highest IoU).

    A detection whose score lies within `score_atol` of the score threshold or of the lowest kept
    score when K were kept may appear on one side only: those are ties the two NMS may break differently.
    """
    res = MatchResult()
    for i, (r, o) in enumerate(zip(ref, out, strict=True)):
        used = np.zeros(len(o.scores), bool)
        iou = _iou(r.boxes, o.boxes) if len(r.scores) and len(o.scores) else np.zeros((len(r.scores), len(o.scores)))
        floor = opts.score_threshold
        full = len(r.scores) >= opts.max_detections or len(o.scores) >= opts.max_detections
        cut = min([*r.scores[-1:], *o.scores[-1:]], default=floor) if full else floor

        def tie(score: float, floor: float = floor, full: bool = full, cut: float = cut) -> bool:
            return abs(score - floor) <= score_atol or (full and abs(score - cut) <= score_atol)

        for j in range(len(r.scores)):
            cand = np.where((o.classes == r.classes[j]) & ~used, iou[j], -1.0)
            k = int(np.argmax(cand)) if len(cand) else -1
            if k >= 0 and cand[k] >= MIN_IOU and abs(float(o.scores[k] - r.scores[j])) <= score_atol:
                used[k] = True
                res.matched += 1
                res.min_iou = min(res.min_iou, float(cand[k]))
                res.max_score_diff = max(res.max_score_diff, abs(float(o.scores[k] - r.scores[j])))
            elif not tie(float(r.scores[j])):
                res.unmatched += 1
                if len(res.examples) < 3:
                    best = float(cand[k]) if k >= 0 else 0.0
                    res.examples.append(f"image {i}: class {r.classes[j]} score {r.scores[j]:.4f} best IoU {best:.3f}")
        res.unmatched += sum(1 for k in np.nonzero(~used)[0] if not tie(float(o.scores[k])))
    return res


@dataclass
class ExportCheck:
    """ONNX Runtime (NMS inside) vs PyTorch (torchvision NMS) on real images at several batch sizes."""

    batches: list[int]
    images: int
    matched: int
    unmatched: int
    min_iou: float
    max_score_diff: float
    passed: bool
    examples: list[str]

    def to_dict(self) -> dict:
        return {"batches": self.batches, "images": self.images, "matched": self.matched, "unmatched": self.unmatched,
                "min_iou": round(self.min_iou, 6), "max_score_diff": float(f"{self.max_score_diff:.3g}"),
                "passed": self.passed, "examples": self.examples}


def check_export(graph: onnx.ModelProto, model: Any, x: np.ndarray, opts: NmsOptions, max_batch: int,
                 threads: int | None = None) -> ExportCheck:
    """Run `graph` at batch 1, 3 and `max_batch` over the images `x` and match it to PyTorch."""
    from repo_gen.onnx.runner import make_session

    n_images = len(x)
    session = make_session(graph, threads=threads)
    batches = sorted({1, min(3, max_batch), max_batch})
    # Images repeat to fill the largest batch: every batch size runs full, padding is per image.
    x = x[np.arange(max(batches[-1], len(x))) % len(x)]
    ref = torch_detections(model, x, opts)
    total = MatchResult()
    for b in batches:
        n = max(b, 3)
        r = match(ref[:n], run_detections(session, x[:n], batch=b), opts)
        total.matched += r.matched
        total.unmatched += r.unmatched
        total.min_iou = min(total.min_iou, r.min_iou)
        total.max_score_diff = max(total.max_score_diff, r.max_score_diff)
        total.examples += [f"batch {b}: {e}" for e in r.examples]
    return ExportCheck(batches, n_images, total.matched, total.unmatched, total.min_iou, total.max_score_diff,
                       total.unmatched == 0, total.examples[:5])

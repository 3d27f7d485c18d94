"""COCO-style detection metrics (pycocotools' COCOeval, the reference implementation).

Boxes are x1, y1, x2, y2 in one coordinate frame (input or image pixels, the same for both sides);
classes are 0-based. Returns percentages like the paper (27.7 mAP for MobileViT-S SSDLite on COCO).
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from repo_gen.errors import MissingDependency


@dataclass(frozen=True)
class Detections:
    """Detections (or ground truth: scores all 1) of one image."""

    boxes: np.ndarray  # [n, 4] float32 x1, y1, x2, y2
    scores: np.ndarray  # [n]
    classes: np.ndarray  # [n] int, 0-based


@dataclass(frozen=True)
class MapResult:
    map: float  # mAP@[.5:.95] in %
    map50: float  # mAP@.5 in %
    images: int
    detections: int

    def to_dict(self) -> dict:
        return {"map": round(self.map, 2), "map50": round(self.map50, 2), "images": self.images,
                "detections": self.detections}


def coco_map(truth: Sequence[Detections], preds: Sequence[Detections], num_classes: int) -> MapResult:
    """mAP@[.5:.95] and mAP@.5 of `preds` against `truth` (same order, one entry per image)."""
    try:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    except ImportError as e:
        raise MissingDependency("pycocotools is not installed; pip install pycocotools (in requirements.txt)") from e
    if len(truth) != len(preds):
        raise ValueError(f"{len(truth)} ground-truth images but {len(preds)} predictions")
    images: list[dict] = []
    anns: list[dict] = []
    dets: list[dict] = []
    for i, (t, p) in enumerate(zip(truth, preds, strict=True)):
        images.append({"id": i + 1, "width": 1, "height": 1})
        for b, c in zip(t.boxes, t.classes, strict=True):
            w, h = float(b[2] - b[0]), float(b[3] - b[1])
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": int(c) + 1,
                         "bbox": [float(b[0]), float(b[1]), w, h], "area": w * h, "iscrowd": 0})
        for b, s, c in zip(p.boxes, p.scores, p.classes, strict=True):
            dets.append({"image_id": i + 1, "category_id": int(c) + 1, "score": float(s),
                         "bbox": [float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])]})
    gt = COCO()
    gt.dataset = {"images": images, "annotations": anns,
                  "categories": [{"id": k + 1, "name": str(k)} for k in range(num_classes)]}
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress and table
        gt.createIndex()
        if not dets:
            return MapResult(0.0, 0.0, len(truth), 0)
        dt = gt.loadRes(dets)
        ev = COCOeval(gt, dt, "bbox")
        ev.params.maxDets = [1, 10, 100]
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return MapResult(max(0.0, float(ev.stats[0])) * 100, max(0.0, float(ev.stats[1])) * 100, len(truth), len(dets))

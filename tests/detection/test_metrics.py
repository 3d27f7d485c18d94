"""COCO mAP through pycocotools: perfect detections score 100, shifted or wrong-class ones less."""

from __future__ import annotations

import numpy as np
import pytest

from repo_gen.detection.metrics import Detections, coco_map


def _truth() -> list[Detections]:
    return [Detections(np.array([[10, 10, 60, 70], [100, 20, 150, 90]], np.float32), np.ones(2, np.float32),
                       np.array([0, 2])),
            Detections(np.array([[30, 40, 90, 120]], np.float32), np.ones(1, np.float32), np.array([1]))]


def test_perfect_and_degraded():
    truth = _truth()
    assert coco_map(truth, truth, 3).map == pytest.approx(100.0)
    shifted = [Detections(t.boxes + 8, t.scores, t.classes) for t in truth]
    r = coco_map(truth, shifted, 3)
    assert 0 < r.map < 100 and r.map50 == pytest.approx(100.0)  # still IoU > .5, but not > .75
    wrong = [Detections(t.boxes, t.scores, (t.classes + 1) % 3) for t in truth]
    assert coco_map(truth, wrong, 3).map == 0.0
    empty = [Detections(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64))] * 2
    assert coco_map(truth, empty, 3).map == 0.0

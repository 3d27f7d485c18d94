"""The in-graph NMS against torchvision's per-class NMS, on a tiny identity graph (seconds)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

from repo_gen.detection.export import match
from repo_gen.detection.metrics import Detections
from repo_gen.detection.model import reference_detections
from repo_gen.detection.nms_graph import NmsOptions, append_nms
from repo_gen.errors import UserError
from repo_gen.onnx.runner import make_session

C, A = 3, 50


def _identity_graph() -> onnx.ModelProto:
    g = helper.make_graph(
        [helper.make_node("Identity", ["b_in"], ["boxes"]), helper.make_node("Identity", ["s_in"], ["scores"])],
        "identity",
        [helper.make_tensor_value_info("b_in", TensorProto.FLOAT, ["batch", A, 4]),
         helper.make_tensor_value_info("s_in", TensorProto.FLOAT, ["batch", C, A])],
        [helper.make_tensor_value_info("boxes", TensorProto.FLOAT, ["batch", A, 4]),
         helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", C, A])],
    )
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def _inputs(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    xy = rng.uniform(0, 80, (n, A, 2))
    wh = rng.uniform(5, 40, (n, A, 2))
    boxes = np.concatenate([xy, xy + wh], -1).astype(np.float32)
    scores = rng.uniform(0, 1, (n, C, A)).astype(np.float32)
    scores[1:2] *= 0.3  # the images differ in how many detections pass the threshold
    return boxes, scores


@pytest.mark.parametrize("k", [1, 7, 40])
@pytest.mark.parametrize("batch", [1, 3])
def test_nms_matches_torchvision_and_pads_per_image(k, batch):
    opts = NmsOptions(max_detections=k, score_threshold=0.5, iou_threshold=0.3)
    sess = make_session(append_nms(_identity_graph(), opts, C, A), threads=1)
    boxes, scores = _inputs(batch, seed=k)
    n, b, s, c = sess.run(None, {"b_in": boxes, "s_in": scores})
    assert n.shape == (batch, 1) and n.dtype == np.int32
    assert b.shape == (batch, k, 4) and s.shape == (batch, k) and c.shape == (batch, k) and c.dtype == np.int32
    ref = reference_detections(torch.from_numpy(boxes), torch.from_numpy(scores), 0.5, 0.3, k)
    for i in range(batch):
        m = int(n[i, 0])
        assert m == len(ref[i]["scores"])
        # padding after the detections: zeros, class -1
        assert np.all(s[i, m:] == 0) and np.all(b[i, m:] == 0) and np.all(c[i, m:] == -1)
        assert np.all(np.diff(s[i, :m]) <= 0)  # sorted by score
    res = match([Detections(r["boxes"].numpy(), r["scores"].numpy(), r["classes"].numpy()) for r in ref],
                [Detections(b[i, : n[i, 0]], s[i, : n[i, 0]], c[i, : n[i, 0]]) for i in range(batch)], opts)
    assert res.unmatched == 0 and res.matched == int(n.sum())
    if batch == 3:
        assert n[1, 0] < n[0, 0] or k == 1  # fewer passing scores in image 1: padding is per image


def test_nms_bad_options():
    with pytest.raises(UserError, match="--max-detections 0"):
        NmsOptions(max_detections=0)
    with pytest.raises(UserError, match=r"--score-threshold 1.5: a threshold must lie in \[0, 1\]"):
        NmsOptions(score_threshold=1.5)
    with pytest.raises(UserError, match="--iou-threshold -0.1"):
        NmsOptions(iou_threshold=-0.1)
    with pytest.raises(UserError, match="more than the 150 class-anchor pairs"):
        append_nms(_identity_graph(), NmsOptions(max_detections=151), C, A)

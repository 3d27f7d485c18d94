"""Append NMS and fixed-size, per-image padded outputs to a detector graph, in plain ONNX ops.

Input graph outputs: `boxes` [N, A, 4] (x1, y1, x2, y2 input pixels) and `scores` [N, C, A].
Appended (opset 17; ONNX Runtime and TensorRT's ONNX parser both import every op used):

    sel [M, 3] = NonMaxSuppression(boxes, scores, K, iou, score)     per image and class, (b, c, a)
    dense [N, C, A] = ScatterND(-1s, sel, GatherND(scores, sel))    selected scores, -1 elsewhere
    top [N, K] = TopK(Reshape(dense, [N, C*A]), K)                  best K per image, padding last
    class = top_index // A, anchor = top_index % A, valid = top > -0.5

Outputs (padding: boxes and scores 0, classes -1):
    num_detections [N, 1] int32, detection_boxes [N, K, 4] float32,
    detection_scores [N, K] float32, detection_classes [N, K] int32.
The scatter keeps the batch apart, so padding is per image at any batch size.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from repo_gen.errors import UserError

BOXES, SCORES = "boxes", "scores"
OUTPUTS = ("num_detections", "detection_boxes", "detection_scores", "detection_classes")


@dataclass(frozen=True)
class NmsOptions:
    """Build options of the in-graph NMS (recorded in the manifest)."""

    max_detections: int = 100  # K
    score_threshold: float = 0.25
    iou_threshold: float = 0.45

    def __post_init__(self) -> None:
        if self.max_detections < 1:
            raise UserError(f"--max-detections {self.max_detections}: K must be at least 1; pass e.g. 100")
        for flag, v in (("--score-threshold", self.score_threshold), ("--iou-threshold", self.iou_threshold)):
            if not 0.0 <= v <= 1.0:
                raise UserError(f"{flag} {v}: a threshold must lie in [0, 1]; pass e.g. 0.25 (score) or 0.45 (IoU)")

    def to_dict(self) -> dict:
        return {"max_detections": self.max_detections, "score_threshold": self.score_threshold,
                "iou_threshold": self.iou_threshold}


def append_nms(model: onnx.ModelProto, opts: NmsOptions, num_classes: int, num_anchors: int) -> onnx.ModelProto:
    """A copy of `model` whose outputs are the four padded detection tensors."""
    if opts.max_detections > num_classes * num_anchors:
        raise UserError(f"--max-detections {opts.max_detections}: more than the {num_classes * num_anchors} "
                        f"class-anchor pairs of this model; pass at most {num_classes * num_anchors}")
    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    outs = {o.name for o in g.output}
    if outs != {BOXES, SCORES}:
        raise ValueError(f"append_nms needs outputs {BOXES!r} and {SCORES!r}, the graph has {sorted(outs)}")
    k = opts.max_detections

    def const(name: str, value: np.ndarray) -> str:
        g.initializer.append(numpy_helper.from_array(value, f"nms/{name}"))
        return f"nms/{name}"

    def node(op: str, ins: list[str], outs: list[str], **attrs) -> list[str]:
        """Add one node; output names without a "detection"/"num_" prefix are scoped under nms/."""
        full = [o if o in OUTPUTS else f"nms/{o}" for o in outs]
        g.node.append(helper.make_node(op, ins, full, name=f"nms/{op}_{outs[0]}", **attrs))
        return full

    kmax = const("k", np.array([k], np.int64))
    last = const("last", np.array([-1], np.int64))
    zero = const("zero", np.array(0.0, np.float32))
    (sel,) = node("NonMaxSuppression", [BOXES, SCORES, kmax, const("iou", np.array([opts.iou_threshold], np.float32)),
                                        const("score", np.array([opts.score_threshold], np.float32))], ["selected"],
                  center_point_box=0)
    (sel_scores,) = node("GatherND", [SCORES, sel], ["selected_scores"])
    (shape,) = node("Shape", [SCORES], ["scores_shape"])
    (fill,) = node("ConstantOfShape", [shape], ["fill"],
                   value=helper.make_tensor("v", TensorProto.FLOAT, [1], [-1.0]))
    (dense,) = node("ScatterND", [fill, sel, sel_scores], ["dense"])
    (flat,) = node("Reshape", [dense, const("flat_shape", np.array([0, -1], np.int64))], ["flat"])
    top_scores, top_index = node("TopK", [flat, kmax], ["top_scores", "top_index"], axis=-1, largest=1, sorted=1)
    (n_anchors,) = node("Gather", [shape, const("anchor_axis", np.array(2, np.int64))], ["num_anchors"], axis=0)
    (cls,) = node("Div", [top_index, n_anchors], ["class_index"])
    (anchor,) = node("Mod", [top_index, n_anchors], ["anchor_index"])
    (anchor_u,) = node("Unsqueeze", [anchor, last], ["anchor_u"])
    (idx4,) = node("Expand", [anchor_u, const("four", np.array([1, 1, 4], np.int64))], ["anchor_idx4"])
    (boxes_k,) = node("GatherElements", [BOXES, idx4], ["boxes_k"], axis=1)
    (valid,) = node("Greater", [top_scores, const("half", np.array(-0.5, np.float32))], ["valid"])
    (valid4,) = node("Unsqueeze", [valid, last], ["valid4"])
    node("Where", [valid4, boxes_k, zero], ["detection_boxes"])
    node("Where", [valid, top_scores, zero], ["detection_scores"])
    (cls32,) = node("Cast", [cls], ["class_i32"], to=TensorProto.INT32)
    node("Where", [valid, cls32, const("minus_one", np.array(-1, np.int32))], ["detection_classes"])
    (valid32,) = node("Cast", [valid], ["valid_i32"], to=TensorProto.INT32)
    node("ReduceSum", [valid32, last], ["num_detections"], keepdims=1)

    del g.output[:]
    g.output.extend([
        helper.make_tensor_value_info("num_detections", TensorProto.INT32, ["batch", 1]),
        helper.make_tensor_value_info("detection_boxes", TensorProto.FLOAT, ["batch", k, 4]),
        helper.make_tensor_value_info("detection_scores", TensorProto.FLOAT, ["batch", k]),
        helper.make_tensor_value_info("detection_classes", TensorProto.INT32, ["batch", k]),
    ])
    onnx.checker.check_model(m)
    return m

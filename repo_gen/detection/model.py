"""The PyTorch detector: timm MobileViT features + SSDLite extra layers and head (torchvision's blocks).

Training and the PyTorch reference use torchvision's `SSD` (matcher, hard-negative mining, box
coder, per-class NMS); export uses `DetectorCore`, which stops at decoded boxes and class scores so
that the NMS and the fixed-size padding can be written as plain ONNX ops (see nms_graph.py).

Checkpoints are `{"state_dict": ..., "detector": {...}}` or a bare state dict, always read with
`weights_only=True` (repo_gen.torch.loader.read_state_dict).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import nn

from repo_gen.detection.specs import DetectorSpec, check_size
from repo_gen.errors import UserError

# torchvision's SSDLite box coder weights and clamp (torchvision/models/detection/ssd.py).
BOX_WEIGHTS = (10.0, 10.0, 5.0, 5.0)
BOX_CLAMP = math.log(1000.0 / 16)
_HEAD_KEY = "head.classification_head.module_list.0.1.weight"


def _norm(c: int) -> nn.Module:
    # Same BatchNorm settings as torchvision's SSDLite (eps 1e-3, momentum 0.03).
    return nn.BatchNorm2d(c, eps=0.001, momentum=0.03)


def _extra_block(cin: int, cout: int) -> nn.Sequential:
    """SSDLite extra layer: 1x1 reduce, 3x3 depthwise stride 2, 1x1 expand (paper: MobileNetV2 style)."""
    mid = cout // 2
    return nn.Sequential(
        nn.Conv2d(cin, mid, 1, bias=False), _norm(mid), nn.ReLU6(inplace=True),
        nn.Conv2d(mid, mid, 3, stride=2, padding=1, groups=mid, bias=False), _norm(mid), nn.ReLU6(inplace=True),
        nn.Conv2d(mid, cout, 1, bias=False), _norm(cout), nn.ReLU6(inplace=True),
    )


class MobileViTFeatures(nn.Module):
    """Feature maps of timm MobileViT (spec.out_indices; default strides 16, 32) and the extra blocks after them."""

    def __init__(self, spec: DetectorSpec) -> None:
        super().__init__()
        import timm

        self.body = timm.create_model(spec.backbone, pretrained=False, features_only=True,
                                      out_indices=spec.out_indices)
        chans = list(self.body.feature_info.channels())  # type: ignore[union-attr,operator]
        extras = []
        cin = chans[-1]
        for cout in spec.extra_channels:
            extras.append(_extra_block(cin, cout))
            cin = cout
        self.extras = nn.ModuleList(extras)
        self.out_channels = chans + list(spec.extra_channels)

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        feats = list(self.body(x))
        y = feats[-1]
        for block in self.extras:
            y = block(y)
            feats.append(y)
        return OrderedDict((str(i), f) for i, f in enumerate(feats))


@dataclass(frozen=True)
class DetectorInfo:
    """What a detector checkpoint says about itself (stored beside the state dict)."""

    name: str
    num_classes: int  # object classes, background excluded
    image_size: int
    layout: dict  # DetectorSpec.layout(): feature maps and default boxes the weights were trained with

    def to_dict(self) -> dict:
        return {"name": self.name, "num_classes": self.num_classes, "image_size": self.image_size,
                "layout": self.layout}


def build_detector(spec: DetectorSpec, num_classes: int, image_size: int | None = None,
                   score_thresh: float = 0.01, iou_thresh: float = 0.45, max_det: int = 100) -> Any:
    """torchvision `SSD` with our backbone and an SSDLite head; `num_classes` excludes background."""
    from torchvision.models.detection.anchor_utils import DefaultBoxGenerator
    from torchvision.models.detection.ssd import SSD
    from torchvision.models.detection.ssdlite import SSDLiteHead

    size = check_size(image_size or spec.default_size)
    if num_classes < 1:
        raise UserError(f"--num-classes {num_classes}: a detector needs at least 1 object class")
    backbone = MobileViTFeatures(spec)
    anchors = DefaultBoxGenerator([list(r) for r in spec.aspect_ratios], min_ratio=spec.min_ratio,
                                  max_ratio=spec.max_ratio)
    head = SSDLiteHead(backbone.out_channels, anchors.num_anchors_per_location(), num_classes + 1,
                       partial(nn.BatchNorm2d, eps=0.001, momentum=0.03))
    # mean 0 / std 1: MobileViT takes [0, 1] RGB (timm data config); letterboxing happens before the model.
    model = SSD(backbone, anchors, (size, size), num_classes + 1, image_mean=[0.0] * 3, image_std=[1.0] * 3,
                head=head, score_thresh=score_thresh, nms_thresh=iou_thresh, detections_per_img=max_det,
                topk_candidates=100_000)
    model.repo_gen_info = DetectorInfo(spec.name, num_classes, size, spec.layout())
    return model


def default_boxes(model: Any) -> torch.Tensor:
    """The [A, 4] anchors (x1, y1, x2, y2 input pixels) of `model` at its fixed input size."""
    from torchvision.models.detection.image_list import ImageList

    size = model.repo_gen_info.image_size
    x = torch.zeros(1, 3, size, size)
    with torch.no_grad():
        feats = list(model.backbone(x).values())
    return model.anchor_generator(ImageList(x, [(size, size)]), feats)[0]


class DetectorCore(nn.Module):
    """Export body: image batch -> (boxes [N, A, 4] input pixels, scores [N, C, A]) without NMS."""

    anchor_ctr: torch.Tensor
    anchor_wh: torch.Tensor

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.backbone = model.backbone
        self.head = model.head
        self.size = float(model.repo_gen_info.image_size)
        a = default_boxes(model)
        wh = a[:, 2:] - a[:, :2]
        self.register_buffer("anchor_ctr", (a[:, :2] + 0.5 * wh).unsqueeze(0))
        self.register_buffer("anchor_wh", wh.unsqueeze(0))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.head(list(self.backbone(x).values()))
        reg, logits = out["bbox_regression"], out["cls_logits"]
        wx, wy, ww, wh = BOX_WEIGHTS
        ctr = self.anchor_ctr + reg[..., :2] / torch.tensor([wx, wy]) * self.anchor_wh
        half = 0.5 * self.anchor_wh * torch.exp(torch.clamp(reg[..., 2:] / torch.tensor([ww, wh]), max=BOX_CLAMP))
        boxes = torch.clamp(torch.cat([ctr - half, ctr + half], dim=-1), 0.0, self.size)
        scores = torch.softmax(logits, dim=-1)[..., 1:].transpose(1, 2)
        return boxes, scores


def reference_detections(boxes: torch.Tensor, scores: torch.Tensor, score_thresh: float, iou_thresh: float,
                         max_det: int) -> list[dict[str, torch.Tensor]]:
    """Per-class NMS in PyTorch (torchvision), the semantics the ONNX graph must reproduce.

    Returns per image {"boxes" [n, 4], "scores" [n], "classes" [n] (0-based)} sorted by score.
    """
    from torchvision.ops import batched_nms

    dets = []
    num_classes = scores.shape[1]
    for b, s in zip(boxes, scores, strict=True):
        cls = torch.arange(num_classes).unsqueeze(1).expand_as(s)
        keep = s > score_thresh
        bx = b.unsqueeze(0).expand(num_classes, -1, -1)[keep]
        sc, cl = s[keep], cls[keep]
        idx = batched_nms(bx, sc, cl, iou_thresh)[:max_det]
        dets.append({"boxes": bx[idx], "scores": sc[idx], "classes": cl[idx]})
    return dets


def is_detector_state(state: dict) -> bool:
    return _HEAD_KEY in state or any(k.startswith("head.classification_head.") for k in state)


def is_classifier_state(state: dict) -> bool:
    return "head.fc.weight" in state or ("stem.conv.weight" in state and not is_detector_state(state))


def classes_in_state(state: dict, spec: DetectorSpec) -> int:
    """Object classes of a detector state dict (its first classification conv has A0 * (C + 1) outputs)."""
    a0 = 2 + 2 * len(spec.aspect_ratios[0])
    return int(state[_HEAD_KEY].shape[0]) // a0 - 1


def read_detector_checkpoint(path: Path) -> tuple[dict, dict]:
    """(state dict, stored info dict or {}) of a detector checkpoint, refusing classifier checkpoints."""
    from repo_gen.torch.loader import read_state_dict

    state = read_state_dict(path)  # validates the file and unwraps "state_dict"
    info: dict = {}
    outer = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(outer, dict) and isinstance(outer.get("detector_info"), dict):
        info = outer["detector_info"]
    if is_classifier_state(state):
        raise UserError(
            f"--weights {path}: this is a classifier checkpoint (timm keys such as head.fc.weight), not a "
            "detector; pass a checkpoint saved by repo-gen's detector training, or build it with a classifier "
            "--model (e.g. mobilevit_xxs)"
        )
    if not is_detector_state(state):
        raise UserError(
            f"--weights {path}: no SSDLite head in it (no keys head.classification_head.*); pass a "
            "ssdlite_mobilevit_* checkpoint"
        )
    return state, info


def load_detector(spec: DetectorSpec, weights: Path | None, num_classes: int | None = None,
                  image_size: int | None = None, seed: int = 0, **kw: Any) -> Any:
    """The detector in eval mode; weights from `weights` (None: random init with `seed`).

    Args:
        num_classes: object classes; None takes the checkpoint's (or 10 for random init). A value that
            differs from the checkpoint's is a UserError.
    """
    state = None
    if weights is not None:
        state, info = read_detector_checkpoint(Path(weights))
        image_size = image_size or info.get("image_size")
        if isinstance(info.get("layout"), dict):  # older checkpoints have none: the registry's layout
            spec = spec.with_layout(info["layout"], f"--weights {weights}")
        n_ckpt = classes_in_state(state, spec)
        if num_classes is not None and num_classes != n_ckpt:
            raise UserError(
                f"--labels: {num_classes} classes, but the checkpoint {weights} was trained for {n_ckpt}; "
                f"pass a labels file with {n_ckpt} lines (background excluded) or the matching checkpoint"
            )
        num_classes = n_ckpt
    torch.manual_seed(seed)
    model = build_detector(spec, num_classes or 10, image_size, **kw)
    if state is not None:
        from repo_gen.torch.loader import key_mismatch

        mismatch = key_mismatch(model.state_dict(), state)
        if mismatch:
            raise UserError(f"--weights {weights}: keys do not match {spec.name}: {mismatch}; "
                            f"pass a checkpoint of {spec.name} or choose the matching --model")
        model.load_state_dict(state, strict=True)
    return model.eval()


def save_detector(model: Any, path: Path) -> None:
    """Write state dict + info (plain tensors and primitives: loadable with weights_only=True)."""
    import io

    from repo_gen.fileio import write_atomic

    buf = io.BytesIO()
    torch.save({"state_dict": model.state_dict(), "detector_info": model.repo_gen_info.to_dict()}, buf)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    write_atomic(Path(path), buf.getvalue())

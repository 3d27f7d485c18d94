"""The detection flags of `repo-gen build` and the call into `build_detection` (one argument group)."""

from __future__ import annotations

import argparse
import dataclasses
import json


def add_detection_args(p: argparse.ArgumentParser) -> None:
    d = p.add_argument_group("detection (ssdlite_mobilevit_* models)")
    # --labels is the classifier's option too (repo_gen/commands/data_args.py): one flag, read by both builds
    # None = the default of NmsOptions / DetectionBuildConfig (defaults live in one place, as for classifiers)
    d.add_argument("--max-detections", type=int, metavar="K", help="K: padded detections per image (default: 100)")
    d.add_argument("--score-threshold", type=float, help="in-graph NMS score threshold, in [0, 1] (default: 0.25)")
    d.add_argument("--iou-threshold", type=float, help="in-graph NMS IoU threshold, in [0, 1] (default: 0.45)")
    d.add_argument("--map-tolerance", type=float, metavar="POINTS",
                   help="mAP@[.5:.95] points FP16/INT8 may lose against FP32 (eval set: --eval-dir with a COCO "
                        "annotations.json, else the fixture's held-out scenes; default: 1.0)")


def run_detection_build(args: argparse.Namespace) -> int:
    from repo_gen.detection.build import DetectionBuildConfig, build_detection
    from repo_gen.detection.nms_graph import NmsOptions
    from repo_gen.errors import UserError
    from repo_gen.log import console

    if args.pretrained:
        raise UserError("--pretrained: no pretrained MobileViT-SSDLite weights are available offline; pass --weights")
    # The build CLI leaves options it was not given as None ("the config's default"): keep only those
    # given, under DetectionBuildConfig's names, so detector defaults live in one place too.
    given = {k: v for k, v in vars(args).items() if v is not None}
    names = {"model_version": "version"}
    fields = {f.name for f in dataclasses.fields(DetectionBuildConfig) if f.init}
    kwargs = {names.get(k, k): v for k, v in given.items() if names.get(k, k) in fields}
    if "runtimes" in kwargs:
        kwargs["runtimes"] = kwargs["runtimes"].replace("onnx,py,trt", "py,onnx,trt")
    if "calib_count" in kwargs:
        kwargs["calib_count"] = min(kwargs["calib_count"], 256)
    nms = {k: given[k] for k in ("max_detections", "score_threshold", "iou_threshold") if k in given}
    cfg = DetectionBuildConfig(**kwargs, nms=NmsOptions(**nms))
    report = build_detection(cfg, lock_timeout_s=args.lock_timeout)
    if args.json:
        print(json.dumps(report.__dict__, indent=2, default=str))
    else:
        console.print(report.precision_md)
        ec = report.export_check
        console.print(f"export check: {ec['matched']} detections matched PyTorch at batches {ec['batches']} "
                      f"(min IoU {ec['min_iou']}, max score diff {ec['max_score_diff']})")
        for e in report.entries:
            console.print(f"  {e['name']:45s} {e['backend']:12s} {e['status']}")
    return 0

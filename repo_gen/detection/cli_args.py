"""The detection flags of `repo-gen build` and the call into `build_detection` (one argument group)."""

from __future__ import annotations

import argparse
import dataclasses
import json


def add_detection_args(p: argparse.ArgumentParser) -> None:
    d = p.add_argument_group("detection (ssdlite_mobilevit_* models)")
    # --labels is the classifier's option too (repo_gen/commands/data_args.py): one flag, read by both builds
    d.add_argument("--max-detections", type=int, default=100, metavar="K", help="K: padded detections per image")
    d.add_argument("--score-threshold", type=float, default=0.25, help="in-graph NMS score threshold, in [0, 1]")
    d.add_argument("--iou-threshold", type=float, default=0.45, help="in-graph NMS IoU threshold, in [0, 1]")
    d.add_argument("--map-tolerance", type=float, default=1.0, metavar="POINTS",
                   help="mAP@[.5:.95] points FP16/INT8 may lose against FP32 (eval set: --eval-dir with a COCO "
                        "annotations.json, default the fixture's held-out scenes)")


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
    cfg = DetectionBuildConfig(**kwargs, nms=NmsOptions(args.max_detections, args.score_threshold, args.iou_threshold))
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

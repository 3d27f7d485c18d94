"""The detection flags of `repo-gen build` and the call into `build_detection` (one argument group)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_detection_args(p: argparse.ArgumentParser) -> None:
    d = p.add_argument_group("detection (ssdlite_mobilevit_* models)")
    d.add_argument("--labels", type=Path, metavar="PATH", help="class names, one per line (background excluded)")
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
    cfg = DetectionBuildConfig(
        model=args.model, output=args.output, weights=args.weights, labels=args.labels, image_size=args.image_size,
        max_batch=args.max_batch, precisions=args.precisions,
        runtimes=args.runtimes.replace("onnx,py,trt", "py,onnx,trt"),
        nms=NmsOptions(args.max_detections, args.score_threshold, args.iou_threshold),
        map_tolerance=args.map_tolerance, eval_dir=args.eval_dir, eval_count=args.eval_count,
        calib_count=min(args.calib_count, 256), calib_method=args.calib_method, version=args.model_version,
        instance_count=args.instance_count, max_queue_delay_us=args.max_queue_delay_us, pipeline=args.pipeline,
        allow_inaccurate=args.allow_inaccurate, opset=args.opset, seed=args.seed)
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

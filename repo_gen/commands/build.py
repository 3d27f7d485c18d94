"""`repo-gen build`: model -> ONNX -> precision variants -> Triton model repository."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from repo_gen.config import PRECISIONS, RUNTIMES


def add_parser(sub) -> None:
    from repo_gen.detection.specs import list_detectors
    from repo_gen.models import list_models

    p = sub.add_parser(
        "build",
        help="build a Triton model repository for one model",
        description="Export a model to ONNX, make its precision variants, and write (atomically) a Triton "
        "model repository: one model per runtime x precision, named <model>_<runtime>_<precision> "
        "(runtime: onnx = Triton onnxruntime backend, py = python backend running ONNX Runtime, "
        "trt = TensorRT plan), plus the <model>_pipeline ensemble (image bytes -> top-k labels).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    g = p.add_argument_group("model")
    g.add_argument("--model", default="mobilevit_s", metavar="NAME", help=f"one of: {', '.join(list_models())}; detectors: {', '.join(list_detectors())}")
    w = g.add_mutually_exclusive_group()
    w.add_argument("--weights", type=Path, metavar="PATH",
                   help="checkpoint: a timm state_dict, or a dict holding one under state_dict/model/ema (loaded with weights_only=True)")
    w.add_argument("--pretrained", action="store_true", help="timm's pretrained weights (needs network or a filled HF cache)")
    g.add_argument("--image-size", type=int, default=None, metavar="N", help="input height = width (default: the model's, 256 for MobileViT)")
    g.add_argument("--seed", type=int, default=0, help="random-init seed when neither --weights nor --pretrained is given")

    o = p.add_argument_group("output")
    o.add_argument("--output", type=Path, default=Path("model_repository"), metavar="DIR", help="model repository directory")
    o.add_argument("--max-batch", type=int, default=64, metavar="N", help="max_batch_size of every config and max of every TensorRT profile")
    o.add_argument("--precisions", default="fp32,fp16,int8", metavar="LIST", help=f"comma list of {','.join(PRECISIONS)}")
    o.add_argument("--runtimes", default=",".join(RUNTIMES), metavar="LIST", help=f"comma list of {','.join(RUNTIMES)}")
    o.add_argument("--no-pipeline", dest="pipeline", action="store_false", help="do not write the image-bytes -> labels ensemble")
    o.add_argument("--version", dest="model_version", type=int, default=1, metavar="N", help="Triton version directory to write")
    o.add_argument("--instance-count", type=int, default=None, metavar="N",
                   help="instances per model (instance_group count; default 2 for python-backend models, 1 for others)")
    o.add_argument("--max-queue-delay-us", type=int, default=100, metavar="US", help="dynamic batcher max_queue_delay_microseconds")
    o.add_argument("--opset", type=int, default=17, help="ONNX opset (>= 17)")
    o.add_argument("--lock-timeout", type=float, default=0.0, metavar="S", help="wait this long for another build on the same repository")
    o.add_argument("--json", action="store_true", help="print the build report as JSON on stdout")
    o.add_argument("--no-cache", dest="use_cache", action="store_false",
                   help="run every stage even when the stage cache holds its result (and store nothing)")

    q = p.add_argument_group("precision (FP16 / INT8)")
    q.add_argument("--io-dtype", default="fp32", choices=["fp32", "fp16"], help="dtype of input/output tensors of FP16/INT8 variants")
    q.add_argument("--calib-dir", type=Path, metavar="DIR", help="calibration images (JPEG/PNG/WebP, recursive); default: built-in photos")
    q.add_argument("--calib-count", type=int, default=256, metavar="N", help="calibration images to use")
    q.add_argument("--calib-method", default="max", choices=["max", "percentile", "entropy"], help="activation range method")
    q.add_argument("--eval-dir", type=Path, metavar="DIR", help="evaluation images; class subfolders give real top-1/top-5")
    q.add_argument("--eval-count", type=int, default=64, metavar="N", help="evaluation images for the fidelity report")
    q.add_argument("--fp16-tolerance", type=float, default=5e-3, help="max relative L2 error of FP16 logits vs FP32")
    q.add_argument("--int8-tolerance", type=float, default=0.99, help="min cosine similarity of INT8 logits vs FP32")
    q.add_argument("--allow-inaccurate", action="store_true", help="serve variants that miss their tolerance")

    t = p.add_argument_group("TensorRT (plans are built only where TensorRT and a GPU exist)")
    t.add_argument("--opt-batch", type=int, default=None, metavar="N", help="profile opt batch (default: min(16, max-batch))")
    t.add_argument("--builder-opt-level", type=int, default=3, metavar="N", help="TensorRT builder optimization level 0-5")
    t.add_argument("--version-compatible", action="store_true", help="build version-compatible plans")
    t.add_argument("--timing-cache", type=Path, metavar="PATH", help="TensorRT timing cache file, reused across builds")
    t.add_argument("--plugins", default="off", choices=["off", "on", "auto"], help="use the MobileViT plugin library: auto keeps the faster engine")
    t.add_argument("--triton-image", metavar="IMAGE",
                   help="NGC tritonserver image named in each plan's README/docker command (e.g. nvcr.io/nvidia/tritonserver:25.10-py3)")
    t.add_argument("--plugin-lib", type=Path, metavar="PATH", help="libmobilevit_plugins.so (default: plugins/build/)")
    from repo_gen.detection.cli_args import add_detection_args

    add_detection_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from repo_gen.build import build, print_summary
    from repo_gen.config import BuildConfig
    from repo_gen.detection.specs import is_detector

    if is_detector(args.model):  # detectors have their own build (repo_gen/detection/build.py)
        from repo_gen.detection.cli_args import run_detection_build

        return run_detection_build(args)

    cfg = BuildConfig(
        model=args.model,
        output=args.output,
        weights=args.weights,
        pretrained=args.pretrained,
        max_batch=args.max_batch,
        opt_batch=args.opt_batch,
        image_size=args.image_size,
        precisions=args.precisions,
        runtimes=args.runtimes,
        opset=args.opset,
        version=args.model_version,
        instance_count=args.instance_count,
        max_queue_delay_us=args.max_queue_delay_us,
        seed=args.seed,
        io_dtype=args.io_dtype,
        plugins=args.plugins,
        pipeline=args.pipeline,
        allow_inaccurate=args.allow_inaccurate,
        calib_dir=args.calib_dir,
        calib_count=args.calib_count,
        calib_method=args.calib_method,
        eval_dir=args.eval_dir,
        eval_count=args.eval_count,
        fp16_tolerance=args.fp16_tolerance,
        int8_tolerance=args.int8_tolerance,
        trt_plugin_lib=args.plugin_lib,
        builder_opt_level=args.builder_opt_level,
        version_compatible=args.version_compatible,
        timing_cache=args.timing_cache,
        use_cache=args.use_cache,
    )
    report = build(cfg, lock_timeout_s=args.lock_timeout)
    if args.json:
        print(json.dumps(report.__dict__, indent=2, default=str))
    else:
        print_summary(report)
    return 0

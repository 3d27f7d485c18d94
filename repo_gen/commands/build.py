"""`repo-gen build`: model -> ONNX -> precision variants -> Triton model repository.

Every option defaults to None, meaning "BuildConfig's default": the defaults live only in
`repo_gen.config.BuildConfig`, and the help text reads them from there.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from repo_gen.commands.data_args import add_data_args
from repo_gen.config import ALL_RUNTIMES, PRECISIONS, RUNTIMES, BuildConfig

# argparse dest -> BuildConfig field, where the names differ.
_FIELD = {"model_version": "version", "plugin_lib": "trt_plugin_lib"}


def _default(name: str) -> str:
    """BuildConfig's default of field `name`, for the help text."""
    f = {f.name: f for f in dataclasses.fields(BuildConfig)}[name]
    value = f.default
    if isinstance(value, tuple):
        return ",".join(value)
    return str(value)


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
    )
    g = p.add_argument_group("model")
    g.add_argument("--model", metavar="NAME", help=f"one of: {', '.join(list_models())}; detectors: {', '.join(list_detectors())} (default: {_default('model')})")
    w = g.add_mutually_exclusive_group()
    w.add_argument("--weights", type=Path, metavar="PATH",
                   help="checkpoint: a timm or Apple ml-cvnets MobileViT state_dict, or a dict holding one under "
                   "state_dict/model/ema (with optional class_names and pretrained_cfg; loaded with weights_only=True)")
    w.add_argument("--pretrained", action="store_true", default=None, help="timm's pretrained weights (needs network or a filled HF cache)")
    g.add_argument("--image-size", type=int, default=None, metavar="N", help="input height = width (default: the model's, 256 for MobileViT)")
    g.add_argument("--seed", type=int, help="random-init seed when neither --weights nor --pretrained is given "
                   f"(default: {_default('seed')})")
    add_data_args(p)

    o = p.add_argument_group("output")
    o.add_argument("--output", type=Path, metavar="DIR", help=f"model repository directory (default: {_default('output')})")
    o.add_argument("--max-batch", type=int, metavar="N",
                   help=f"max_batch_size of every config and max of every TensorRT profile (default: {_default('max_batch')})")
    o.add_argument("--precisions", metavar="LIST", help=f"comma list of {','.join(PRECISIONS)} (default: {_default('precisions')})")
    o.add_argument("--runtimes", metavar="LIST", help=f"comma list of {','.join(ALL_RUNTIMES)} (default: {','.join(RUNTIMES)}; "
                   "torch: PyTorch in the python backend, compiled on the GPU)")
    o.add_argument("--gpus", metavar="LIST",
                   help="GPU indices for GPU runtimes' instance groups, e.g. 0,1 (default: every visible GPU)")
    o.add_argument("--torch-dtype", choices=["fp32", "fp16", "bf16"],
                   help="compute dtype of the torch runtime (default: the variant's precision)")
    o.add_argument("--no-pipeline", dest="pipeline", action="store_false", default=None, help="do not write the image-bytes -> labels ensemble")
    o.add_argument("--pipeline-model", metavar="NAME",
                   help="the ensemble's classifier, e.g. onnx_fp16 or <model>_onnx_fp16 (default: the first ready of "
                   "trt_fp16, trt_int8, trt_fp32, py_fp32, ...)")
    o.add_argument("--version", dest="model_version", type=int, metavar="N",
                   help=f"Triton version directory to write (default: {_default('version')})")
    o.add_argument("--instance-count", type=int, metavar="N",
                   help="instances per model, per GPU for GPU models (instance_group count; default 2 for the _py_ "
                        "models and for torch models on a GPU, 1 for others)")
    o.add_argument("--max-queue-delay-us", type=int, metavar="US",
                   help=f"dynamic batcher max_queue_delay_microseconds (default: {_default('max_queue_delay_us')})")
    o.add_argument("--opset", type=int, help=f"ONNX opset, >= 17 (default: {_default('opset')})")
    o.add_argument("--lock-timeout", type=float, default=0, metavar="S",
                   help="seconds to wait for another build on the same repository (default: 0)")
    o.add_argument("--json", action="store_true", help="print the build report as JSON on stdout")
    o.add_argument("--no-cache", dest="use_cache", action="store_false", default=None,
                   help="run every stage even when the stage cache holds its result (and store nothing)")

    q = p.add_argument_group("precision (FP16 / INT8)")
    q.add_argument("--io-dtype", choices=["fp32", "fp16"],
                   help=f"dtype of input/output tensors of FP16/INT8 variants (default: {_default('io_dtype')})")
    q.add_argument("--calib-dir", type=Path, metavar="DIR", help="calibration images (JPEG/PNG/WebP, recursive); default: built-in photos")
    q.add_argument("--calib-count", type=int, metavar="N", help=f"calibration images to use (default: {_default('calib_count')})")
    q.add_argument("--calib-method", choices=["max", "percentile", "entropy"],
                   help=f"activation range method (default: {_default('calib_method')})")
    q.add_argument("--eval-dir", type=Path, metavar="DIR", help="evaluation images; class subfolders give real top-1/top-5")
    q.add_argument("--eval-count", type=int, metavar="N",
                   help=f"evaluation images for the fidelity report (default: {_default('eval_count')})")
    q.add_argument("--fp16-tolerance", type=float,
                   help=f"max relative L2 error of FP16 logits vs FP32 (default: {_default('fp16_tolerance')})")
    q.add_argument("--int8-tolerance", type=float,
                   help=f"min cosine similarity of INT8 logits vs FP32 (default: {_default('int8_tolerance')})")
    q.add_argument("--int8-top1-tolerance", type=float, metavar="FRACTION",
                   help="INT8 is also rejected when more than this fraction of evaluation images change their top-1 "
                   f"class vs FP32 (default: {_default('int8_top1_tolerance')})")
    q.add_argument("--accuracy-tolerance", type=float, metavar="POINTS",
                   help="with a labelled --eval-dir: max top-1 drop of FP16/INT8 vs FP32, in points "
                   f"(default: {_default('accuracy_tolerance')})")
    q.add_argument("--allow-inaccurate", action="store_true", default=None, help="serve variants that miss their tolerance")

    t = p.add_argument_group("TensorRT (plans are built only where TensorRT and a GPU exist)")
    t.add_argument("--opt-batch", type=int, metavar="N", help="profile opt batch (default: min(16, max-batch))")
    t.add_argument("--builder-opt-level", type=int, metavar="N",
                   help=f"TensorRT builder optimization level 0-5 (default: {_default('builder_opt_level')})")
    t.add_argument("--version-compatible", action="store_true", default=None, help="build version-compatible plans")
    t.add_argument("--timing-cache", type=Path, metavar="PATH", help="TensorRT timing cache file, reused across builds")
    t.add_argument("--plugins", choices=["off", "on", "auto"],
                   help="use the MobileViT plugin library: for plans, and for the torch runtime's custom ops on a GPU; "
                   f"auto keeps the faster by measurement (default: {_default('plugins')})")
    t.add_argument("--triton-image", metavar="IMAGE",
                   help="tritonserver image that serves the repository: named in each plan's README/docker command and "
                   "recorded in the manifest's options (e.g. nvcr.io/nvidia/tritonserver:25.10-py3)")
    t.add_argument("--plugin-lib", type=Path, metavar="PATH", help="libmobilevit_plugins.so (default: plugins/build/)")
    from repo_gen.detection.cli_args import add_detection_args

    add_detection_args(p)
    p.set_defaults(func=run)


def config_from_args(args: argparse.Namespace) -> BuildConfig:
    """The BuildConfig of the options given; those left out (None) take BuildConfig's defaults."""
    fields = {f.name for f in dataclasses.fields(BuildConfig) if f.init}
    given = {_FIELD.get(k, k): v for k, v in vars(args).items() if v is not None}
    return BuildConfig(**{k: v for k, v in given.items() if k in fields})


def run(args: argparse.Namespace) -> int:
    from repo_gen.build import build, print_summary
    from repo_gen.detection.specs import is_detector

    if is_detector(args.model or ""):  # detectors have their own build (repo_gen/detection/build.py)
        from repo_gen.detection.cli_args import run_detection_build

        return run_detection_build(args)

    cfg = config_from_args(args)
    report = build(cfg, lock_timeout_s=args.lock_timeout)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2, default=str))
    else:
        print_summary(report)
    return 0

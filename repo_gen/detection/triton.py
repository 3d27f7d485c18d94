"""Triton model directories for detectors: python (ORT), onnxruntime, TensorRT plan, and the pipeline.

Every detector model has one input `input` [3, S, S] and the four padded outputs of nms_graph.py,
so Triton's dynamic batcher can batch requests. The pipeline ensemble takes encoded image bytes and
returns the detections in the ORIGINAL image's pixels:

    <model>_det_preprocess (python): bytes -> input + letterbox [6]
    <model>_<runtime>_<precision>:   input -> num_detections, detection_* (input pixels)
    <model>_det_postprocess (python): detections + letterbox -> detections (image pixels)
"""

from __future__ import annotations

import shutil
from pathlib import Path

from repo_gen.detection.client import encode_labels
from repo_gen.detection.export import INPUT_NAME
from repo_gen.detection.nms_graph import OUTPUTS
from repo_gen.triton.config import EnsembleStep, ModelConfigSpec, TensorSpec, WarmupSpec
from repo_gen.triton.render import render_config, render_template

LABELS_FILE = "labels.txt"
IMAGE_INPUT = "image"
LETTERBOX = "letterbox"
_REPO_ROOT = Path(__file__).resolve().parents[2]


def detection_outputs(k: int, labels: bool = True) -> list[TensorSpec]:
    return [TensorSpec("num_detections", "TYPE_INT32", [1]),
            TensorSpec("detection_boxes", "TYPE_FP32", [k, 4]),
            TensorSpec("detection_scores", "TYPE_FP32", [k]),
            TensorSpec("detection_classes", "TYPE_INT32", [k], label_filename=LABELS_FILE if labels else None)]


def _input(size: int) -> TensorSpec:
    return TensorSpec(INPUT_NAME, "TYPE_FP32", [3, size, size])


def _write(model_dir: Path, spec: ModelConfigSpec, labels: list[str] | None) -> list[str]:
    (model_dir / "config.pbtxt").write_text(render_config(spec))
    files = ["config.pbtxt"]
    if labels is not None:
        (model_dir / LABELS_FILE).write_text("\n".join(labels) + "\n")
        files.append(LABELS_FILE)
    return files


def _spec(name: str, template: str, size: int, k: int, max_batch: int, instances: int, kind: str,
          delay_us: int, warm_batches: list[int], **kw) -> ModelConfigSpec:
    inp = _input(size)
    warm = [WarmupSpec(f"random_batch_{b}", b, [inp]) for b in sorted(set(warm_batches))]
    return ModelConfigSpec(name=name, template=template, max_batch_size=max_batch, inputs=[inp],
                           outputs=detection_outputs(k), max_queue_delay_us=delay_us, instance_count=instances,
                           instance_kind=kind, warmup=warm, **kw)


def write_python_detector(model_dir: Path, name: str, onnx_file: Path, version: int, size: int, k: int,
                          labels: list[str], max_batch: int, instances: int = 2, delay_us: int = 100) -> list[str]:
    """python backend running the ONNX graph (NMS inside) with ONNX Runtime on the CPU."""
    spec = _spec(name, "python", size, k, max_batch, instances, "KIND_CPU", delay_us, [1],
                 parameters={"intra_op_threads": "0"}, default_model_filename="model.onnx")
    files = _write(model_dir, spec, labels)
    vdir = model_dir / str(version)
    vdir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(onnx_file, vdir / "model.onnx")
    (vdir / "model.py").write_text(render_template("detection_onnx_model.py.j2", input_name=INPUT_NAME,
                                                   output_names=repr(list(OUTPUTS)), onnx_file="model.onnx"))
    return files + [f"{version}/model.onnx", f"{version}/model.py"]


def write_onnxruntime_detector(model_dir: Path, name: str, onnx_file: Path, version: int, size: int, k: int,
                               labels: list[str], max_batch: int, instances: int = 1, delay_us: int = 100) -> list[str]:
    """Triton's onnxruntime backend (NGC image; KIND_AUTO: the GPU there, else the CPU)."""
    spec = _spec(name, "onnxruntime", size, k, max_batch, instances, "KIND_AUTO", delay_us, [1, max_batch])
    files = _write(model_dir, spec, labels)
    vdir = model_dir / str(version)
    vdir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(onnx_file, vdir / "model.onnx")
    return files + [f"{version}/model.onnx"]


def trtexec_command(size: int, max_batch: int, opt_batch: int, version: int) -> str:
    shape = f"3x{size}x{size}"
    return (f"trtexec --onnx=model.onnx --stronglyTyped --minShapes={INPUT_NAME}:1x{shape} "
            f"--optShapes={INPUT_NAME}:{opt_batch}x{shape} --maxShapes={INPUT_NAME}:{max_batch}x{shape} "
            f"--saveEngine={version}/model.plan")


def write_tensorrt_detector(model_dir: Path, name: str, onnx_file: Path, version: int, size: int, k: int,
                            labels: list[str], max_batch: int, instances: int = 1,
                            delay_us: int = 100) -> tuple[list[str], str]:
    """Plan config + the graph to compile + the trtexec command; no plan is built where TensorRT is absent.

    Returns (files, rebuild command). The graph's NMS is ONNX NonMaxSuppression, which TensorRT's
    ONNX parser imports (opset 17).
    """
    spec = _spec(name, "tensorrt_plan", size, k, max_batch, instances, "KIND_GPU", delay_us, [1, max_batch],
                 default_model_filename="model.plan")
    files = _write(model_dir, spec, labels)
    shutil.copyfile(onnx_file, model_dir / "model.onnx")
    cmd = trtexec_command(size, max_batch, min(16, max_batch), version)
    (model_dir / "README.md").write_text(
        f"# {name}\n\nTensorRT plan of a detector with NMS inside (ONNX NonMaxSuppression). Build the plan "
        f"inside the serving container (its TensorRT version must match the server's), from this folder:\n\n"
        f"```sh\nmkdir -p {version} && {cmd}\n```\n")
    return files + ["model.onnx", "README.md"], cmd


def _copy_code(model_dir: Path, version: int, template: str, **ctx) -> list[str]:
    vdir = model_dir / str(version)
    vdir.mkdir(parents=True, exist_ok=True)
    (vdir / "model.py").write_text(render_template(template, **ctx))
    shutil.copyfile(_REPO_ROOT / "repo_gen" / "detection" / "letterbox.py", vdir / "letterbox.py")
    files = [f"{version}/model.py", f"{version}/letterbox.py"]
    if "preprocess" in template:
        shutil.copyfile(_REPO_ROOT / "repo_gen" / "data" / "preprocess.py", vdir / "preprocess.py")
        files.append(f"{version}/preprocess.py")
    return files


def write_det_preprocess(model_dir: Path, name: str, version: int, size: int, max_batch: int,
                         instances: int = 2, delay_us: int = 100) -> list[str]:
    spec = ModelConfigSpec(
        name=name, template="python", max_batch_size=max_batch,
        inputs=[TensorSpec(IMAGE_INPUT, "TYPE_STRING", [1])],
        outputs=[_input(size), TensorSpec(LETTERBOX, "TYPE_FP32", [6])],
        max_queue_delay_us=delay_us, instance_count=instances, instance_kind="KIND_CPU",
        parameters={"image_size": str(size)})
    return _write(model_dir, spec, None) + _copy_code(
        model_dir, version, "detection_preprocess_model.py.j2", input_name=IMAGE_INPUT, tensor_name=INPUT_NAME,
        letterbox_name=LETTERBOX)


def write_det_postprocess(model_dir: Path, name: str, version: int, k: int, max_batch: int,
                          delay_us: int = 100) -> list[str]:
    spec = ModelConfigSpec(
        name=name, template="python", max_batch_size=max_batch,
        inputs=[*detection_outputs(k, labels=False), TensorSpec(LETTERBOX, "TYPE_FP32", [6])],
        outputs=detection_outputs(k, labels=False), max_queue_delay_us=delay_us, instance_count=1,
        instance_kind="KIND_CPU")
    return _write(model_dir, spec, None) + _copy_code(model_dir, version, "detection_postprocess_model.py.j2")


def write_det_ensemble(model_dir: Path, name: str, pre: str, detector: str, post: str, k: int,
                       labels: list[str], max_batch: int) -> list[str]:
    spec = ModelConfigSpec(
        name=name, template="detection_ensemble", max_batch_size=max_batch,
        inputs=[TensorSpec(IMAGE_INPUT, "TYPE_STRING", [1])], outputs=detection_outputs(k),
        parameters={"labels": encode_labels(labels)},  # for clients: Triton serves no label file contents
        ensemble_steps=[
            EnsembleStep(pre, -1, {IMAGE_INPUT: IMAGE_INPUT}, {INPUT_NAME: "det_input", LETTERBOX: "det_letterbox"}),
            EnsembleStep(detector, -1, {INPUT_NAME: "det_input"}, {o: f"raw_{o}" for o in OUTPUTS}),
            EnsembleStep(post, -1, {**{o: f"raw_{o}" for o in OUTPUTS}, LETTERBOX: "det_letterbox"},
                         {o: o for o in OUTPUTS}),
        ])
    files = _write(model_dir, spec, labels)
    (model_dir / "1").mkdir(exist_ok=True)  # an ensemble's version directory is empty
    return files

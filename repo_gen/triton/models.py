"""Write one Triton model directory per serving variant (config + files), ready to stage.

Each writer takes plain values and a staged directory and returns the files it wrote
(relative to the model directory). Configs come from templates via `render_config`.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from repo_gen.onnx.export import INPUT_NAME, OUTPUT_NAME
from repo_gen.triton.config import ModelConfigSpec, TensorSpec, WarmupSpec
from repo_gen.triton.render import render_config, render_template

LABELS_FILE = "labels.txt"
_TRITON_DTYPE = {"fp32": "TYPE_FP32", "fp16": "TYPE_FP16"}


def classifier_io(image_size: int, num_classes: int, io_dtype: str = "fp32") -> tuple[TensorSpec, TensorSpec]:
    dt = _TRITON_DTYPE[io_dtype]
    return (
        TensorSpec(INPUT_NAME, dt, [3, image_size, image_size]),
        TensorSpec(OUTPUT_NAME, dt, [num_classes], label_filename=LABELS_FILE),
    )


def warmups(inp: TensorSpec, batch_sizes: list[int]) -> list[WarmupSpec]:
    return [
        WarmupSpec(f"random_batch_{b}", b, [TensorSpec(inp.name, inp.data_type, inp.dims)])
        for b in sorted(set(batch_sizes))
    ]


def write_config_and_labels(model_dir: Path, spec: ModelConfigSpec, labels: list[str]) -> list[str]:
    """config.pbtxt rendered from `spec` and the labels.txt its outputs' label_filename names."""
    (model_dir / "config.pbtxt").write_text(render_config(spec))
    (model_dir / LABELS_FILE).write_text("\n".join(labels) + "\n")
    return ["config.pbtxt", LABELS_FILE]


def _write_onnx_model_dir(model_dir: Path, spec: ModelConfigSpec, labels: list[str], version: int, onnx_file: Path) -> list[str]:
    """config.pbtxt, labels.txt and `<version>/model.onnx`: what both ONNX-serving variants share."""
    files = write_config_and_labels(model_dir, spec, labels)
    vdir = model_dir / str(version)
    vdir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(onnx_file, vdir / "model.onnx")
    return files + [f"{version}/model.onnx"]


def write_onnxruntime_model(
    model_dir: Path,
    name: str,
    onnx_file: Path,
    version: int,
    image_size: int,
    num_classes: int,
    labels: list[str],
    max_batch: int,
    io_dtype: str = "fp32",
    instance_count: int = 1,
    max_queue_delay_us: int = 100,
) -> list[str]:
    """A model for Triton's onnxruntime backend (served natively by the NGC tritonserver image).

    KIND_AUTO: on a GPU server ORT runs on the GPU (CUDA EP), on a CPU-only server on the CPU.
    No preferred batch sizes: the batcher should form the largest batch available in the delay.
    Warm-up at batch 1 and max, so the first real request does not pay for allocation.
    """
    inp, out = classifier_io(image_size, num_classes, io_dtype)
    spec = ModelConfigSpec(
        name=name,
        template="onnxruntime",
        max_batch_size=max_batch,
        inputs=[inp],
        outputs=[out],
        max_queue_delay_us=max_queue_delay_us,
        instance_count=instance_count,
        instance_kind="KIND_AUTO",
        warmup=warmups(inp, [1, max_batch]),
    )
    return _write_onnx_model_dir(model_dir, spec, labels, version, onnx_file)


def write_python_onnx_model(
    model_dir: Path,
    name: str,
    onnx_file: Path,
    version: int,
    image_size: int,
    num_classes: int,
    labels: list[str],
    max_batch: int,
    io_dtype: str = "fp32",
    instance_count: int = 1,
    max_queue_delay_us: int = 100,
    intra_op_threads: int = 0,
) -> list[str]:
    """A model for Triton's python backend: generated model.py runs the ONNX file with ORT (CPU).

    Any tritonserver has the python backend, including the CPU-only one in the nvidia-pytriton
    wheel. `intra_op_threads` 0 means "the CPUs the server process may use, shared evenly among
    the instances". Warm-up at batch 1 only: on a CPU a max-batch warm-up costs seconds of load
    time and primes nothing extra.
    """
    inp, out = classifier_io(image_size, num_classes, io_dtype)
    spec = ModelConfigSpec(
        name=name,
        template="python",
        max_batch_size=max_batch,
        inputs=[inp],
        outputs=[out],
        max_queue_delay_us=max_queue_delay_us,
        instance_count=instance_count,
        instance_kind="KIND_CPU",
        warmup=warmups(inp, [1]),
        parameters={"intra_op_threads": str(intra_op_threads)},
        default_model_filename="model.onnx",
    )
    files = _write_onnx_model_dir(model_dir, spec, labels, version, onnx_file)
    code = render_template(
        "python_onnx_model.py.j2", input_name=INPUT_NAME, output_name=OUTPUT_NAME, onnx_file="model.onnx"
    )
    (model_dir / str(version) / "model.py").write_text(code)
    return files + [f"{version}/model.py"]

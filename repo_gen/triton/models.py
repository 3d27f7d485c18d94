"""Writers of the ONNX-serving runtimes: one Triton model directory (config + files), ready to stage.

Each writer has the signature of every runtime writer (`repo_gen.runtimes`): it takes a
`WriteRequest` and returns a `WrittenModel`. Configs come from templates via `render_config`.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from repo_gen.config import DEFAULT_INSTANCES
from repo_gen.results import WriteRequest, WrittenModel
from repo_gen.tasks import LABELS_FILE
from repo_gen.triton.config import ModelConfigSpec, TensorSpec, WarmupSpec
from repo_gen.triton.render import render_config, render_template


def warmups(inp: TensorSpec, batch_sizes: list[int]) -> list[WarmupSpec]:
    return [
        WarmupSpec(f"random_batch_{b}", b, [TensorSpec(inp.name, inp.data_type, inp.dims)])
        for b in sorted(set(batch_sizes))
    ]


def write_config_and_labels(model_dir: Path, spec: ModelConfigSpec, labels: list[str]) -> list[str]:
    """config.pbtxt rendered from `spec` and the labels.txt its outputs' label_filename names."""
    (model_dir / "config.pbtxt").write_text(render_config(spec))
    (model_dir / LABELS_FILE).write_text("\n".join(labels) + "\n", encoding="utf-8")
    return ["config.pbtxt", LABELS_FILE]


def _write_onnx_model_dir(req: WriteRequest, spec: ModelConfigSpec) -> list[str]:
    """config.pbtxt, labels.txt and `<version>/model.onnx`: what both ONNX-serving variants share."""
    files = write_config_and_labels(req.model_dir, spec, req.labels)
    vdir = req.model_dir / str(req.cfg.version)
    vdir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(req.variant.serve_onnx, vdir / "model.onnx")
    return files + [f"{req.cfg.version}/model.onnx"]


def _spec(req: WriteRequest, runtime: str, **kw: object) -> ModelConfigSpec:
    cfg = req.cfg
    return ModelConfigSpec(name=req.name, max_batch_size=cfg.max_batch, inputs=req.inputs, outputs=req.outputs,
                           max_queue_delay_us=cfg.max_queue_delay_us,
                           instance_count=cfg.instance_count or DEFAULT_INSTANCES[runtime], **kw)  # type: ignore[arg-type]


def _written(req: WriteRequest, files: list[str]) -> WrittenModel:
    return WrittenModel(files, "ready", "", req.cfg.max_batch, req.inputs, req.outputs)


def write_onnxruntime_model(req: WriteRequest) -> WrittenModel:
    """A model for Triton's onnxruntime backend (served natively by the NGC tritonserver image).

    KIND_AUTO: on a GPU server ORT runs on the GPU (CUDA EP), on a CPU-only server on the CPU.
    No preferred batch sizes: the batcher should form the largest batch available in the delay.
    Warm-up at batch 1 and max, so the first real request does not pay for allocation.
    """
    spec = _spec(req, "onnx", template="onnxruntime", instance_kind="KIND_AUTO",
                 warmup=warmups(req.inputs[0], [1, req.cfg.max_batch]))
    return _written(req, _write_onnx_model_dir(req, spec))


def write_python_onnx_model(req: WriteRequest, intra_op_threads: int = 0) -> WrittenModel:
    """A model for Triton's python backend: generated model.py runs the ONNX file with ORT (CPU).

    Any tritonserver has the python backend, including the CPU-only one in the nvidia-pytriton
    wheel. `intra_op_threads` 0 means "the CPUs the server process may use, shared evenly among
    the instances". Warm-up at batch 1 and max_batch, the sizes the dynamic batcher forms under
    light and full load (no preferred sizes here): ORT sizes its arena and picks its kernels for
    both before the first real request, which otherwise pays for it at full load.
    """
    spec = _spec(req, "py", template="python", instance_kind="KIND_CPU", warmup=warmups(req.inputs[0], [1, req.cfg.max_batch]),
                 parameters={"intra_op_threads": str(intra_op_threads)}, default_model_filename="model.onnx")
    files = _write_onnx_model_dir(req, spec)
    code = render_template("python_onnx_model.py.j2", input_name=req.inputs[0].name, output_name=req.outputs[0].name,
                           onnx_file="model.onnx")
    (req.model_dir / str(req.cfg.version) / "model.py").write_text(code)
    return _written(req, files + [f"{req.cfg.version}/model.py"])

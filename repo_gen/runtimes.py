"""The runtimes a precision variant can be served by, as a table of writers with one signature.

    write(WriteRequest) -> WrittenModel

"onnx": Triton's onnxruntime backend (NGC image); "py": Triton's python backend running ONNX
Runtime (any tritonserver, the CPU one here); "trt": Triton's tensorrt backend with a TensorRT
plan. A new runtime is one more row here, not a branch in `repo_gen.build`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from repo_gen.results import WriteRequest, WrittenModel

Writer = Callable[[WriteRequest], WrittenModel]


def _onnx(req: WriteRequest) -> WrittenModel:
    from repo_gen.triton.models import write_onnxruntime_model

    return write_onnxruntime_model(req)


def _py(req: WriteRequest) -> WrittenModel:
    from repo_gen.triton.models import write_python_onnx_model

    return write_python_onnx_model(req)


def _trt(req: WriteRequest) -> WrittenModel:
    from repo_gen.trt.repository import write_plan_model

    return write_plan_model(req)


@dataclass(frozen=True)
class Runtime:
    """One row of the table: the Triton backend that serves it and the writer of its model directory."""

    name: str
    backend: str
    write: Writer


RUNTIME_WRITERS: dict[str, Runtime] = {
    "onnx": Runtime("onnx", "onnxruntime", _onnx),
    "py": Runtime("py", "python", _py),
    "trt": Runtime("trt", "tensorrt", _trt),
}

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


def _torch(req: WriteRequest) -> WrittenModel:
    from repo_gen.torch.runtime import write_torch_request

    return write_torch_request(req)


@dataclass(frozen=True)
class Runtime:
    """One row of the table: the Triton backend that serves it and the writer of its model directory.

    `precisions`: the variants it can serve; empty means all.
    """

    name: str
    backend: str
    write: Writer
    precisions: tuple[str, ...] = ()

    def serves(self, precision: str) -> bool:
        return not self.precisions or precision in self.precisions


RUNTIME_WRITERS: dict[str, Runtime] = {
    "onnx": Runtime("onnx", "onnxruntime", _onnx),
    "py": Runtime("py", "python", _py),
    "trt": Runtime("trt", "tensorrt", _trt),
    # PyTorch itself in the python backend, compiled on the GPU (repo_gen/torch/runtime.py); no INT8 path.
    "torch": Runtime("torch", "python", _torch, ("fp32", "fp16")),
}

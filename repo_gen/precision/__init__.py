"""Stage 4: precision variants (FP32, FP16 with FP32 fallback, INT8 Q/DQ), each an ONNX graph.

Everything that decides accuracy is an ONNX graph ONNX Runtime can run on a CPU; the TensorRT
step only compiles it (strongly typed). See ../shared/GUIDE.md section 2.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class PrecisionVariant:
    """One precision of one model.

    Attributes:
        serve_onnx: graph served by the onnxruntime and python backends (the CPU-best layout).
        trt_onnx: graph TensorRT compiles strongly typed (FP16 casts / symmetric int8 Q/DQ).
        io_dtype: "fp32" or "fp16", the dtype of the model's input and output tensors.
        fidelity: comparison with FP32 on the evaluation set (see `repo_gen.compare.fidelity`).
        status: "ready" or "inaccurate" (missed its tolerance).
        report: free-form details of how the variant was made (search steps, kept nodes, timings).
            From `repo_gen.precision.stage`: "table_md" (the build's markdown fidelity table, the
            same in every variant of one build, for the repository README and the console),
            "rows" (this variant's table rows), "fp32_row", "search" (every greedy step),
            "data" (calibration/evaluation sources, skipped files), "tolerance".
    """

    precision: str
    serve_onnx: Path
    trt_onnx: Path
    io_dtype: str = "fp32"
    fidelity: dict = field(default_factory=dict)
    status: str = "ready"
    status_reason: str = ""
    report: dict = field(default_factory=dict)

"""Stage 4: precision variants (FP32, FP16 with FP32 fallback, INT8 Q/DQ), each an ONNX graph.

Everything that decides accuracy is an ONNX graph ONNX Runtime can run on a CPU; the TensorRT
step only compiles it (strongly typed). See ../shared/GUIDE.md section 2.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from repo_gen.results import Fidelity


@dataclass
class PrecisionVariant:
    """One precision of one model.

    Attributes:
        serve_onnx: graph served by the onnxruntime and python backends (the CPU-best layout).
        trt_onnx: graph TensorRT compiles strongly typed (FP16 casts / symmetric int8 Q/DQ).
        io_dtype: "fp32" or "fp16", the dtype of the model's input and output tensors.
        fidelity: `serve_onnx` vs FP32 on the evaluation set; None for FP32 (the reference).
        trt_fidelity: `trt_onnx` vs FP32 (FP16 emulation / TensorRT-form Q/DQ), measured apart
            from the served graph's; None means the same record as `fidelity`.
        status: "ready" or "inaccurate" (missed its tolerance).
        report: details of how the variant was made (search steps, kept nodes, timings).
            From `repo_gen.precision.stage`: "table_md" (the build's markdown fidelity table, the
            same in every variant of one build, for the repository README and the console),
            "rows" (this variant's table rows), "fp32_row", "search" (every greedy step),
            "data" (calibration/evaluation sources, skipped files).
    """

    precision: str
    serve_onnx: Path
    trt_onnx: Path
    io_dtype: str = "fp32"
    fidelity: Fidelity | None = None
    status: str = "ready"
    status_reason: str = ""
    report: dict = field(default_factory=dict)
    trt_fidelity: Fidelity | None = None

    def fidelity_for(self, runtime: str) -> Fidelity | None:
        """The record of the graph `runtime` serves (a plan compiles `trt_onnx`)."""
        if runtime == "trt" and self.trt_fidelity is not None:
            return self.trt_fidelity
        return self.fidelity

    def record(self) -> dict[str, Any]:
        """The manifest's / stage cache's JSON form, without the file paths."""
        return {"precision": self.precision, "status": self.status, "status_reason": self.status_reason,
                "io_dtype": self.io_dtype,
                "fidelity": self.fidelity.to_dict() if self.fidelity else None,
                "trt_fidelity": self.trt_fidelity.to_dict() if self.trt_fidelity else None,
                "report": self.report}

    @classmethod
    def from_record(cls, d: dict[str, Any], serve_onnx: Path, trt_onnx: Path) -> PrecisionVariant:
        return cls(d["precision"], serve_onnx, trt_onnx, d["io_dtype"], Fidelity.from_dict(d.get("fidelity")),
                   d["status"], d["status_reason"], d.get("report") or {}, Fidelity.from_dict(d.get("trt_fidelity")))

"""Stage 4: precision variants (FP32, FP16 with FP32 fallback, INT8 Q/DQ), each an ONNX graph.

Everything that decides accuracy is an ONNX graph ONNX Runtime can run on a CPU; the TensorRT
step only compiles it (strongly typed). See ../shared/GUIDE.md section 2.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from repo_gen.results import Fidelity, Tolerance


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
        """The manifest's / stage cache's JSON form, without the file paths; the tolerance both
        graphs were judged against is recorded once, beside their metrics."""
        tol = next((f.tolerance for f in (self.fidelity, self.trt_fidelity) if f and f.tolerance), None)

        def metrics(f: Fidelity | None) -> dict[str, Any] | None:
            return None if f is None else {"metrics": f.metrics, "graph": f.graph}

        return {"precision": self.precision, "status": self.status, "status_reason": self.status_reason,
                "io_dtype": self.io_dtype, "tolerance": asdict(tol) if tol else None,
                "fidelity": metrics(self.fidelity), "trt_fidelity": metrics(self.trt_fidelity), "report": self.report}

    @classmethod
    def from_record(cls, d: dict[str, Any], serve_onnx: Path, trt_onnx: Path) -> PrecisionVariant:
        tol = Tolerance(**d["tolerance"]) if d.get("tolerance") else None

        def fidelity(f: dict[str, Any] | None) -> Fidelity | None:
            return None if not f else Fidelity(dict(f["metrics"]), tol, str(f.get("graph", "")))

        return cls(d["precision"], serve_onnx, trt_onnx, d["io_dtype"], fidelity(d.get("fidelity")), d["status"],
                   d["status_reason"], d.get("report") or {}, fidelity(d.get("trt_fidelity")))

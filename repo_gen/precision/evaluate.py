"""Evaluators: run a precision variant's graph on images and return logits.

The precision searches only ever call `Evaluator.run(model, x, kind)` (a Protocol), so what
executes the graph can change without touching them. The one implementation is
"onnxruntime-cpu" (`OrtCpuEvaluator`): INT8 Q/DQ graphs run as they are with ORT's
optimizations off (the Q/DQ semantics exactly as written: DequantizeLinear, FP32 op, no fusion
into integer kernels that would add output requantization); FP16 graphs run through
`repo_gen.precision.fp16.emulate_fp16` (FP16 storage, FP32 compute; its docstring says where
that differs from TensorRT's FP16 math).
"""

from __future__ import annotations

import os
from typing import Protocol, runtime_checkable

import numpy as np
import onnx


@runtime_checkable
class Evaluator(Protocol):
    """Runs a graph of a given precision kind ("fp32", "fp16", "int8") on inputs [N,3,H,W]."""

    name: str

    def run(self, model: onnx.ModelProto, x: np.ndarray, kind: str) -> np.ndarray:
        """Logits [N, C] as float32."""
        ...


class OrtCpuEvaluator:
    """ONNX Runtime CPU provider; FP16 graphs are emulated (FP16 storage, FP32 compute)."""

    name = "onnxruntime-cpu"

    def __init__(self, threads: int | None = None, batch: int = 16) -> None:
        """Args:
        threads: intra-op threads; None resolves to min(2, CPUs available).
        batch: images per session.run call.
        """
        self.threads = threads or min(2, len(os.sched_getaffinity(0)))
        self.batch = batch

    def run(self, model: onnx.ModelProto, x: np.ndarray, kind: str) -> np.ndarray:
        from repo_gen.onnx.runner import make_session, run_batches

        if kind == "fp16":
            from repo_gen.precision.fp16 import emulate_fp16

            model = emulate_fp16(model)
        # FP16 emulation: ORT's basic + extended fusions keep every round-trip Cast (checked: output
        # bit-identical to no optimization on mobilevit_s, about 2x faster); the layout (NCHWc) level
        # would fuse Conv+activation across a rounding point, so it is off. INT8 Q/DQ: no
        # optimization at all, so ORT does not fuse Q/DQ into integer kernels (exact Q/DQ semantics).
        optimize: bool | str = True if kind == "fp32" else "extended" if kind == "fp16" else False
        return run_batches(make_session(model, threads=self.threads, optimize=optimize), x, self.batch)

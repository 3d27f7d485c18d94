"""Pluggable evaluators: run a precision variant's graph on images and return logits.

The precision searches only ever call `Evaluator.run(model, x, kind)`, so what executes the graph
is a plug-in:

- "onnxruntime-cpu" (`OrtCpuEvaluator`, here): INT8 Q/DQ graphs run as they are with
  ORT's optimizations off (the Q/DQ semantics exactly as written: DequantizeLinear, FP32 op,
  no fusion into integer kernels that would add output requantization); FP16 graphs run through
  `repo_gen.precision.fp16.emulate_fp16` (FP16 storage, FP32 compute; its docstring says where
  that differs from TensorRT's FP16 math).
- "tensorrt": a hook for the TensorRT module, which registers a factory building an engine
  from the very same ONNX file (strongly typed) and running it:
  `register_evaluator("tensorrt", lambda **kw: MyTrtEvaluator(**kw))`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Protocol, runtime_checkable

import numpy as np
import onnx

from repo_gen.errors import UserError


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


_REGISTRY: dict[str, Callable[..., Evaluator]] = {"onnxruntime-cpu": OrtCpuEvaluator}


def register_evaluator(name: str, factory: Callable[..., Evaluator]) -> None:
    """Make `name` selectable (the TensorRT module registers "tensorrt" where TensorRT imports)."""
    _REGISTRY[name] = factory


def available_evaluators() -> list[str]:
    return sorted(_REGISTRY)


def get_evaluator(name: str | None = None, **kwargs) -> Evaluator:
    """The evaluator `name`; None resolves to "onnxruntime-cpu"."""
    name = name or "onnxruntime-cpu"
    if name not in _REGISTRY:
        raise UserError(f"precision evaluator {name!r}: unknown; available: {', '.join(available_evaluators())}")
    return _REGISTRY[name](**kwargs)

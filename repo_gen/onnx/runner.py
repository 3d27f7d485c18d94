"""ONNX Runtime runner: one session per model file, run in chunks, results as numpy.

Runners only run; judging lives in `repo_gen.compare` (Polygraphy's split), so one FP32
run is reused by every comparison.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort


def make_session(
    model: str | Path | onnx.ModelProto | bytes,
    threads: int | None = None,
    optimize: bool | str = True,
    custom_op_libs: list[str] | None = None,
) -> ort.InferenceSession:
    """Create a CPU session.

    Args:
        threads: intra-op threads; None resolves to the number of CPUs this process may use.
        optimize: ORT graph optimizations: True (all), False (none: keeps emulated FP16 casts and
            Q/DQ pairs exactly in place, and every tensor under its name), or "extended" (basic +
            extended fusions, no layout level: see precision.evaluate).
    """
    levels = {True: ort.GraphOptimizationLevel.ORT_ENABLE_ALL, False: ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
              "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED}
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads or len(os.sched_getaffinity(0))
    so.inter_op_num_threads = 1
    so.graph_optimization_level = levels[optimize]
    so.log_severity_level = 3
    # No busy-waiting between runs: on 2 cores a spinning pool steals time from everything else.
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    for lib in custom_op_libs or []:
        so.register_custom_ops_library(lib)
    if isinstance(model, onnx.ModelProto):
        model = model.SerializeToString()
    elif isinstance(model, Path):
        model = str(model)
    return ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])


def run_batches(session: ort.InferenceSession, x: np.ndarray, batch: int = 16) -> np.ndarray:
    """Run `x` (N,...) through a single-input, single-output session in chunks of `batch`."""
    inp = session.get_inputs()[0]
    want = np.float16 if inp.type == "tensor(float16)" else np.float32
    outs = [
        session.run(None, {inp.name: x[i : i + batch].astype(want, copy=False)})[0].astype(np.float32)
        for i in range(0, len(x), batch)
    ]
    return np.concatenate(outs, axis=0)

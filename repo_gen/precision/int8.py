"""INT8: calibration once, then two Q/DQ graphs from the same ranges.

Quantizer: onnxruntime.quantization (`quantize_static`, QDQ format, calibration cached once and
reused for every graph). NVIDIA ModelOpt was the other candidate named by the issue:
`pip download nvidia-modelopt` resolves (0.47.0, 2026-11-24), but its `[onnx]` extra pins
onnx~=1.21, onnxruntime-gpu~=1.24 and cupy-cuda12x, which would replace this project's onnx 1.22 /
onnxruntime 1.32 CPU stack; it was therefore not installed and not measured here (no fidelity
comparison could be made on this machine; recorded in benchmarks/RESULTS.md "Precision").

**TensorRT form** (`trt_qdq`, the file TensorRT compiles with `--stronglyTyped`). Rules followed,
from the TensorRT Developer Guide, "Working with Quantized Types" > "Explicit Quantization" >
"Q/DQ Layer-Placement Recommendations" (TensorRT 10):

1. "Quantize all inputs of weighted operations (Convolution, Transposed Convolution and GEMM)":
   Q/DQ on the data input and DQ on the int8 weight of every Conv, MatMul and Gemm; both
   inputs of activation-by-activation MatMuls (attention scores / context).
2. "By default, don't quantize the outputs of weighted operations": outputs stay float, so
   TensorRT fuses the following element-wise ops (bias, SiLU, residual Add) into the kernel
   epilogue and chooses the output precision itself.
3. Symmetric quantization, zero point 0, int8 (TensorRT supports only symmetric Q/DQ).
   Weights per-channel on the output-channel axis (Conv: axis 0 = K; MatMul [K, N] weight:
   axis 1 = N; Gemm transB=1: axis 0), activations per-tensor: the only granularities TensorRT's
   Conv/GEMM int8 kernels take.
4. Bias stays float (QuantizeBias=False): TensorRT's DequantizeLinear takes int8/fp8/int4
   inputs, not the int32 bias ONNX Runtime would otherwise write, and TensorRT fuses the bias
   add in float itself.
5. "Quantize the residual input in skip connections" (lets TensorRT fuse Conv+Add in int8) is
   not applied: MobileViT's residual Adds are mostly after MatMul/Conv+SiLU chains that
   TensorRT's Myelin fuses anyway, and adding Q/DQ there costs accuracy for no measured gain
   on this CPU-only machine. Where the search keeps a node in float, its inputs get no Q/DQ.

**CPU form** (`cpu_qdq`, served by ONNX Runtime): uint8 activations (asymmetric), int8
per-channel weights, int32 bias (QDQ format, which ORT fuses into QLinearConv / QLinearMatMul
/ MatMulInteger with its u8s8 VNNI kernels), and the op types that measured fastest on this
CPU (`CPU_OP_TYPES`, numbers next to it); nodes the TensorRT-form search keeps in float stay
float here too.
"""

from __future__ import annotations

import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from repo_gen.log import logger
from repo_gen.onnx.export import INPUT_NAME

QUANT_OP_TYPES = ("Conv", "MatMul", "Gemm")
# CPU form: ORT fuses DQ -> op -> Q into integer kernels (QLinearConv, QLinearMatMul, QLinearAdd,
# QLinearMul, QLinearSigmoid, QLinearConcat, QLinearGlobalAveragePool) and moves Q/DQ through
# data-movement ops, so the conv/transformer body stays uint8 between kernels. Measured on
# mobilevit_s, batch 16, 2 threads, rounds interleaved with FP32 in the same run (FP32 = 1.00x;
# the dev machine was shared, so single figures moved by +-0.15x between runs):
#   Conv/MatMul/Gemm only                                  0.4-0.6x (float tensors between int8 kernels)
#   + Add/Mul/Sigmoid                                       1.3-1.5x
#   + Transpose/Reshape/Split/Squeeze/Unsqueeze/Concat/GAP  1.3-1.7x
#   the same + Softmax                                      1.28x (QLinearSoftmax took 12% of the time,
#                                                           FP32 Softmax 1.7%: Softmax stays float)
#   without SiLU (Sigmoid/Mul float, ORT's QuickGelu)       1.17x
CPU_OP_TYPES = QUANT_OP_TYPES + ("Add", "Mul", "Sigmoid", "Transpose", "Reshape", "Split", "Squeeze",
                                 "Unsqueeze", "Concat", "GlobalAveragePool")
METHODS = {"max": "MinMax", "percentile": "Percentile", "entropy": "Entropy"}


class _Reader:
    """onnxruntime.quantization.CalibrationDataReader over an in-memory [N,3,H,W] array."""

    def __init__(self, x: np.ndarray, input_name: str, batch: int = 16) -> None:
        self.x, self.name, self.batch, self.i = x, input_name, batch, 0

    def get_next(self):
        if self.i >= len(self.x):
            return None
        out = {self.name: self.x[self.i : self.i + self.batch]}
        self.i += self.batch
        return out

    def __len__(self) -> int:
        return -(-len(self.x) // self.batch)

    def set_range(self, start_index: int, end_index: int) -> None:  # CalibStridedMinMax API
        self.i = start_index


def _method(name: str):
    from onnxruntime.quantization import CalibrationMethod

    return getattr(CalibrationMethod, METHODS[name])


def collect_ranges(fp32_path: Path, x: np.ndarray, method: str, work: Path, threads: int | None = None):
    """Run ORT's calibrator over `x`; returns its TensorsData (ranges of every `CPU_OP_TYPES` tensor)."""
    from onnxruntime.quantization.calibrate import create_calibrator

    extra: dict = {}
    if method == "percentile":
        extra["percentile"] = 99.999
    input_name = INPUT_NAME  # every graph repo-gen exports names its input so
    work.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="repo-gen-calib.", dir=work) as tmp:
        calibrator = create_calibrator(
            Path(fp32_path),
            list(CPU_OP_TYPES),
            augmented_model_path=str(Path(tmp) / "augmented.onnx"),
            calibrate_method=_method(method),
            extra_options=extra,
        )
        if threads:
            _limit_threads(calibrator, threads)
        # Chunks of 64 images bound memory: histogram calibrators keep every intermediate tensor of
        # a collect_data call until it returns (MinMax keeps only per-batch min/max), and each call
        # merges into the running ranges/histograms. Within one call every batch has the same size
        # (ORT's histogram collector stacks them).
        for i in range(0, len(x), 64):
            chunk = x[i : i + 64]
            batch = next(b for b in (16, 8, 4, 2, 1) if len(chunk) % b == 0)
            calibrator.collect_data(_Reader(chunk, input_name, batch))
        ranges = calibrator.compute_data()
        del calibrator
    return ranges


def calibrate(fp32_path: Path, x: np.ndarray, method: str, work: Path, threads: int | None = None) -> dict:
    """Collect activation ranges once (inputs/outputs of every `CPU_OP_TYPES` node) into a cache file.

    Both Q/DQ forms are then made from the cache (`quantize_static(calibration_cache_path=...)`)
    with no further calibration runs. Returns {"cache": path, "seconds": s, "images": n, "method": method}.
    """
    from onnxruntime.quantization.calibrate import save_tensors_data

    t0 = time.perf_counter()
    ranges = collect_ranges(fp32_path, x, method, work, threads)
    cache = work / f"calibration_{method}.json"
    save_tensors_data(ranges, cache, smooth_quant=False)
    seconds = round(time.perf_counter() - t0, 2)
    logger.info(f"calibration ({method}, {len(x)} images): {seconds:.1f} s")
    return {"cache": str(cache), "seconds": seconds, "images": int(len(x)), "method": method}


def _limit_threads(calibrator, threads: int) -> None:
    """Recreate the calibrator's session with `threads` intra-op threads (ORT gives it all CPUs).
    No graph optimizations: every calibrated tensor must exist under its name, as ORT does it."""
    from repo_gen.onnx.runner import make_session

    calibrator.infer_session = make_session(Path(calibrator.augmented_model_path), threads, optimize=False)


def _quantize(fp32_path: Path, out: Path, cache: str, method: str, *, symmetric_act: bool, act_uint8: bool,
              quantize_bias: bool, op_types: tuple[str, ...], nodes_to_exclude: list[str],
              exclude_outputs: bool) -> onnx.ModelProto:
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    extra = {
        "ActivationSymmetric": symmetric_act,
        "WeightSymmetric": True,
        "QuantizeBias": quantize_bias,
        # Rule 2: no Q/DQ on outputs of weighted ops unless a quantized consumer needs them.
        "OpTypesToExcludeOutputQuantization": list(QUANT_OP_TYPES) if exclude_outputs else [],
        # Rule 3: per-channel axis of MatMul [K, N] weights is N (the output channel).
        "QDQOpTypePerChannelSupportToAxis": {"MatMul": 1},
    }
    import logging

    ort_log = logging.getLogger()
    level = ort_log.level
    ort_log.setLevel(logging.ERROR)  # quantize_static's "consider pre-processing" warnings
    try:
        quantize_static(
            str(fp32_path),
            str(out),
            calibration_data_reader=None,
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=list(op_types),
            per_channel=True,
            reduce_range=False,
            activation_type=QuantType.QUInt8 if act_uint8 else QuantType.QInt8,
            weight_type=QuantType.QInt8,
            nodes_to_quantize=None,
            nodes_to_exclude=nodes_to_exclude,
            calibrate_method=_method(method),
            calibration_cache_path=cache,
            extra_options=extra,
        )
    finally:
        ort_log.setLevel(level)
    return onnx.load(str(out))


def trt_qdq(fp32_path: Path, out: Path, calib: dict, exclude: list[str] | tuple[str, ...] = ()) -> onnx.ModelProto:
    """TensorRT form: symmetric int8 Q/DQ (see module docstring rules 1-5); `exclude` stays float."""
    return _quantize(fp32_path, out, calib["cache"], calib["method"], symmetric_act=True, act_uint8=False,
                     quantize_bias=False, op_types=QUANT_OP_TYPES, nodes_to_exclude=list(exclude),
                     exclude_outputs=True)


def cpu_qdq(fp32_path: Path, out: Path, calib: dict, exclude: list[str] | tuple[str, ...] = ()) -> onnx.ModelProto:
    """CPU form: uint8 asymmetric activations, int8 per-channel weights, int32 bias, `CPU_OP_TYPES`."""
    return _quantize(fp32_path, out, calib["cache"], calib["method"], symmetric_act=False, act_uint8=True,
                     quantize_bias=True, op_types=CPU_OP_TYPES, nodes_to_exclude=list(exclude),
                     exclude_outputs=False)


# ----------------------------------------------------------------------------- node kinds / groups


def node_kinds(model: onnx.ModelProto) -> dict[str, str]:
    """Kind of every quantizable node: conv (dense), dwconv (group > 1), linear (MatMul/Gemm with a
    weight), attn_matmul (both inputs computed), head (the last weighted node)."""
    inits = {i.name for i in model.graph.initializer}
    kinds = {}
    for n in model.graph.node:
        if n.op_type == "Conv":
            group = next((a.i for a in n.attribute if a.name == "group"), 1)
            kinds[n.name] = "dwconv" if group > 1 else "conv"
        elif n.op_type in ("MatMul", "Gemm"):
            kinds[n.name] = "linear" if any(i in inits for i in n.input[:2]) else "attn_matmul"
    weighted = [n.name for n in model.graph.node if n.op_type in QUANT_OP_TYPES]
    if weighted and kinds.get(weighted[-1]) in ("linear", "conv"):
        kinds[weighted[-1]] = "head"
    return kinds


def int8_candidates(model: onnx.ModelProto) -> dict[str, list[str]]:
    """Groups the INT8 search may keep in float: node kind x top-level module, plus the stem and head."""
    from repo_gen.precision.fp16 import scope

    groups: dict[str, list[str]] = defaultdict(list)
    for name, kind in node_kinds(model).items():
        groups[f"{kind}@{scope(name)}"].append(name)
    return dict(groups)


def check_trt_rules(model: onnx.ModelProto) -> list[str]:
    """Violations of the TensorRT Q/DQ rules in a graph (empty list = fine). Used by tests and builds.

    Checks: every Q/DQ is int8 with zero point 0; weight DQs are per-channel on the output-channel
    axis of the consuming Conv (0) / MatMul (1); activation Q/DQs are per-tensor (scalar scale);
    no int32 (bias) DequantizeLinear; no Q/DQ on an output of a Conv/MatMul/Gemm.
    """
    g = model.graph
    inits = {i.name: i for i in g.initializer}
    producers = {o: n for n in g.node for o in n.output}
    consumers: dict[str, list] = defaultdict(list)
    for n in g.node:
        for i in n.input:
            consumers[i].append(n)
    bad = []
    for n in g.node:
        if n.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        zp = inits.get(n.input[2]) if len(n.input) > 2 and n.input[2] else None
        if zp is None and n.op_type == "QuantizeLinear":
            bad.append(f"{n.name}: no zero point (defaults to uint8)")
        if zp is not None:
            if zp.data_type != onnx.TensorProto.INT8:
                bad.append(f"{n.name}: zero point type {onnx.TensorProto.DataType.Name(zp.data_type)}, not INT8")
            elif np.any(numpy_helper.to_array(zp) != 0):
                bad.append(f"{n.name}: nonzero zero point")
        scale = inits.get(n.input[1])
        axis = next((a.i for a in n.attribute if a.name == "axis"), 1)
        is_weight = n.op_type == "DequantizeLinear" and n.input[0] in inits
        if is_weight:
            w = inits[n.input[0]]
            if w.data_type == onnx.TensorProto.INT32:
                bad.append(f"{n.name}: int32 (bias) DequantizeLinear; TensorRT takes int8 only")
                continue
            users = consumers[n.output[0]]
            for u in users:
                want = 0 if u.op_type == "Conv" else 1 if u.op_type == "MatMul" else None
                if u.op_type == "Gemm":
                    trans_b = next((a.i for a in u.attribute if a.name == "transB"), 0)
                    want = 0 if trans_b else 1
                if scale is not None and len(scale.dims) == 1 and scale.dims[0] > 1:
                    if want is not None and axis != want:
                        bad.append(f"{n.name}: weight axis {axis}, want {want} for {u.op_type}")
                else:
                    bad.append(f"{n.name}: weight scale is per-tensor, want per-channel")
        elif scale is not None and any(d != 1 for d in scale.dims):
            bad.append(f"{n.name}: activation scale is not per-tensor")
        if n.op_type == "QuantizeLinear":
            # Rule 2: a Q/DQ on a weighted op's output is fine only as the input Q/DQ of a
            # quantized weighted consumer (rule 1).
            src = producers.get(n.input[0])
            users = [u for d in consumers[n.output[0]] for u in consumers[d.output[0]]]
            # A shared Q/DQ that also feeds a residual Add is TensorRT's "quantize the residual input".
            if src is not None and src.op_type in QUANT_OP_TYPES and not any(u.op_type in QUANT_OP_TYPES for u in users):
                bad.append(f"{n.name}: quantizes the output of {src.op_type} {src.name} with no weighted consumer")
    return bad


def quantized_nodes(model: onnx.ModelProto) -> list[str]:
    """Conv/MatMul/Gemm nodes whose first input comes from a DequantizeLinear."""
    producers = {o: n for n in model.graph.node for o in n.output}
    out = []
    for n in model.graph.node:
        if n.op_type in QUANT_OP_TYPES:
            p = producers.get(n.input[0])
            if p is not None and p.op_type == "DequantizeLinear":
                out.append(n.name)
    return out

"""FP16: a strongly typed FP16 graph with a chosen set of nodes kept in FP32, and its CPU emulation.

`Fp16FromFp32` rewrites the FP32 graph itself (no onnxconverter-common: its generic conversion
produced a graph ONNX Runtime refused to load, "Cast output type mismatch" in MobileViT's
attention, see GUIDE section 4). The rules:

- Every node computes in the precision it is assigned: FP16 by default, FP32 for `keep_fp32`
  and for ops whose ONNX schema has no float16 type (e.g. Range). Every float input of a node
  arrives in that precision; where producer and consumer differ, one Cast is inserted per
  (tensor, dtype) and shared by all consumers. The result is what TensorRT's `--stronglyTyped`
  mode wants: every tensor's type is stated in the file, no builder flag decides anything.
- Float initializers are stored in the precision of their consumers (converted in the file, not
  by a Cast at run time; clipped to +-65504). One consumed by both kinds is stored twice.
- Type-carrying attributes follow the node: Cast(to=FLOAT) becomes Cast(to=FLOAT16) in an FP16
  node, ConstantOfShape/Constant values are converted. Inputs that ONNX requires to be float32
  whatever the data type (Resize roi/scales) stay float32.
- Graph inputs/outputs have `io_dtype` (FP32 by default: a Cast right after the input and right
  before the output, which TensorRT fuses into the neighbouring kernels).

`emulate_fp16` turns any such graph into an FP32 graph that ONNX Runtime's CPU provider runs
with FP16 *storage* semantics: every tensor that is FP16 in the real graph is rounded to FP16
(Cast to FLOAT16 and back) right where it is produced, weights hold their FP16 values, and each
op computes in FP32 on those rounded values. How this differs from TensorRT FP16 math:

- Conv/MatMul/Gemm: TensorRT's FP16 tensor-core kernels also multiply FP16 values and
  accumulate in FP32 (the default for its FP16 tactics), so only summation order differs.
- Element-wise ops: a single FP16 op is correctly rounded in both. TensorRT fuses chains of
  point-wise ops (Myelin) and may keep the intermediates in FP32 registers; the emulation
  rounds after each op, so it is slightly pessimistic there.
- Reductions, LayerNormalization, Softmax in FP16: the emulation computes them in FP32 and
  rounds only the result; a TensorRT kernel may accumulate in FP16 (and can overflow on a
  large sum of squares). This is the one place where the emulation can be optimistic, which is
  why those ops are fallback candidates (an evaluator running TensorRT itself would implement the
  `repo_gen.precision.evaluate.Evaluator` protocol; none exists yet).
"""

from __future__ import annotations

import copy
from collections import defaultdict

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from repo_gen.errors import BuildFailure
from repo_gen.log import logger

FLOAT, FLOAT16 = TensorProto.FLOAT, TensorProto.FLOAT16
FP16_MAX = 65504.0
# Inputs ONNX types as float32 whatever the data type is.
_FLOAT32_ONLY_INPUTS = {"Resize": {1, 2}, "Upsample": {1}}


def _has_fp16(op: str, domain: str, opset: int) -> bool:
    """Whether the op's schema (at `opset`) accepts float16 for its data inputs."""
    try:
        schema = onnx.defs.get_schema(op, opset, domain or "")
    except Exception:  # custom / contrib op: assume it handles both, as TensorRT plugins do
        return True
    constraints = schema.type_constraints
    if not constraints:
        return True
    return any("tensor(float16)" in c.allowed_type_strs for c in constraints)


def tensor_types(model: onnx.ModelProto) -> dict[str, int]:
    """Element type of every tensor in the graph, from shape inference plus inputs/outputs/initializers."""
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    g = inferred.graph
    types = {}
    for vi in [*g.input, *g.output, *g.value_info]:
        if vi.type.HasField("tensor_type"):
            types[vi.name] = vi.type.tensor_type.elem_type
    for init in g.initializer:
        types[init.name] = init.data_type
    return types


def forced_fp32_nodes(model: onnx.ModelProto) -> set[str]:
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 17)
    return {n.name for n in model.graph.node if not _has_fp16(n.op_type, n.domain, opset)}


def _to_fp16_array(arr: np.ndarray) -> np.ndarray:
    return np.clip(arr, -FP16_MAX, FP16_MAX).astype(np.float16)


def _convert_tensor_attr(t: TensorProto, to: int) -> TensorProto:
    arr = numpy_helper.to_array(t)
    arr = _to_fp16_array(arr) if to == FLOAT16 else arr.astype(np.float32)
    out = numpy_helper.from_array(arr, t.name)
    return out


def fp16_from_fp32(model: onnx.ModelProto, keep_fp32: set[str] | frozenset[str] = frozenset(),
                   io_dtype: str = "fp32") -> onnx.ModelProto:
    """Strongly typed FP16 copy of the FP32 `model` (see the module docstring for the rules).

    Args:
        keep_fp32: names of nodes computed in FP32.
        io_dtype: "fp32" or "fp16", the type of the graph's float inputs and outputs.
    """
    m = copy.deepcopy(model)
    g = m.graph
    for n in g.node:
        if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in n.attribute):
            # If/Loop/Scan subgraphs would need their own typed rewrite; exported vision classifiers
            # (MobileViT included) have none, so this is a guard for other models, not a stub.
            raise BuildFailure(
                f"FP16 conversion: control-flow node {n.name} ({n.op_type}) has a subgraph, which the FP16 "
                "rewrite does not handle; build with --precisions fp32,int8"
            )
    types = tensor_types(model)
    fp32_nodes = set(keep_fp32) | forced_fp32_nodes(model)
    io = FLOAT16 if io_dtype == "fp16" else FLOAT

    inits = {i.name: i for i in g.initializer}
    float_inits = {k for k, v in inits.items() if v.data_type == FLOAT}
    new_inits: list[TensorProto] = [v for k, v in inits.items() if k not in float_inits]
    init_versions: dict[tuple[str, int], str] = {}

    def init_as(name: str, dtype: int) -> str:
        key = (name, dtype)
        if key not in init_versions:
            arr = numpy_helper.to_array(inits[name])
            if dtype == FLOAT16:
                new_name = name if not any(k[0] == name for k in init_versions) else f"{name}__fp16"
                new_inits.append(numpy_helper.from_array(_to_fp16_array(arr), new_name))
            else:
                new_name = name if not any(k[0] == name for k in init_versions) else f"{name}__fp32"
                new_inits.append(numpy_helper.from_array(arr.astype(np.float32), new_name))
            init_versions[key] = new_name
        return init_versions[key]

    # available[(tensor, dtype)] -> name of a tensor holding that value in that dtype
    available: dict[tuple[str, int], str] = {}
    graph_outputs = {o.name for o in g.output}
    for inp in g.input:
        if types.get(inp.name) == FLOAT:
            available[(inp.name, io)] = inp.name
            inp.type.tensor_type.elem_type = io
    new_nodes: list[onnx.NodeProto] = []
    casts = 0

    def fetch(name: str, dtype: int) -> str:
        nonlocal casts
        if name in float_inits:
            return init_as(name, dtype)
        if (name, dtype) in available:
            return available[(name, dtype)]
        other = FLOAT if dtype == FLOAT16 else FLOAT16
        src = available.get((name, other))
        if src is None:
            raise RuntimeError(f"fp16_from_fp32: tensor {name!r} used before it is produced (graph not sorted?)")
        out = f"{name}__{'fp16' if dtype == FLOAT16 else 'fp32'}"
        new_nodes.append(helper.make_node("Cast", [src], [out], name=f"{out}__cast", to=dtype))
        casts += 1
        available[(name, dtype)] = out
        return out

    for node in g.node:
        dtype = FLOAT if node.name in fp32_nodes else FLOAT16
        keep32 = _FLOAT32_ONLY_INPUTS.get(node.op_type, set())
        for i, name in enumerate(node.input):
            if name and types.get(name) == FLOAT:
                node.input[i] = fetch(name, FLOAT if i in keep32 else dtype)
        for a in node.attribute:
            if node.op_type == "Cast" and a.name == "to" and a.i in (FLOAT, FLOAT16):
                a.i = dtype
            elif a.type == onnx.AttributeProto.TENSOR and a.t.data_type in (FLOAT, FLOAT16):
                a.t.CopyFrom(_convert_tensor_attr(a.t, dtype))
        for i, name in enumerate(node.output):
            if not name or types.get(name) not in (FLOAT, FLOAT16):
                continue
            out_dtype = dtype
            if node.op_type == "Cast":
                out_dtype = next(a.i for a in node.attribute if a.name == "to")
            elif types.get(name) == FLOAT16:
                out_dtype = FLOAT16
            if name in graph_outputs and out_dtype != io:
                renamed = f"{name}__{'fp16' if out_dtype == FLOAT16 else 'fp32'}"
                node.output[i] = renamed
                available[(name, out_dtype)] = renamed
            else:
                available[(name, out_dtype)] = name
        new_nodes.append(node)

    for out in g.output:
        if types.get(out.name) == FLOAT or out.type.tensor_type.elem_type == FLOAT:
            if (out.name, io) not in available or available[(out.name, io)] != out.name:
                src = fetch(out.name, FLOAT16 if io == FLOAT else FLOAT)
                new_nodes.append(helper.make_node("Cast", [src], [out.name], name=f"{out.name}__cast_out", to=io))
                casts += 1
            out.type.tensor_type.elem_type = io
    del g.node[:]
    g.node.extend(new_nodes)
    del g.initializer[:]
    g.initializer.extend(new_inits)
    del g.value_info[:]
    m = onnx.shape_inference.infer_shapes(m, check_type=True, strict_mode=True)
    onnx.checker.check_model(m)
    n_fp32 = sum(1 for n in model.graph.node if n.name in fp32_nodes)
    logger.debug(f"fp16_from_fp32: {len(model.graph.node)} -> {len(m.graph.node)} nodes "
                 f"({n_fp32} kept FP32, {casts} Casts, io {io_dtype})")
    return m


def node_dtypes(model: onnx.ModelProto) -> dict[str, str]:
    """'fp16' / 'fp32' / '-' per node: the float type of its outputs (for checks and reports)."""
    types = tensor_types(model)
    out = {}
    for n in model.graph.node:
        ts = {types.get(o) for o in n.output} & {FLOAT, FLOAT16}
        out[n.name] = "fp16" if ts == {FLOAT16} else "fp32" if ts == {FLOAT} else "mixed" if ts else "-"
    return out


def emulate_fp16(model: onnx.ModelProto) -> onnx.ModelProto:
    """FP32 graph with FP16 storage semantics (see module docstring); run it with ORT optimizations off."""
    m = copy.deepcopy(model)
    g = m.graph
    types = tensor_types(model)
    inits = list(g.initializer)
    del g.initializer[:]
    for t in inits:
        if t.data_type == FLOAT16:
            t = numpy_helper.from_array(numpy_helper.to_array(t).astype(np.float32), t.name)
        g.initializer.append(t)
    graph_outputs = {o.name for o in g.output}
    rename: dict[str, str] = {}
    new_nodes = []
    for inp in g.input:
        if inp.type.tensor_type.elem_type == FLOAT16:
            rename[inp.name] = f"{inp.name}__emu32"
            new_nodes.append(helper.make_node("Cast", [inp.name], [rename[inp.name]], name=f"{inp.name}__emu_in", to=FLOAT))
    for node in g.node:
        for i, name in enumerate(node.input):
            if name in rename:
                node.input[i] = rename[name]
        for a in node.attribute:
            if node.op_type == "Cast" and a.name == "to" and a.i == FLOAT16:
                a.i = FLOAT
            elif a.type == onnx.AttributeProto.TENSOR and a.t.data_type == FLOAT16:
                a.t.CopyFrom(_convert_tensor_attr(a.t, FLOAT))
        tails = []
        for i, name in enumerate(node.output):
            if types.get(name) != FLOAT16:
                continue
            raw = f"{name}__emu_raw"
            node.output[i] = raw
            if name in graph_outputs:
                tails.append(helper.make_node("Cast", [raw], [name], name=f"{name}__emu_out", to=FLOAT16))
            else:
                mid = f"{name}__emu_h"
                tails.append(helper.make_node("Cast", [raw], [mid], name=f"{name}__emu_r16", to=FLOAT16))
                tails.append(helper.make_node("Cast", [mid], [name], name=f"{name}__emu_r32", to=FLOAT))
        new_nodes.append(node)
        new_nodes.extend(tails)
    del g.node[:]
    g.node.extend(new_nodes)
    del g.value_info[:]
    return onnx.shape_inference.infer_shapes(m, check_type=True, strict_mode=True)


# ----------------------------------------------------------------------------- fallback candidates

_NORM_MATH = {"Pow", "Sqrt", "Div", "Reciprocal", "Sub"}
_REDUCE = {"ReduceMean", "ReduceSum", "ReduceL2", "ReduceSumSquare", "ReduceMax", "GlobalAveragePool"}


def scope(name: str) -> str:
    """Top-level module of a node from the torch exporter's name: its path up to the first
    numbered component ('/stages/stages.2/stages.2.1/...' -> 'stages.2', '/head/fc/Gemm' -> 'head')."""
    parts = [p for p in name.split("/") if p][:-1]
    for p in parts:
        if any(c.isdigit() for c in p):
            return p
    return parts[0] if parts else "graph"


def _numel(vi: onnx.ValueInfoProto) -> int | None:
    dims = vi.type.tensor_type.shape.dim
    if not vi.type.tensor_type.HasField("shape"):
        return None
    n = 1
    for d in dims:
        if not d.HasField("dim_value"):
            return None
        n *= d.dim_value
    return n


def fp16_candidates(model: onnx.ModelProto) -> dict[str, list[str]]:
    """Node groups the FP16 search may keep in FP32: category x top-level module.

    Categories: LayerNormalization, Softmax, reductions, residual Adds (both inputs computed),
    norm arithmetic (Pow/Sqrt/Div/Reciprocal/Sub, as in decomposed norms), activation-by-activation
    MatMuls (attention scores and context), and the classifier head (last Gemm/MatMul).
    """
    g = model.graph
    inits = {i.name for i in g.initializer}
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False).graph
    numel = {vi.name: _numel(vi) for vi in inferred.value_info}
    groups: dict[str, list[str]] = defaultdict(list)
    weighted = [n for n in g.node if n.op_type in ("Gemm", "MatMul", "Conv")]
    head = weighted[-1].name if weighted else None
    for n in g.node:
        cat = None
        if n.name == head:
            cat = "head"
        elif n.op_type in ("LayerNormalization", "GroupNormalization", "InstanceNormalization"):
            cat = "norm"
        elif n.op_type == "Softmax":
            cat = "softmax"
        elif n.op_type in _REDUCE:
            cat = "reduce"
        elif n.op_type == "Add" and len(n.input) == 2 and not any(i in inits for i in n.input):
            cat = "residual_add"
        elif n.op_type in _NORM_MATH and all((numel.get(o) or 2) > 1 for o in n.output):
            cat = "norm_math"  # scalar arithmetic (e.g. the attention scale from a Shape) is left out
        elif n.op_type == "MatMul" and not any(i in inits for i in n.input):
            cat = "attn_matmul"
        if cat:
            groups[f"{cat}@{scope(n.name)}"].append(n.name)
    return dict(groups)

"""Numpy references of the two plugin ops, run inside ONNX Runtime as onnxruntime-extensions Python ops.

This proves the graph rewrite (`repo_gen.onnx.plugin_rewrite`) on a CPU: the rewritten graph,
with the plugin nodes computed by these references, must give the original graph's outputs.

onnxruntime-extensions' Python ops (`onnx_op` / `PyCustomOpDef`, 0.15) impose three things the
TensorRT contract does not, so the check runs on a copy made by `reference_model`:

* Domain: Python ops live in the extensions' own domain (`default_opset_domain()`,
  "ai.onnx.contrib"); there is no way to register them under `trt.plugins`. The copy swaps the
  domain of the plugin nodes and its opset_import entry.
* Attributes: only INT, FLOAT and STRING attributes can be declared, not FLOATS. The copy
  stores `gamma`/`beta` as STRING attributes holding the float32 bytes (base64), so the values
  are bit-identical and the node keeps its single input.
* Types: float16 is not a Python-op type ("Type float16 not supported by python customops api"),
  and one op type has one input signature. FP16 plugin nodes get a Cast to float32 before and a
  Cast back to float16 after (the reference computes in float32, as the FP16 plugins accumulate
  and normalise in FP32), and the two attention layouts become two op types
  (`MobileViTAttentionPacked`, 1 input; `MobileViTAttentionSeparate`, 3 inputs).

The references compute in float64 and return float32.
"""

from __future__ import annotations

import base64
import copy

import numpy as np
import onnx
from onnx import TensorProto, helper

from repo_gen.compare import max_relative_error
from repo_gen.onnx.plugin_rewrite import ATTENTION_OP, DOMAIN, LAYERNORM_OP, plugin_nodes

_REGISTERED = False
PACKED_OP = f"{ATTENTION_OP}Packed"
SEPARATE_OP = f"{ATTENTION_OP}Separate"


# ----------------------------------------------------------------------------- numpy references


def layer_norm(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, epsilon: float) -> np.ndarray:
    """(x - mean) / sqrt(var + eps) * gamma + beta over the last axis (biased variance)."""
    x64 = x.astype(np.float64)
    mean = x64.mean(axis=-1, keepdims=True)
    var = ((x64 - mean) ** 2).mean(axis=-1, keepdims=True)
    y = (x64 - mean) / np.sqrt(var + np.float64(np.float32(epsilon))) * gamma.astype(np.float64) + beta.astype(np.float64)
    return y.astype(np.float32)


def attention(q: np.ndarray, k: np.ndarray, v: np.ndarray, scale: float) -> np.ndarray:
    """softmax((q * scale) k^T) v over the last two axes ([..., N, hd] each)."""
    s = (q.astype(np.float64) * np.float64(np.float32(scale))) @ np.swapaxes(k.astype(np.float64), -1, -2)
    s -= s.max(axis=-1, keepdims=True)
    p = np.exp(s)
    p /= p.sum(axis=-1, keepdims=True)
    return (p @ v.astype(np.float64)).astype(np.float32)


def packed_attention(qkv: np.ndarray, scale: float, num_heads: int) -> np.ndarray:
    """Layout 1: qkv [B, N, 3*H*hd] with channels (3, H, hd) -> [B, N, H*hd] with channels (H, hd)."""
    b, n, c = qkv.shape
    if c % (3 * num_heads):
        raise ValueError(f"packed attention: last dimension {c} is not divisible by 3 * num_heads ({num_heads})")
    hd = c // (3 * num_heads)
    t = qkv.reshape(b, n, 3, num_heads, hd).transpose(2, 0, 3, 1, 4)  # [3, B, H, N, hd]
    o = attention(t[0], t[1], t[2], scale)  # [B, H, N, hd]
    return o.transpose(0, 2, 1, 3).reshape(b, n, num_heads * hd)


def encode_floats(values: np.ndarray | list[float]) -> str:
    return base64.b64encode(np.asarray(values, dtype="<f4").tobytes()).decode("ascii")


def decode_floats(text: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(text), dtype="<f4")


# ----------------------------------------------------------------------------- ORT Python ops


def register() -> str:
    """Register the reference ops with onnxruntime-extensions (once per process); returns the
    custom op library path to load into a session."""
    global _REGISTERED
    from onnxruntime_extensions import PyCustomOpDef, get_library_path, onnx_op

    if not _REGISTERED:
        f32, i64, s = PyCustomOpDef.dt_float, PyCustomOpDef.dt_int64, PyCustomOpDef.dt_string
        common = {"plugin_version": s, "plugin_namespace": s}

        @onnx_op(op_type=LAYERNORM_OP, inputs=[f32], outputs=[f32],
                 attrs={"epsilon": f32, "gamma": s, "beta": s, **common})
        def _layer_norm(x, epsilon, gamma, beta, **_):  # type: ignore[no-untyped-def]
            return layer_norm(x, decode_floats(gamma), decode_floats(beta), epsilon)

        @onnx_op(op_type=PACKED_OP, inputs=[f32], outputs=[f32],
                 attrs={"scale": f32, "layout": i64, "num_heads": i64, **common})
        def _packed(qkv, scale, num_heads, **_):  # type: ignore[no-untyped-def]
            return packed_attention(qkv, scale, num_heads)

        @onnx_op(op_type=SEPARATE_OP, inputs=[f32, f32, f32], outputs=[f32],
                 attrs={"scale": f32, "layout": i64, "num_heads": i64, **common})
        def _separate(q, k, v, scale, **_):  # type: ignore[no-untyped-def]
            if q.shape != k.shape or q.shape != v.shape:
                raise ValueError(f"separate attention: Q {q.shape}, K {k.shape}, V {v.shape} differ")
            return attention(q, k, v, scale)

        _REGISTERED = True
    return str(get_library_path())


def reference_model(model: onnx.ModelProto) -> onnx.ModelProto:
    """Copy of a rewritten model that ONNX Runtime runs with the reference ops (see module docstring)."""
    from onnxruntime_extensions import default_opset_domain

    from repo_gen.precision.fp16 import tensor_types

    contrib = default_opset_domain()
    m = copy.deepcopy(model)
    g = m.graph
    types = tensor_types(model)
    nodes: list[onnx.NodeProto] = []
    for node in g.node:
        if node.domain != DOMAIN:
            nodes.append(node)
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        for a in ("gamma", "beta"):
            if a in attrs:
                attrs[a] = encode_floats(list(attrs[a]))
        for a in ("plugin_version", "plugin_namespace"):
            v = attrs.get(a, b"1" if a == "plugin_version" else b"")
            attrs[a] = v.decode() if isinstance(v, bytes) else v
        if node.op_type == ATTENTION_OP:
            attrs.setdefault("layout", 0)
            attrs.setdefault("num_heads", 0)
            op = PACKED_OP if attrs["layout"] == 1 else SEPARATE_OP
        else:
            op = node.op_type
        inputs, outputs = list(node.input), list(node.output)
        pre: list[onnx.NodeProto] = []
        post: list[onnx.NodeProto] = []
        for i, name in enumerate(inputs):
            if types.get(name) == TensorProto.FLOAT16:
                inputs[i] = f"{name}__ref32_{node.name}"
                pre.append(helper.make_node("Cast", [name], [inputs[i]], name=f"{inputs[i]}__cast", to=TensorProto.FLOAT))
        for i, name in enumerate(outputs):
            if types.get(name) == TensorProto.FLOAT16:
                outputs[i] = f"{name}__ref32"
                post.append(helper.make_node("Cast", [outputs[i]], [name], name=f"{name}__cast16", to=TensorProto.FLOAT16))
        nodes += pre
        nodes.append(helper.make_node(op, inputs, outputs, name=node.name, domain=contrib, **attrs))
        nodes += post
    del g.node[:]
    g.node.extend(nodes)
    opsets = [o for o in m.opset_import if o.domain not in (DOMAIN, contrib)]
    del m.opset_import[:]
    m.opset_import.extend([*opsets, helper.make_opsetid(contrib, 1)])
    return m


def reference_session(model: onnx.ModelProto, threads: int | None = None):  # type: ignore[no-untyped-def]
    """ONNX Runtime CPU session running the rewritten `model` with the reference plugin ops."""
    from repo_gen.onnx.runner import make_session

    lib = register()
    return make_session(reference_model(model), threads=threads, custom_op_libs=[lib])


def apply_node(node: onnx.NodeProto, inputs: list[np.ndarray]) -> np.ndarray:
    """The numpy reference of one plugin node (contract attributes) on float32 `inputs`."""
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    if node.op_type == LAYERNORM_OP:
        return layer_norm(inputs[0], np.asarray(attrs["gamma"], np.float32), np.asarray(attrs["beta"], np.float32),
                          attrs.get("epsilon", 1e-5))
    if node.op_type == ATTENTION_OP:
        if attrs.get("layout", 0) == 1:
            return packed_attention(inputs[0], attrs["scale"], attrs["num_heads"])
        return attention(inputs[0], inputs[1], inputs[2], attrs["scale"])
    raise ValueError(f"{node.name}: {node.op_type} is not a plugin op")


def node_errors(native: onnx.ModelProto, rewritten: onnx.ModelProto, feeds: dict[str, np.ndarray],
                threads: int | None = None) -> dict[str, float]:
    """Local check of every plugin node of `rewritten`: the reference applied to the values the
    *native* graph computes for the node's inputs, against the native value of its output
    (max|ref - native| / max|native|). The rewrite keeps tensor names, so both are found in
    `native`. Unlike an end-to-end comparison this does not drift (an int8 rounding flipped by a
    1e-7 difference upstream changes everything after it), so it also proves Q/DQ graphs.
    """
    from repo_gen.onnx.runner import make_session
    from repo_gen.precision.fp16 import tensor_types

    types = tensor_types(native)
    nodes = plugin_nodes(rewritten)
    names = list(dict.fromkeys(t for n in nodes for t in [*n.input, *n.output]))
    missing = [t for t in names if t not in types]
    if missing:
        raise ValueError(f"tensors of the plugin nodes not found in the native graph: {missing[:5]}")
    exposed = copy.deepcopy(native)
    known = {o.name for o in exposed.graph.output}
    exposed.graph.output.extend(helper.make_tensor_value_info(t, types[t], None) for t in names if t not in known)
    values = dict(zip(names, make_session(exposed, threads=threads).run(names, feeds), strict=True))
    errors = {}
    for n in nodes:
        ref = values[n.output[0]].astype(np.float32)
        out = apply_node(n, [values[i].astype(np.float32) for i in n.input])
        errors[n.name] = max_relative_error(ref, out)
    return errors

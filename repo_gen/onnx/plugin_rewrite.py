"""Replace MobileViT's LayerNorms and attention blocks with the TensorRT plugin nodes of `plugins/`.

The node contract (op type, domain, attributes) is `plugins/*/*.yaml`; TensorRT's ONNX parser
finds each creator by op type, `plugin_version` and `plugin_namespace`, and hands every listed
attribute to it as a PluginField.

* `LayerNormalization(X, Scale, B, axis=-1)` with constant Scale/B and 16 <= d <= 1024
  -> `MobileViTLayerNorm(X)`, attributes epsilon, gamma, beta (float32 values, also in FP16
  graphs: the creator reads kFLOAT32 fields).
* Attention, anchored on each Softmax, as timm's MobileViT exports it at opset 17 (fused SDPA
  path, TorchScript exporter; a Shape-derived sqrt(1/sqrt(hd)) on both Q and K^T):

      QKV [B,N,3*H*hd] -> Reshape [B,N,3,H,hd] -> Transpose(2,0,3,1,4) -> Split(axis 0) | Gather
        q -> Squeeze -> [Mul a]                      \\
        k -> Squeeze -> Transpose(0,1,3,2) -> [Mul b] -> MatMul -> Softmax(-1) -> MatMul -> Transpose(0,2,1,3)
        v -> Squeeze ------------------------------------------------------------/           -> Reshape [B,N,H*hd]

  -> `MobileViTAttention(QKV)`, layout 1 (packed), num_heads H, scale a*b. Where only the core
  matches (Q, K, V from anything, `Q*a`, `Transpose(K)*b`, either Mul absent), layout 0 with the
  three [B,H,N,hd] tensors. The scale factors are evaluated from the graph (constants, or the
  exporter's Shape -> Slice -> Cast -> Sqrt -> Div -> Sqrt chain on a static head dim), in the
  graph's own dtype, so an FP16 graph's rounded factors are what the plugin gets.

Anything else is left native, counted and reported with its reason (`plugin_rewrite_report`).

Precision variants (see `repo_gen/precision/`):

* FP16 (strongly typed, `fp16_from_fp32`): every plugin node takes the dtype of the tensors it
  replaces, so FP16 nodes become FP16 plugin nodes and FP32-fallback LayerNorms become FP32
  plugin nodes between the variant's own Casts. An attention block whose nodes do not share one
  dtype (a Cast inside the pattern: the search kept its Softmax or a MatMul in FP32) is left
  native: the plugin takes one dtype for all its tensors.
* INT8, TensorRT form (`trt_qdq`): LayerNorms are rewritten (Q/DQ sits on the MatMul inputs
  after them, not inside). Attention blocks with Q/DQ on their MatMul inputs are left native,
  since the plugin has no int8 I/O and replacing them would drop the quantization TensorRT fuses
  into its own attention; blocks the INT8 search kept in float are rewritten (FP32 plugin).

The pass keeps the model's opsets, adds `trt.plugins` v1, and records the counts as JSON in the
model's `metadata_props` (key `METADATA_KEY`), so the file says what was replaced.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from repo_gen.log import logger

DOMAIN = "trt.plugins"
DOMAIN_VERSION = 1
LAYERNORM_OP = "MobileViTLayerNorm"
ATTENTION_OP = "MobileViTAttention"
PLUGIN_VERSION = "1"
PLUGIN_NAMESPACE = ""
LAYERNORM_D = (16, 1024)
ATTENTION_N = (1, 1024)
ATTENTION_HD = (16, 64)
METADATA_KEY = "repo_gen.plugin_rewrite"


class _NoMatch(Exception):
    """A pattern did not match; the message is the reason recorded in the report."""


@dataclass
class RewriteCounts:
    """What one rewrite did for one plugin."""

    found: int = 0
    replaced: int = 0
    layouts: dict[str, int] = field(default_factory=dict)
    dtypes: dict[str, int] = field(default_factory=dict)
    left_native: list[dict[str, str]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"found": self.found, "replaced": self.replaced, "left_native": len(self.left_native),
                "layouts": self.layouts, "dtypes": self.dtypes, "unmatched": self.left_native}


# ----------------------------------------------------------------------------- graph helpers


def _producer(t: gs.Tensor) -> gs.Node | None:
    return t.inputs[0] if len(t.inputs) == 1 else None


def _attr(node: gs.Node, name: str, default: Any = None) -> Any:
    return node.attrs.get(name, default)


def _const(t: gs.Tensor) -> np.ndarray | None:
    """Value of a tensor the graph fixes: a Constant, or a small chain of ops on constants and
    static dimensions (see `_evaluate`); None where it depends on data or a dynamic dimension."""
    try:
        v = _evaluate(t, 0)
    except (_NoMatch, ValueError, IndexError, TypeError, KeyError):
        return None
    if v is None or (np.issubdtype(v.dtype, np.floating) and not np.all(np.isfinite(v))):
        return None
    return v


def _np_dtype(onnx_type: int) -> np.dtype:
    return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(onnx_type))


def _evaluate(t: gs.Tensor, depth: int) -> np.ndarray | None:
    """Constant-evaluate the scalar/shape arithmetic the exporter emits. Shape values are float64
    with NaN for dynamic dimensions, so anything computed from one comes out NaN (= unknown)."""
    if isinstance(t, gs.Constant):
        return np.asarray(t.values)
    node = _producer(t)
    if node is None or depth > 24:
        return None
    op = node.op
    if op == "Constant":
        value = node.attrs.get("value")
        return np.asarray(value.values) if isinstance(value, gs.Constant) else None
    if op == "Shape":
        shape = node.inputs[0].shape
        if shape is None:
            return None
        dims = np.array([d if isinstance(d, int) and d >= 0 else np.nan for d in shape], dtype=np.float64)
        start, end = _attr(node, "start", 0), _attr(node, "end", None)
        return dims[start:end]
    args = [_evaluate(i, depth + 1) if i.name or isinstance(i, gs.Constant) else None for i in node.inputs]
    if not args or args[0] is None:
        return None
    x = args[0]
    if op == "Cast":
        to = _np_dtype(_attr(node, "to"))
        return x.astype(to) if np.issubdtype(to, np.floating) else x  # ints stay float64 (NaN = unknown)
    if op in ("Sqrt", "Reciprocal", "Neg"):
        unary: dict[str, Callable[[np.ndarray], np.ndarray]] = {
            "Sqrt": np.sqrt, "Reciprocal": np.reciprocal, "Neg": np.negative}
        return np.asarray(unary[op](x)).astype(x.dtype)
    if op in ("Div", "Mul", "Add", "Sub", "Pow"):
        y = args[1] if len(args) > 1 else None
        if y is None:
            return None
        binary: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
            "Div": np.divide, "Mul": np.multiply, "Add": np.add, "Sub": np.subtract, "Pow": np.power}
        return np.asarray(binary[op](x, y.astype(x.dtype))).astype(x.dtype)
    if op == "Slice":
        if x.ndim != 1 or len(args) < 3 or args[1] is None or args[2] is None:
            return None
        axes = args[3] if len(args) > 3 and args[3] is not None else np.array([0])
        steps = args[4] if len(args) > 4 and args[4] is not None else np.array([1])
        if axes.size != 1 or int(axes.reshape(-1)[0]) not in (0, -1):
            return None
        big = np.iinfo(np.int64).max
        start, end, step = (int(min(max(v.reshape(-1)[0], -big), big)) for v in (args[1], args[2], steps))
        return x[start:end:step]
    if op == "Gather":
        if len(args) < 2 or args[1] is None or _attr(node, "axis", 0) != 0:
            return None
        return np.take(x, args[1].astype(np.int64), axis=0)
    if op == "Squeeze":
        return x.reshape([d for d in x.shape if d != 1])
    if op == "Unsqueeze":
        return x.reshape(-1) if x.ndim == 0 else None
    return None


def _sole_consumer(t: gs.Tensor, outs: frozenset[str], op: str | None = None) -> gs.Node:
    if len(t.outputs) != 1 or t.name in outs:
        raise _NoMatch(f"{t.name} has {len(t.outputs)} consumers (expected 1)")
    node = t.outputs[0]
    if op is not None and node.op != op:
        raise _NoMatch(f"{t.name} feeds {node.op}, not {op}")
    return node


def _check_inner(tensors: list[gs.Tensor], pattern: set[int], allowed: set[int], outs: frozenset[str]) -> None:
    """Every consumer of an inner tensor must be a pattern node or a node of the scale chains:
    a tensor used elsewhere would keep the replaced nodes alive (computed twice)."""
    for t in tensors:
        if t.name in outs:
            raise _NoMatch(f"inner tensor {t.name} is a graph output")
        for c in t.outputs:
            if id(c) not in pattern and id(c) not in allowed:
                raise _NoMatch(f"inner tensor {t.name} is also used by {c.op} {c.name}")


def _scale_chain_nodes(t: gs.Tensor) -> set[int]:
    """Ids of the nodes that compute a scale factor `t` (walked back to constants and Shapes)."""
    out: set[int] = set()
    stack = [t]
    while stack:
        cur = stack.pop()
        node = _producer(cur)
        if node is None or id(node) in out:
            continue
        out.add(id(node))
        if node.op != "Shape":
            stack.extend(i for i in node.inputs if not isinstance(i, gs.Constant))
    return out


def _peel_scale(t: gs.Tensor, scale_nodes: set[int], inner: list[gs.Tensor], allow_transpose: bool
                ) -> tuple[gs.Tensor, float, list[gs.Node]]:
    """Walk back from a MatMul input through Muls (Divs) by a scalar constant (and, for K, one
    Transpose of the last two axes). Returns (source tensor, product of factors, nodes walked)."""
    factor = 1.0
    transpose = None
    pattern_nodes: list[gs.Node] = []
    while True:
        node = _producer(t)
        if node is None:
            break
        if node.op == "Mul":
            a, b = node.inputs
            va, vb = _const(a), _const(b)
            if vb is not None and vb.size == 1:
                src, v = a, vb
            elif va is not None and va.size == 1:
                src, v = b, va
            else:
                break
            factor *= float(v.reshape(-1)[0])
            scale_nodes |= _scale_chain_nodes(b if src is a else a)
        elif node.op == "Div" and (d := _const(node.inputs[1])) is not None and d.size == 1:
            src = node.inputs[0]  # timm's non-fused path on older exports: q / sqrt(hd)
            factor /= float(d.reshape(-1)[0])
            scale_nodes |= _scale_chain_nodes(node.inputs[1])
        elif node.op == "Transpose" and allow_transpose and transpose is None:
            perm = list(_attr(node, "perm", []))
            if perm != [0, 1, 3, 2]:
                raise _NoMatch(f"K transpose {node.name} has perm {perm}, expected [0, 1, 3, 2]")
            transpose = node
            src = node.inputs[0]
        else:
            break
        pattern_nodes.append(node)
        inner.append(src)
        t = src
    if inner:
        inner.pop()  # the source itself is not inner
    if allow_transpose and transpose is None:
        raise _NoMatch("second MatMul operand of the scores is not Transpose(K, perm=[0, 1, 3, 2])")
    if factor <= 0.0:
        raise _NoMatch(f"scale {factor} is not positive")
    return t, factor, pattern_nodes


# ----------------------------------------------------------------------------- LayerNorm


def _match_layernorm(node: gs.Node, outs: frozenset[str]) -> dict[str, Any]:
    if any(o.outputs or o.name in outs for o in node.outputs[1:]):
        raise _NoMatch("Mean/InvStdDev outputs are used")
    x = node.inputs[0]
    rank = len(x.shape) if x.shape is not None else None
    axis = _attr(node, "axis", -1)
    if not (axis == -1 or (rank is not None and axis == rank - 1)):
        raise _NoMatch(f"axis {axis} is not the last axis (rank {rank})")
    gamma = _const(node.inputs[1])
    if gamma is None:
        raise _NoMatch("Scale is not a constant")
    gamma = gamma.astype(np.float32).reshape(-1)
    d = gamma.size
    if len(node.inputs) > 2 and node.inputs[2].name:
        beta = _const(node.inputs[2])
        if beta is None:
            raise _NoMatch("B is not a constant")
        beta = beta.astype(np.float32).reshape(-1)
    else:
        beta = np.zeros_like(gamma)
    if beta.size != d:
        raise _NoMatch(f"B has {beta.size} values, Scale {d}")
    last = x.shape[-1] if x.shape else None
    if isinstance(last, int) and last >= 0 and last != d:
        raise _NoMatch(f"Scale has {d} values but the last dimension is {last} (broadcast Scale)")
    if not LAYERNORM_D[0] <= d <= LAYERNORM_D[1]:
        raise _NoMatch(f"d = {d} outside the plugin's {LAYERNORM_D[0]}..{LAYERNORM_D[1]}")
    return {"x": x, "y": node.outputs[0], "epsilon": float(_attr(node, "epsilon", 1e-5)), "gamma": gamma,
            "beta": beta}


def _replace_layernorm(graph: gs.Graph, node: gs.Node, m: dict[str, Any]) -> gs.Node:
    name = node.name.rsplit("/", 1)[0] + "/" + LAYERNORM_OP if "/" in (node.name or "") else f"{node.name}_{LAYERNORM_OP}"
    attrs = {
        "epsilon": m["epsilon"],
        "gamma": [float(v) for v in m["gamma"]],
        "beta": [float(v) for v in m["beta"]],
        "plugin_version": PLUGIN_VERSION,
        "plugin_namespace": PLUGIN_NAMESPACE,
    }
    new = gs.Node(op=LAYERNORM_OP, name=name, attrs=attrs, inputs=[m["x"]], outputs=[m["y"]], domain=DOMAIN)
    node.inputs.clear()
    node.outputs.clear()
    graph.nodes.append(new)
    return new


# ----------------------------------------------------------------------------- attention


def _static(d: Any) -> int | None:
    return d if isinstance(d, int) and d >= 0 else None


def _same_dim(a: Any, b: Any) -> bool:
    """Equal static sizes, or the same symbol from shape inference (one symbol = one size)."""
    return a is not None and a == b


def _what(node: gs.Node | None) -> str:
    """A node's op for a report, naming the two usual reasons a pattern is split."""
    if node is None:
        return "a graph input"
    if node.op == "Cast":
        return "Cast (a precision boundary inside the pattern: FP32 fallback in an FP16 graph)"
    if node.op in ("QuantizeLinear", "DequantizeLinear"):
        return f"{node.op} (Q/DQ inside the pattern: INT8)"
    return f"{node.op} {node.name}"


def _match_core(softmax: gs.Node, outs: frozenset[str]) -> dict[str, Any]:
    """MatMul(Q*a, Transpose(K)*b) -> Softmax(-1) -> MatMul(., V)."""
    rank = len(softmax.inputs[0].shape) if softmax.inputs[0].shape is not None else None
    axis = _attr(softmax, "axis", -1)
    if not (axis == -1 or (rank is not None and axis == rank - 1)):
        raise _NoMatch(f"Softmax axis {axis} is not the last axis")
    scores = softmax.inputs[0]
    mm1 = _producer(scores)
    if mm1 is None or mm1.op != "MatMul":
        raise _NoMatch(f"Softmax input comes from {_what(mm1)}, not MatMul")
    probs = softmax.outputs[0]
    mm2 = _sole_consumer(probs, outs)
    if mm2.op != "MatMul" or mm2.inputs[0] is not probs:
        raise _NoMatch(f"Softmax output feeds {_what(mm2)}, not MatMul(P, V)")
    scale_nodes: set[int] = set()
    inner: list[gs.Tensor] = [scores, probs]
    q_inner: list[gs.Tensor] = [mm1.inputs[0]]
    q, a, q_nodes = _peel_scale(mm1.inputs[0], scale_nodes, q_inner, allow_transpose=False)
    k_inner: list[gs.Tensor] = [mm1.inputs[1]]
    k, b, k_nodes = _peel_scale(mm1.inputs[1], scale_nodes, k_inner, allow_transpose=True)
    v = mm2.inputs[1]
    for src in (q, k, v):
        p = _producer(src)
        if p is not None and p.op in ("DequantizeLinear", "QuantizeLinear"):
            raise _NoMatch("Q/DQ inside the attention pattern (INT8): left native")
    dtypes = {t.dtype for t in (q, k, v, mm2.outputs[0]) if t.dtype is not None}
    if len(dtypes) > 1:
        raise _NoMatch(f"Q/K/V/O dtypes differ ({sorted(str(d) for d in dtypes)})")
    return {"q": q, "k": k, "v": v, "o": mm2.outputs[0], "scale": a * b, "nodes": [mm1, softmax, mm2, *q_nodes, *k_nodes],
            "inner": inner + q_inner + k_inner, "scale_nodes": scale_nodes,
            "dtype": next(iter(dtypes)) if dtypes else None}


def _qkv_source(t: gs.Tensor, index: int) -> tuple[gs.Node, list[gs.Node], list[gs.Tensor]]:
    """t = Squeeze(Split(T)[index], axis 0) or Gather(T, index, axis 0) -> (T's Transpose, nodes, inner)."""
    node = _producer(t)
    if node is None:
        raise _NoMatch(f"{t.name} is a graph input")
    if node.op == "Gather":
        idx = _const(node.inputs[1])
        if _attr(node, "axis", 0) != 0 or idx is None or idx.size != 1 or int(idx.reshape(-1)[0]) != index:
            raise _NoMatch(f"{node.name}: Gather is not index {index} on axis 0")
        src, nodes, inner = node.inputs[0], [node], [t]
    elif node.op == "Squeeze":
        axes = _const(node.inputs[1]) if len(node.inputs) > 1 else np.array(_attr(node, "axes", []))
        if axes is None or [int(a) for a in axes.reshape(-1)] != [0]:
            raise _NoMatch(f"{node.name}: Squeeze axes are not [0]")
        split = _producer(node.inputs[0])
        if split is None or split.op != "Split" or _attr(split, "axis", 0) != 0 or len(split.outputs) != 3:
            raise _NoMatch(f"{node.name}: not fed by a 3-way Split on axis 0")
        sizes = _const(split.inputs[1]) if len(split.inputs) > 1 and split.inputs[1].name else None
        if sizes is not None and [int(s) for s in sizes.reshape(-1)] != [1, 1, 1]:
            raise _NoMatch(f"{split.name}: split sizes {sizes.tolist()}")
        if split.outputs[index] is not node.inputs[0]:
            raise _NoMatch(f"{node.name}: takes Split output {split.outputs.index(node.inputs[0])}, expected {index}")
        src, nodes, inner = split.inputs[0], [node, split], [t, node.inputs[0]]
    else:
        raise _NoMatch(f"{t.name} comes from {node.op}, not Split/Squeeze or Gather of the packed QKV")
    tr = _producer(src)
    if tr is None or tr.op != "Transpose" or list(_attr(tr, "perm", [])) != [2, 0, 3, 1, 4]:
        raise _NoMatch(f"{src.name} is not Transpose(perm=[2, 0, 3, 1, 4])")
    return tr, nodes, inner + [src]


def _match_packed(core: dict[str, Any], outs: frozenset[str]) -> dict[str, Any]:
    trs, nodes, inner = [], [], []
    for i, key in enumerate(("q", "k", "v")):
        tr, n, t = _qkv_source(core[key], i)
        trs.append(tr)
        nodes += n
        inner += t
    if not (trs[0] is trs[1] is trs[2]):
        raise _NoMatch("Q, K and V do not come from one packed QKV transpose")
    tr = trs[0]
    reshape = _producer(tr.inputs[0])
    if reshape is None or reshape.op != "Reshape":
        raise _NoMatch(f"{tr.name} input is not a Reshape")
    qkv = reshape.inputs[0]
    r_shape, qkv_shape = reshape.outputs[0].shape, qkv.shape
    if r_shape is None or len(r_shape) != 5 or qkv_shape is None or len(qkv_shape) != 3:
        raise _NoMatch(f"packed Reshape {reshape.name}: shapes {qkv_shape} -> {r_shape} are not [B,N,C] -> [B,N,3,H,hd]")
    three, heads, hd = (_static(d) for d in r_shape[2:])
    c = _static(qkv_shape[2])
    if three != 3 or heads is None or hd is None or c != 3 * heads * hd:
        raise _NoMatch(f"packed Reshape {reshape.name}: {qkv_shape} -> {r_shape} is not [B,N,3*H*hd] -> [B,N,3,H,hd]")
    if not (_same_dim(r_shape[0], qkv_shape[0]) and _same_dim(r_shape[1], qkv_shape[1])):
        raise _NoMatch(f"packed Reshape {reshape.name}: cannot prove [B, N] is kept ({qkv_shape} -> {r_shape})")
    # output side: MatMul(P, V) -> Transpose(0, 2, 1, 3) -> Reshape [B, N, H*hd]
    o = core["o"]
    tr_out = _sole_consumer(o, outs, "Transpose")
    if list(_attr(tr_out, "perm", [])) != [0, 2, 1, 3]:
        raise _NoMatch(f"{tr_out.name}: perm {_attr(tr_out, 'perm')} is not [0, 2, 1, 3]")
    rs_out = _sole_consumer(tr_out.outputs[0], outs, "Reshape")
    out = rs_out.outputs[0]
    o_shape = out.shape
    if o_shape is None or len(o_shape) != 3 or _static(o_shape[2]) != heads * hd:
        raise _NoMatch(f"{rs_out.name}: output shape {o_shape} is not [B, N, H*hd]")
    if not (_same_dim(o_shape[0], qkv_shape[0]) and _same_dim(o_shape[1], qkv_shape[1])):
        raise _NoMatch(f"{rs_out.name}: cannot prove the output keeps [B, N] of the QKV ({qkv_shape} -> {o_shape})")
    all_nodes = core["nodes"] + nodes + [tr, reshape, tr_out, rs_out]
    all_inner = core["inner"] + inner + [reshape.outputs[0], o, tr_out.outputs[0]]
    return {"qkv": qkv, "out": out, "heads": heads, "hd": hd, "n": _static(qkv_shape[1]), "nodes": all_nodes,
            "inner": all_inner, "terminal": rs_out}


def _check_limits(n: int | None, hd: int | None) -> None:
    if n is not None and not ATTENTION_N[0] <= n <= ATTENTION_N[1]:
        raise _NoMatch(f"N = {n} outside the plugin's {ATTENTION_N[0]}..{ATTENTION_N[1]}")
    if hd is None:
        raise _NoMatch("head dim is not static")
    if not ATTENTION_HD[0] <= hd <= ATTENTION_HD[1]:
        raise _NoMatch(f"head dim {hd} outside the plugin's {ATTENTION_HD[0]}..{ATTENTION_HD[1]}")


def _attention_name(softmax: gs.Node) -> str:
    base = (softmax.name or "attention").rsplit("/", 1)[0] if "/" in (softmax.name or "") else softmax.name
    return f"{base}/{ATTENTION_OP}"


def _match_attention(softmax: gs.Node, layout: int | None, outs: frozenset[str]
                     ) -> tuple[int, dict[str, Any], dict[str, Any] | None]:
    core = _match_core(softmax, outs)
    packed = None
    why_not_packed = ""
    if layout in (None, 1):
        try:
            packed = _match_packed(core, outs)
        except _NoMatch as e:
            if layout == 1:
                raise
            why_not_packed = str(e)
    if packed is not None:
        _check_limits(packed["n"], packed["hd"])
        _check_inner(packed["inner"], {id(n) for n in packed["nodes"]}, core["scale_nodes"], outs)
        return 1, core, packed
    q_shape = core["q"].shape
    if q_shape is None or len(q_shape) != 4:
        raise _NoMatch(f"Q shape {q_shape} is not [B, H, N, hd]" + (f" (packed: {why_not_packed})" if why_not_packed else ""))
    for key in ("k", "v", "o"):
        s = core[key].shape
        if s is None or len(s) != 4 or (_static(s[3]) != _static(q_shape[3])):
            raise _NoMatch(f"{key.upper()} shape {s} does not match Q {q_shape}")
    _check_limits(_static(q_shape[2]), _static(q_shape[3]))
    _check_inner(core["inner"], {id(n) for n in core["nodes"]}, core["scale_nodes"], outs)
    return 0, core, None


def _replace_attention(graph: gs.Graph, softmax: gs.Node, layout: int, core: dict[str, Any],
                       packed: dict[str, Any] | None) -> gs.Node:
    attrs: dict[str, Any] = {"scale": float(np.float32(core["scale"])), "layout": layout}
    if packed is not None:
        attrs["num_heads"] = int(packed["heads"])
        inputs, out, terminal = [packed["qkv"]], packed["out"], packed["terminal"]
    else:
        heads = _static(core["q"].shape[1])
        if heads is not None:
            attrs["num_heads"] = heads
        inputs, out = [core["q"], core["k"], core["v"]], core["o"]
        terminal = next(n for n in core["nodes"] if n.op == "MatMul" and n.outputs[0] is out)
    attrs["plugin_version"] = PLUGIN_VERSION
    attrs["plugin_namespace"] = PLUGIN_NAMESPACE
    new = gs.Node(op=ATTENTION_OP, name=_attention_name(softmax), attrs=attrs, inputs=inputs, outputs=[out],
                  domain=DOMAIN)
    terminal.outputs.clear()
    graph.nodes.append(new)
    return new


# ----------------------------------------------------------------------------- the pass


def _dtype_name(t: gs.Tensor) -> str:
    return str(np.dtype(t.dtype)) if t.dtype is not None else "unknown"


def rewrite_plugins(model: onnx.ModelProto, layernorm: bool = True, attention: bool = True,
                    layout: int | None = None) -> onnx.ModelProto:
    """Replace LayerNorms and attention blocks with `trt.plugins` nodes (see the module docstring).

    Args:
        layernorm / attention: which plugin to emit.
        layout: attention layout; None means packed (1) where the packed pattern matches, else
            separate (0). 1 or 0 force one (an attention that does not fit is left native).

    Returns:
        a new model (the input is not modified); counts and every unmatched pattern with its
        reason in `metadata_props[METADATA_KEY]` (JSON, read back by `plugin_rewrite_report`).
    """
    if layout not in (None, 0, 1):
        raise ValueError(f"layout {layout}: choose None, 0 or 1")
    before = len(model.graph.node)
    # Fresh inference with data propagation: the symbols of dynamic dimensions then follow the
    # graph's Shape arithmetic, so [B, N] before and after the packed Reshapes is one symbol
    # (stale value_info, e.g. from a precision pass, would keep unrelated `unk__` symbols).
    bare = onnx.ModelProto()
    bare.CopyFrom(model)
    del bare.graph.value_info[:]
    inferred = onnx.shape_inference.infer_shapes(bare, strict_mode=False, data_prop=True)
    graph = gs.import_onnx(inferred)
    outs = frozenset(t.name for t in graph.outputs)
    ln_counts, at_counts = RewriteCounts(), RewriteCounts()
    if attention:
        for softmax in [n for n in graph.nodes if n.op == "Softmax"]:
            at_counts.found += 1
            try:
                lay, core, packed = _match_attention(softmax, layout, outs)
            except _NoMatch as e:
                at_counts.left_native.append({"node": softmax.name, "reason": str(e)})
                continue
            new = _replace_attention(graph, softmax, lay, core, packed)
            at_counts.replaced += 1
            at_counts.layouts[str(lay)] = at_counts.layouts.get(str(lay), 0) + 1
            dt = _dtype_name(new.outputs[0])
            at_counts.dtypes[dt] = at_counts.dtypes.get(dt, 0) + 1
    if layernorm:
        for node in [n for n in graph.nodes if n.op == "LayerNormalization"]:
            ln_counts.found += 1
            try:
                m = _match_layernorm(node, outs)
            except _NoMatch as e:
                ln_counts.left_native.append({"node": node.name, "reason": str(e)})
                continue
            new = _replace_layernorm(graph, node, m)
            ln_counts.replaced += 1
            dt = _dtype_name(new.outputs[0])
            ln_counts.dtypes[dt] = ln_counts.dtypes.get(dt, 0) + 1
    graph.cleanup(remove_unused_graph_inputs=False).toposort()
    out = gs.export_onnx(graph, do_type_check=True)
    out.producer_name, out.producer_version, out.ir_version = model.producer_name, model.producer_version, model.ir_version
    opsets = [o for o in model.opset_import if o.domain != DOMAIN]
    del out.opset_import[:]
    out.opset_import.extend(opsets)
    if ln_counts.replaced or at_counts.replaced:
        out.opset_import.append(onnx.helper.make_opsetid(DOMAIN, DOMAIN_VERSION))
    # Keep what the source file said about itself, then say what this pass did.
    del out.metadata_props[:]
    out.metadata_props.extend(p for p in model.metadata_props if p.key != METADATA_KEY)
    report = {"layernorm": ln_counts.to_dict() if layernorm else None,
              "attention": at_counts.to_dict() if attention else None}
    onnx.helper.set_model_props(out, {**{p.key: p.value for p in out.metadata_props},
                                      METADATA_KEY: json.dumps(report, sort_keys=True)})
    onnx.checker.check_model(out)
    hist = Counter(n.op_type for n in out.graph.node)
    logger.info(
        f"rewrite_plugins: {before} -> {len(out.graph.node)} nodes; LayerNorm {ln_counts.replaced}/{ln_counts.found} "
        f"-> {LAYERNORM_OP} ({hist.get(LAYERNORM_OP, 0)} in graph), attention {at_counts.replaced}/"
        f"{at_counts.found} -> {ATTENTION_OP} (layouts {at_counts.layouts or '-'})"
    )
    for kind, counts in (("LayerNorm", ln_counts), ("attention", at_counts)):
        for u in counts.left_native:
            logger.info(f"rewrite_plugins: {kind} {u['node']} left native: {u['reason']}")
    return out


def plugin_rewrite_report(model: onnx.ModelProto) -> dict[str, Any] | None:
    """The counts `rewrite_plugins` recorded in `model` (None when the pass did not run on it)."""
    for p in model.metadata_props:
        if p.key == METADATA_KEY:
            result: dict[str, Any] = json.loads(p.value)
            return result
    return None


def plugin_nodes(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    return [n for n in model.graph.node if n.domain == DOMAIN]

"""Fixtures of the precision tests: tiny graphs built in code, and mobilevit_xxs at 64x64."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import pytest

RNG = np.random.default_rng(0)


def _const(name: str, arr: np.ndarray) -> gs.Constant:
    return gs.Constant(name, np.ascontiguousarray(arr))


def tiny_vit(channels: int = 8, size: int = 8, classes: int = 5) -> onnx.ModelProto:
    """Conv stem -> attention block (LayerNorm, qkv MatMul, scale from Shape, Softmax, residual Add)
    -> ReduceMean -> Gemm head. Node names follow the torch exporter's module paths."""
    c, t = channels, size * size
    x = gs.Variable("input", np.float32, ("batch", 3, size, size))
    nodes: list[gs.Node] = []

    def v(name):
        return gs.Variable(name, np.float32)

    def node(op, name, inputs, outputs, **attrs):
        nodes.append(gs.Node(op, name, attrs, inputs, outputs))
        return outputs[0]

    h = node("Conv", "/stem/conv/Conv", [x, _const("stem.w", RNG.normal(0, 0.3, (c, 3, 3, 3)).astype(np.float32)),
                                            _const("stem.b", RNG.normal(0, 0.1, c).astype(np.float32))],
             [v("stem_out")], pads=[1, 1, 1, 1])
    h = node("Sigmoid", "/stem/act/Sigmoid", [h], [v("sig")])
    h = node("Conv", "/stages.0/conv/Conv", [h, _const("s0.w", RNG.normal(0, 0.3, (c, c, 1, 1)).astype(np.float32))],
             [v("s0_out")])
    h = node("Reshape", "/stages.0/Reshape", [h, _const("shape", np.array([0, c, t], np.int64))],
             [gs.Variable("tok_t", np.float32)])
    tok = node("Transpose", "/stages.0/Transpose", [h], [v("tok")], perm=[0, 2, 1])
    ln = node("LayerNormalization", "/stages.1/norm/LayerNormalization",
              [tok, _const("ln.g", np.ones(c, np.float32)), _const("ln.b", np.zeros(c, np.float32))], [v("ln")],
              axis=-1)
    q = node("MatMul", "/stages.1/attn/q/MatMul", [ln, _const("wq", RNG.normal(0, 0.3, (c, c)).astype(np.float32))],
             [v("q")])
    k = node("MatMul", "/stages.1/attn/k/MatMul", [ln, _const("wk", RNG.normal(0, 0.3, (c, c)).astype(np.float32))],
             [v("k")])
    # Attention scale computed from a Shape, as timm's export does: Shape -> Gather -> Cast(float) -> Sqrt.
    shp = node("Shape", "/stages.1/attn/Shape", [q], [gs.Variable("q_shape", np.int64)])
    dim = node("Gather", "/stages.1/attn/Gather", [shp, _const("idx", np.array(2, np.int64))],
               [gs.Variable("q_dim", np.int64)], axis=0)
    dimf = node("Cast", "/stages.1/attn/Cast", [dim], [v("q_dimf")], to=onnx.TensorProto.FLOAT)
    sq = node("Sqrt", "/stages.1/attn/Sqrt", [dimf], [v("q_sqrt")])
    qs = node("Div", "/stages.1/attn/Div", [q, sq], [v("qs")])
    kt = node("Transpose", "/stages.1/attn/Transpose", [k], [v("kt")], perm=[0, 2, 1])
    s = node("MatMul", "/stages.1/attn/MatMul", [qs, kt], [v("scores")])
    p = node("Softmax", "/stages.1/attn/Softmax", [s], [v("probs")], axis=-1)
    o = node("MatMul", "/stages.1/attn/MatMul_1", [p, ln], [v("ctx")])
    r = node("Add", "/stages.1/Add", [tok, o], [v("res")])
    pooled = node("ReduceMean", "/head/ReduceMean", [r], [v("pooled")], axes=[1], keepdims=0)
    out = gs.Variable("logits", np.float32, ("batch", classes))
    node("Gemm", "/head/fc/Gemm", [pooled, _const("fc.w", RNG.normal(0, 0.5, (classes, c)).astype(np.float32)),
                                   _const("fc.b", np.zeros(classes, np.float32))], [out], transB=1)
    graph = gs.Graph(nodes=nodes, inputs=[x], outputs=[out], opset=17)
    model = gs.export_onnx(graph)
    model.ir_version = 8
    model = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    onnx.checker.check_model(model, full_check=True)
    return model


@pytest.fixture(scope="session")
def tiny_model() -> onnx.ModelProto:
    return tiny_vit()


@pytest.fixture(scope="session")
def tiny_path(tmp_path_factory, tiny_model):
    p = tmp_path_factory.mktemp("tiny") / "tiny.onnx"
    onnx.save(tiny_model, str(p))
    return p


@pytest.fixture(scope="session")
def tiny_inputs() -> np.ndarray:
    return np.random.default_rng(1).random((24, 3, 8, 8), dtype=np.float32)


@pytest.fixture(scope="session")
def xxs64(tmp_path_factory):
    """mobilevit_xxs (random init, seed 0) exported at 64x64 and cleaned, as the build does."""
    import torch

    from repo_gen.models import get_model_spec
    from repo_gen.onnx.export import export_onnx
    from repo_gen.onnx.passes import cleanup_graph
    from repo_gen.torch.loader import load_model

    torch.set_num_threads(2)
    d = tmp_path_factory.mktemp("xxs64")
    loaded = load_model(get_model_spec("mobilevit_xxs"))
    clean = cleanup_graph(export_onnx(loaded.module, 64))
    path = d / "fp32.onnx"
    onnx.save(clean, str(path))
    return path

"""FP16 conversion: valid strongly typed graphs, kept nodes really FP32, faithful CPU emulation."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto

from repo_gen.compare import fidelity
from repo_gen.onnx.runner import make_session, run_batches
from repo_gen.precision.fp16 import emulate_fp16, fp16_candidates, fp16_from_fp32, node_dtypes, tensor_types


def _types_of_node_inputs(model, node_name):
    types = tensor_types(model)
    node = next(n for n in model.graph.node if n.name == node_name)
    return {types.get(i) for i in node.input if i and types.get(i) in (TensorProto.FLOAT, TensorProto.FLOAT16)}


def test_fp16_graph_is_valid_and_loads(tiny_model, tiny_inputs):
    h = fp16_from_fp32(tiny_model)
    onnx.checker.check_model(h, full_check=True)
    assert h.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT
    assert h.graph.output[0].type.tensor_type.elem_type == TensorProto.FLOAT
    dt = node_dtypes(h)
    for n in tiny_model.graph.node:
        if n.op_type not in ("Shape", "Gather"):
            assert dt[n.name] == "fp16", n.name
    # weights stored in FP16 in the file (no runtime Cast of weights)
    w = {i.name: i.data_type for i in h.graph.initializer}
    assert w["stem.w"] == TensorProto.FLOAT16 and w["wq"] == TensorProto.FLOAT16
    # The Shape -> Cast(to=FLOAT) of the attention scale became a Cast to FLOAT16.
    cast = next(n for n in h.graph.node if n.name == "/stages.1/attn/Cast")
    assert cast.attribute[0].i == TensorProto.FLOAT16
    ref = run_batches(make_session(tiny_model, threads=1), tiny_inputs)
    out = run_batches(make_session(h, threads=1), tiny_inputs)
    assert fidelity(ref, out)["cosine_min"] > 0.999


def test_kept_nodes_are_really_fp32(tiny_model):
    keep = {"/stages.1/norm/LayerNormalization", "/stages.1/attn/Softmax", "/head/fc/Gemm"}
    h = fp16_from_fp32(tiny_model, keep)
    dt = node_dtypes(h)
    for name in keep:
        assert dt[name] == "fp32", name
        assert _types_of_node_inputs(h, name) == {TensorProto.FLOAT}, name
    assert dt["/stages.1/attn/MatMul"] == "fp16"
    # The Gemm's weight is kept as an FP32 initializer; the q MatMul's in FP16.
    w = {i.name: i.data_type for i in h.graph.initializer}
    assert w["fc.w"] == TensorProto.FLOAT and w["wq"] == TensorProto.FLOAT16
    # One shared Cast per (tensor, dtype): the LN output feeds 3 FP16 consumers through one Cast.
    casts_of_ln = [n for n in h.graph.node if n.op_type == "Cast" and n.input[0] == "ln"]
    assert len(casts_of_ln) == 1


def test_io_dtype_fp16(tiny_model, tiny_inputs):
    h = fp16_from_fp32(tiny_model, io_dtype="fp16")
    assert h.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT16
    assert h.graph.output[0].type.tensor_type.elem_type == TensorProto.FLOAT16
    out = run_batches(make_session(h, threads=1), tiny_inputs)  # run_batches feeds float16
    ref = run_batches(make_session(tiny_model, threads=1), tiny_inputs)
    assert fidelity(ref, out)["cosine_min"] > 0.999


def test_emulation_rounds_every_fp16_tensor(tiny_model, tiny_inputs):
    h = fp16_from_fp32(tiny_model)
    e = emulate_fp16(h)
    types = tensor_types(e)
    assert TensorProto.FLOAT16 not in {i.data_type for i in e.graph.initializer}
    # every op except the round-trip Casts computes in FP32
    for n in e.graph.node:
        if n.op_type != "Cast":
            assert all(types.get(o) != TensorProto.FLOAT16 for o in n.output), n.name
    # each FP16 output of the real graph has a round trip: Cast(FLOAT16) -> Cast(FLOAT)
    n_fp16 = sum(1 for v in node_dtypes(h).values() if v == "fp16")
    round_trips = sum(1 for n in e.graph.node if n.name.endswith("__emu_r16"))
    assert round_trips >= n_fp16 - 2
    emu = run_batches(make_session(e, threads=1, optimize=False), tiny_inputs)
    real = run_batches(make_session(h, threads=1), tiny_inputs)
    # ORT's CPU provider runs most of the real graph through its own FP32 fallbacks: same storage semantics
    assert np.max(np.abs(emu - real)) < 5e-2 * max(1.0, float(np.max(np.abs(real))))
    # values really are FP16-representable at the output
    assert np.array_equal(emu, emu.astype(np.float16).astype(np.float32))


def test_candidates_of_tiny_graph(tiny_model):
    c = fp16_candidates(tiny_model)
    assert c["norm@stages.1"] == ["/stages.1/norm/LayerNormalization"]
    assert c["softmax@stages.1"] == ["/stages.1/attn/Softmax"]
    assert "/stages.1/Add" in c["residual_add@stages.1"]
    assert c["head@head"] == ["/head/fc/Gemm"]
    assert "reduce@head" in c
    # scalar scale arithmetic (Shape -> Sqrt -> ...) is no candidate, the activation Div is
    flat = {n for v in c.values() for n in v}
    assert "/stages.1/attn/Sqrt" not in flat


@pytest.mark.slow
def test_mobilevit_xxs_fp16_loads_and_keeps_fp32(xxs64):
    m = onnx.load(str(xxs64))
    cands = fp16_candidates(m)
    keep = set(cands["norm@stages.3"]) | set(next(v for k, v in cands.items() if k.startswith("softmax")))
    h = fp16_from_fp32(m, keep)
    dt = node_dtypes(h)
    assert all(dt[n] == "fp32" for n in keep)
    assert sum(1 for v in dt.values() if v == "fp16") > 100
    x = np.random.default_rng(0).random((4, 3, 64, 64), dtype=np.float32)
    ref = run_batches(make_session(m, threads=2), x)
    out = run_batches(make_session(h, threads=2), x)  # ORT loads it (the onnxconverter-common failure)
    assert fidelity(ref, out)["cosine_min"] > 0.9999

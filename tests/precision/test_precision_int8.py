"""Q/DQ placement: TensorRT rules on the TensorRT form, the uint8/int8 layout on the CPU form."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, numpy_helper

from repo_gen.compare import fidelity
from repo_gen.onnx.runner import make_session, run_batches
from repo_gen.precision import int8


@pytest.fixture(scope="module")
def calib(tmp_path_factory, tiny_path, tiny_inputs):
    return int8.calibrate(tiny_path, tiny_inputs, "max", tmp_path_factory.mktemp("cal"), threads=1)


def _inits(m):
    return {i.name: i for i in m.graph.initializer}


def _dq_of(m, node_name, index):
    producers = {o: n for n in m.graph.node for o in n.output}
    node = next(n for n in m.graph.node if n.name == node_name)
    return producers.get(node.input[index])


def test_trt_form_follows_tensorrt_rules(tiny_path, calib, tmp_path, tiny_inputs):
    q = int8.trt_qdq(tiny_path, tmp_path / "trt.onnx", calib)
    assert int8.check_trt_rules(q) == []
    inits = _inits(q)
    for n in q.graph.node:
        if n.op_type in ("QuantizeLinear", "DequantizeLinear"):
            zp = inits[n.input[2]]
            assert zp.data_type == TensorProto.INT8 and not np.any(numpy_helper.to_array(zp))
    # Conv weight: int8 initializer, per-channel on axis 0 (output channels)
    dq = _dq_of(q, "/stem/conv/Conv", 1)
    assert dq.op_type == "DequantizeLinear" and inits[dq.input[0]].data_type == TensorProto.INT8
    assert list(inits[dq.input[1]].dims) == [8]
    assert next(a.i for a in dq.attribute if a.name == "axis") == 0
    # MatMul weight [K, N]: per-channel on axis 1 (N)
    dq = _dq_of(q, "/stages.1/attn/q/MatMul", 1)
    assert next(a.i for a in dq.attribute if a.name == "axis") == 1 and list(inits[dq.input[1]].dims) == [8]
    # activation inputs: per-tensor (scalar scale); attention MatMul has both inputs quantized
    for name, idx in (("/stem/conv/Conv", 0), ("/stages.1/attn/MatMul", 0), ("/stages.1/attn/MatMul", 1)):
        dq = _dq_of(q, name, idx)
        assert dq.op_type == "DequantizeLinear" and list(inits[dq.input[1]].dims) == []
    # bias stays float (no int32 DequantizeLinear), Gemm head quantized
    assert not any(t.data_type == TensorProto.INT32 for t in q.graph.initializer)
    assert set(int8.quantized_nodes(q)) >= {"/stem/conv/Conv", "/stages.0/conv/Conv", "/head/fc/Gemm"}
    # no Q/DQ on non-weighted ops' inputs (Softmax, LayerNorm, Sigmoid take floats)
    for name in ("/stages.1/attn/Softmax", "/stages.1/norm/LayerNormalization", "/stem/act/Sigmoid"):
        src = _dq_of(q, name, 0)
        assert src is None or src.op_type != "DequantizeLinear", name
    ref = run_batches(make_session(str(tiny_path), threads=1), tiny_inputs)
    out = run_batches(make_session(q, threads=1, optimize=False), tiny_inputs)
    assert fidelity(ref, out)["cosine_mean"] > 0.98


def test_excluded_nodes_stay_float(tiny_path, calib, tmp_path):
    q = int8.trt_qdq(tiny_path, tmp_path / "trt.onnx", calib, exclude=["/stem/conv/Conv", "/stages.1/attn/MatMul"])
    quantized = set(int8.quantized_nodes(q))
    assert "/stem/conv/Conv" not in quantized and "/stages.1/attn/MatMul" not in quantized
    assert "/stages.0/conv/Conv" in quantized


def test_cpu_form_uint8_activations(tiny_path, calib, tmp_path, tiny_inputs):
    c = int8.cpu_qdq(tiny_path, tmp_path / "cpu.onnx", calib)
    inits = _inits(c)
    act_zp = {inits[n.input[2]].data_type for n in c.graph.node if n.op_type == "QuantizeLinear"}
    assert act_zp == {TensorProto.UINT8}
    w_types = {inits[n.input[0]].data_type for n in c.graph.node
               if n.op_type == "DequantizeLinear" and n.input[0] in inits}
    assert TensorProto.INT8 in w_types  # weights int8 (and int32 biases)
    ref = run_batches(make_session(str(tiny_path), threads=1), tiny_inputs)
    out = run_batches(make_session(c, threads=1), tiny_inputs)
    assert fidelity(ref, out)["cosine_mean"] > 0.98


def test_rule_checker_catches_violations(tiny_path, calib, tmp_path):
    c = int8.cpu_qdq(tiny_path, tmp_path / "cpu.onnx", calib)
    bad = int8.check_trt_rules(c)
    assert any("INT8" in b for b in bad)  # uint8 zero points
    assert any("int32" in b for b in bad)  # int32 bias DQ


@pytest.mark.parametrize("method", ["percentile", "entropy"])
def test_calibration_methods(tiny_path, tiny_inputs, tmp_path, method):
    cal = int8.calibrate(tiny_path, tiny_inputs, method, tmp_path, threads=1)
    q = int8.trt_qdq(tiny_path, tmp_path / "q.onnx", cal)
    assert int8.check_trt_rules(q) == []
    onnx.checker.check_model(q)

"""The greedy higher-precision search: on a pure function, and on a tiny graph that needs FP32."""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from repo_gen.compare import fidelity
from repo_gen.precision.evaluate import Evaluator, OrtCpuEvaluator
from repo_gen.precision.fp16 import fp16_from_fp32
from repo_gen.precision.search import greedy_search


def _additive(costs: dict[str, float], base: float):
    def evaluate(kept: set[str]) -> dict:
        return {"err": base - sum(c for g, c in costs.items() if g in kept)}
    return evaluate


def test_greedy_picks_biggest_gain_until_met():
    ev = _additive({"a": 1.0, "b": 5.0, "c": 3.0, "d": 0.0}, 10.0)
    cands = {k: [k] for k in "abcd"}
    res = greedy_search(cands, ev, lambda m: m["err"] <= 2.5, lambda m: m["err"])
    assert res.kept_groups == ["b", "c"] and res.met
    assert res.steps[1]["chosen"] == "b" and res.steps[2]["chosen"] == "c"
    assert res.stop_reason == "tolerance met"
    assert "d" in res.steps[1]["tried"] and "d" not in res.steps[2]["tried"]  # pruned after round 1


def test_greedy_stops_when_nothing_helps():
    # Only the pair helps (no single group does): greedy stops, and says why.
    def ev(kept):
        return {"err": 0.0 if {"a", "b"} <= kept else 10.0}

    res = greedy_search({"a": ["a"], "b": ["b"]}, ev, lambda m: m["err"] <= 1.0, lambda m: m["err"])
    assert not res.met and res.kept_groups == []
    assert "nothing lowers" in res.stop_reason


def test_unreachable_is_detected_in_one_evaluation():
    calls = []

    def ev(kept):
        calls.append(kept)
        return {"err": 1.0}

    res = greedy_search({k: [k] for k in "abcdef"}, ev, lambda m: m["err"] < 0.5, lambda m: m["err"])
    assert not res.met and res.stop_reason.startswith("unreachable") and len(calls) == 2


def test_max_steps():
    ev = _additive({k: 1.0 for k in "abcdef"}, 10.0)
    res = greedy_search({k: [k] for k in "abcdef"}, ev, lambda m: m["err"] <= 4, lambda m: m["err"], max_steps=2)
    assert len(res.kept_groups) == 2 and "max steps" in res.stop_reason


def _overflow_graph():
    """x -> MatMul(w, large) -> Mul(x, x) -> ReduceMean -> Div(1e6): the square overflows FP16 (> 65504)."""
    rng = np.random.default_rng(0)
    x = gs.Variable("input", np.float32, ("batch", 16))
    nodes = []
    a = gs.Variable("a", np.float32)
    nodes.append(gs.Node("MatMul", "/blk.0/fc/MatMul", inputs=[x, gs.Constant("w", rng.uniform(20, 40, (16, 8)).astype(np.float32))], outputs=[a]))
    sq = gs.Variable("sq", np.float32)
    nodes.append(gs.Node("Mul", "/blk.0/sq/Mul", inputs=[a, a], outputs=[sq]))
    m = gs.Variable("m", np.float32)
    nodes.append(gs.Node("ReduceMean", "/blk.0/ReduceMean", attrs={"axes": [1], "keepdims": 1}, inputs=[sq], outputs=[m]))
    o = gs.Variable("logits", np.float32, ("batch", 8))
    nodes.append(gs.Node("Div", "/blk.1/Div", inputs=[sq, m], outputs=[o]))
    model = gs.export_onnx(gs.Graph(nodes=nodes, inputs=[x], outputs=[o], opset=17))
    model.ir_version = 8
    return model


def test_search_on_tiny_graph_finds_the_overflow():
    model = _overflow_graph()
    x = np.random.default_rng(1).random((8, 16), dtype=np.float32) + 0.5
    evaluator = OrtCpuEvaluator(threads=1)
    ref = evaluator.run(model, x, "fp32")
    cands = {
        "overflow@blk.0": ["/blk.0/sq/Mul", "/blk.0/ReduceMean", "/blk.1/Div"],
        "fc@blk.0": ["/blk.0/fc/MatMul"],
        "reduce@blk.0": ["/blk.0/ReduceMean"],
    }

    def evaluate(kept):
        out = evaluator.run(fp16_from_fp32(model, kept), x, "fp16")
        out = np.nan_to_num(out, nan=1e9, posinf=1e9, neginf=-1e9)
        return fidelity(ref, out)

    res = greedy_search(cands, evaluate, lambda m: m["rel_l2"] <= 1e-2, lambda m: m["rel_l2"])
    assert res.steps[0]["error"] > 1.0  # FP16 overflowed
    assert res.met and res.kept_groups == ["overflow@blk.0"]


def test_ort_evaluator_is_an_evaluator():
    assert isinstance(OrtCpuEvaluator(threads=1), Evaluator)

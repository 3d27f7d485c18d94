"""The TensorRT-RTX compile check: a real TensorRT-family parser and builder, run ahead of time on
this CPU machine through repo-gen's own builder functions (repo_gen/trt/compile_check.py).

Tiny graphs built in code keep these fast (about 2 s each, in a child process); the whole
mobilevit_xxs build is the slow test at the end.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from repo_gen.results import WriteRequest
from repo_gen.trt import compile_check as cc
from repo_gen.trt.profile import profile_shapes
from repo_gen.trt.repository import write_tensorrt_model
from tests.trt.conftest import CLASSES, IMAGE

needs_rtx = pytest.mark.skipif(cc.library_status()[0] is None,
                               reason=f"TensorRT-RTX does not load here: {cc.library_status()[1]}")
LABELS = [f"class_{i}" for i in range(CLASSES)]
PROFILE = profile_shapes("input", (3, IMAGE, IMAGE), 2, 4)


def unimportable_onnx(path: Path) -> Path:
    """The classifier with one standard-domain node TensorRT's parser has no importer for."""
    import onnx_graphsurgeon as gs

    x = gs.Variable("input", dtype=np.float32, shape=["batch", 3, IMAGE, IMAGE])
    pooled, flat = gs.Variable("pooled", dtype=np.float32), gs.Variable("flat", dtype=np.float32)
    odd = gs.Variable("odd", dtype=np.float32)
    out = gs.Variable("logits", dtype=np.float32, shape=["batch", CLASSES])
    w = gs.Constant("w", np.ones((3, CLASSES), dtype=np.float32))
    nodes = [gs.Node("GlobalAveragePool", inputs=[x], outputs=[pooled], name="pool"),
             gs.Node("Flatten", inputs=[pooled], outputs=[flat], attrs={"axis": 1}, name="flatten"),
             gs.Node("NoSuchOnnxOp", inputs=[flat], outputs=[odd], name="odd_node"),
             gs.Node("MatMul", inputs=[odd, w], outputs=[out], name="fc")]
    import onnx

    onnx.save(gs.export_onnx(gs.Graph(nodes=nodes, inputs=[x], outputs=[out], opset=17)), str(path))
    return path


@needs_rtx
def test_good_graph_passes_with_figures(tmp_path, make_onnx):
    check = cc.compile_check(make_onnx(tmp_path / "g.onnx"), PROFILE)
    assert check.status == "passed", check.errors
    assert check.library == "TensorRT-RTX" and check.version == cc.rtx_version() and check.target == "SM89"
    assert check.layers >= 3 and check.engine_bytes > 0 and check.seconds > 0 and check.errors == []


@needs_rtx
def test_unimportable_node_is_named_in_one_line(tmp_path):
    check = cc.compile_check(unimportable_onnx(tmp_path / "bad.onnx"), PROFILE)
    assert check.status == "failed" and check.layers == 0 and check.engine_bytes == 0
    line = check.errors[0]
    assert "\n" not in line and "odd_node" in line and "NoSuchOnnxOp" in line, check.errors
    assert "FAILED" in check.summary and "odd_node" in check.summary


@needs_rtx
def test_rejected_graph_reaches_manifest_and_readme_and_is_not_ready(tmp_path, make_cfg):
    from repo_gen.precision import PrecisionVariant

    bad = unimportable_onnx(tmp_path / "bad.onnx")
    d = tmp_path / "staging" / "m_trt_fp32"
    d.mkdir(parents=True)
    written = write_tensorrt_model(WriteRequest.make(make_cfg(max_batch=4, opt_batch=2), "m_trt_fp32", d,
                                                     PrecisionVariant("fp32", bad, bad), LABELS))
    assert written.status != "ready" and "odd_node" in written.status_reason and "\n" not in written.status_reason
    extra = written.details
    record = extra["compile_check"]["native"]
    assert record["status"] == "failed" and record["graph"] == "model.onnx" and "odd_node" in record["errors"][0]
    assert "NOT the serving plan" in record["what_it_proves"]
    json.dumps(extra)  # the manifest is JSON
    readme = (d / "README.md").read_text()
    assert "| native (`model.onnx`) | failed | TensorRT-RTX" in readme and "odd_node" in readme
    assert "NOT the serving plan" in readme


@needs_rtx
def test_plugin_library_problems_name_the_library_and_op(tmp_path, make_onnx):
    graph = make_onnx(tmp_path / "p.onnx", plugin_op="RepoGenLayerNorm")
    not_a_library = tmp_path / "libnot_plugins.so"
    not_a_library.write_text("not an ELF file")
    check = cc.compile_check(graph, PROFILE, plugin_libs=(not_a_library,), plugin_ops=("RepoGenLayerNorm",))
    assert check.status == "failed" and str(not_a_library) in check.errors[0] and "could not load" in check.errors[0]

    assert "RepoGenLayerNorm" in check.errors[0]
    # a real shared library that is not a plugin library (no getCreators symbol)
    libm = Path("/lib/x86_64-linux-gnu/libm.so.6")
    if not libm.is_file():
        pytest.skip("no libm.so.6 at the Debian path")
    check = cc.compile_check(graph, PROFILE, plugin_libs=(libm,), plugin_ops=("RepoGenLayerNorm",))
    assert check.status == "failed" and str(libm) in check.errors[0] and "getCreators" in check.errors[0], check.errors


def test_missing_library_is_not_run_in_one_line(tmp_path, make_onnx, monkeypatch):
    monkeypatch.setattr(cc, "rtx_version", lambda: None)
    check = cc.compile_check(make_onnx(tmp_path / "g.onnx"), PROFILE)
    assert check.status == "not_run" and len(check.errors) == 1 and "pip install" in check.errors[0]
    assert check.to_dict()["status"] == "not_run"


@pytest.mark.slow
@needs_rtx
def test_every_tensorrt_graph_of_mobilevit_xxs_passes(tmp_path):
    """Every TensorRT-bound graph one build emits (FP32, FP16 and INT8, FP16 I/O) passes, and the
    manifest records each check."""
    from repo_gen.build import build
    from repo_gen.config import BuildConfig
    from repo_gen.triton.repository import read_manifest

    repo = tmp_path / "repo"
    build(BuildConfig(model="mobilevit_xxs", output=repo, max_batch=4, opt_batch=2, precisions=("fp32", "fp16", "int8"),
                      runtimes=("trt",), io_dtype="fp16", pipeline=False, eval_count=8, calib_count=16))
    models = read_manifest(repo)["models"]
    assert len(models) == 3
    for name, entry in models.items():
        check = entry["extra"]["compile_check"]["native"]
        assert check["status"] == "passed", (name, check["errors"])
        assert check["layers"] > 1000 and check["engine_bytes"] > 1_000_000, (name, check)
        # no plan here (INT8 of random weights may be "inaccurate" instead), but the version folder is there
        assert entry["status"] in ("not_built", "inaccurate") and (repo / name / "1").is_dir(), entry["status"]

"""Fixtures of the TensorRT tests: tiny ONNX graphs built in code and a BuildConfig around them.

The graphs are identity-sized stand-ins with the classifier's names and a dynamic batch: the
writer only copies them and reads their node domains; no TensorRT is needed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

IMAGE = 64
CLASSES = 10


def make_classifier_onnx(path: Path, plugin_op: str | None = None, dtype=np.float32) -> Path:
    """[B,3,H,W] -> GlobalAveragePool -> Flatten -> MatMul -> [B,CLASSES]; optionally one node
    of a custom domain (what the plugin rewrite produces)."""
    import onnx
    import onnx_graphsurgeon as gs

    x = gs.Variable("input", dtype=dtype, shape=["batch", 3, IMAGE, IMAGE])
    pooled = gs.Variable("pooled", dtype=dtype)
    flat = gs.Variable("flat", dtype=dtype)
    out = gs.Variable("logits", dtype=dtype, shape=["batch", CLASSES])
    w = gs.Constant("w", np.ones((3, CLASSES), dtype=dtype))
    nodes = [gs.Node("GlobalAveragePool", inputs=[x], outputs=[pooled], name="pool"),
             gs.Node("Flatten", inputs=[pooled], outputs=[flat], attrs={"axis": 1}, name="flatten")]
    if plugin_op:
        act = gs.Variable("act", dtype=dtype)
        nodes.append(gs.Node(plugin_op, inputs=[flat], outputs=[act], name="plugin0", domain="repo_gen.plugins"))
        flat = act
    nodes.append(gs.Node("MatMul", inputs=[flat, w], outputs=[out], name="fc"))
    graph = gs.Graph(nodes=nodes, inputs=[x], outputs=[out], opset=17)
    model = gs.export_onnx(graph)
    if plugin_op:
        model.opset_import.append(onnx.helper.make_opsetid("repo_gen.plugins", 1))
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="session")
def make_onnx():
    """`make_classifier_onnx` as a fixture, for module-scoped fixtures in other files."""
    return make_classifier_onnx


@pytest.fixture()
def onnx_files(tmp_path) -> dict[str, Path]:
    return {
        "native": make_classifier_onnx(tmp_path / "fp16_trt.onnx"),
        "plugin": make_classifier_onnx(tmp_path / "fp16_plugins.onnx", plugin_op="RepoGenLayerNorm"),
    }


@pytest.fixture()
def make_cfg(tmp_path):
    from repo_gen.config import BuildConfig

    def _make(**kw):
        kw.setdefault("model", "mobilevit_xxs")
        kw.setdefault("output", tmp_path / "model repo")  # a space: paths must survive quoting
        kw.setdefault("image_size", IMAGE)
        kw.setdefault("max_batch", 32)
        kw.setdefault("opt_batch", 8)
        kw.setdefault("precisions", ("fp16",))
        kw.setdefault("runtimes", ("trt",))
        return BuildConfig(**kw)

    return _make


@pytest.fixture()
def variant(onnx_files):
    from repo_gen.precision import PrecisionVariant

    return PrecisionVariant("fp16", onnx_files["native"], onnx_files["native"], io_dtype="fp16")

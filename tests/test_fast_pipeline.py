"""The fast tier's check of the pipeline logic: export -> variants -> writers -> manifest round trip.

A tiny timm model (`test_resnet` at 32x32, 10 classes) goes through the real `build()` in seconds;
tiny ONNX graphs built in code go through every runtime writer. The real MobileViT, tritonserver
and perf_analyzer are the full tier's (`slow` / `server`).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from repo_gen.config import ALL_RUNTIMES, RUNTIMES, BuildConfig
from repo_gen.manifest import MANIFEST_NAME, MANIFEST_SCHEMA, load_manifest
from repo_gen.precision import PrecisionVariant
from repo_gen.results import WriteRequest
from repo_gen.runtimes import RUNTIME_WRITERS
from repo_gen.triton.render import parse_config

TINY = "tiny_test_resnet"
SIZE = 32
CLASSES = 10


@pytest.fixture()
def tiny_spec(monkeypatch, tmp_path):
    """Register timm's `test_resnet` as a buildable model for one test; its own stage cache."""
    from repo_gen import models
    from repo_gen.models import DataConfig, ModelSpec

    models.list_models()  # load the real families first, so ours is an addition
    spec = ModelSpec(TINY, "test_resnet", "test", default_size=SIZE, size_multiple=32, num_classes=CLASSES,
                     data=DataConfig(input_size=(3, SIZE, SIZE)))
    monkeypatch.setitem(models._REGISTRY, TINY, spec)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return spec


def _cfg(out: Path, **kw) -> BuildConfig:
    base = dict(model=TINY, output=out, max_batch=4, precisions=("fp32", "fp16", "int8"), calib_count=8,
                eval_count=8, runtimes=RUNTIMES, pipeline=True, triton_image="nvcr.io/nvidia/tritonserver:25.10-py3")
    base.update(kw)
    return BuildConfig(**base)


def test_build_results_and_manifest_round_trip(tiny_spec, tmp_path):
    from repo_gen.build import build

    out = tmp_path / "repo"
    report = build(_cfg(out))
    json.dumps(report.to_dict(), default=str)  # --json prints this

    # Export: typed, checked against PyTorch within the tolerance, tensors from the task's contract.
    export = report.export
    assert export is not None and export.num_classes == CLASSES
    assert export.check.worst <= export.check.tolerance
    assert [t.dims for t in export.inputs] == [[3, SIZE, SIZE]] and [t.dims for t in export.outputs] == [[CLASSES]]

    # Variants: FP32 is the reference (no fidelity); FP16/INT8 carry one tolerance on both graphs.
    by_p = {v.precision: v for v in report.variants}
    assert list(by_p) == ["fp32", "fp16", "int8"] and by_p["fp32"].fidelity is None
    for p in ("fp16", "int8"):
        v = by_p[p]
        assert v.fidelity is not None and v.trt_fidelity is not None
        assert v.fidelity.tolerance is v.trt_fidelity.tolerance
        assert "cosine_mean" in v.fidelity.metrics and "tolerance" not in v.fidelity.metrics
    assert by_p["fp16"].fidelity.tolerance.value == 5e-3 and by_p["int8"].fidelity.tolerance.value == 0.99

    # The manifest loads back into the same types the build returned.
    manifest = load_manifest(out)
    assert manifest.schema == MANIFEST_SCHEMA
    assert {e.name: e for e in report.entries} == manifest.models
    for (runtime, p) in [(r, p) for r in RUNTIMES for p in by_p]:
        e = manifest.models[f"{TINY}_{runtime}_{p}"]
        assert e.fidelity == by_p[p].fidelity_for(runtime)
        assert e.max_batch_size == 4 and e.inputs and e.outputs
        if runtime == "trt" and p != "fp32":  # the plan's record is the TensorRT form's, tolerance included
            assert e.fidelity is by_p[p].trt_fidelity or e.fidelity == by_p[p].trt_fidelity
            assert e.fidelity.tolerance is not None
        for f in e.files:
            assert (out / f).is_file(), f
        config = parse_config((out / e.name / "config.pbtxt").read_text())
        assert [(i.name, list(i.dims)) for i in config.input] == [(t.name, t.dims) for t in e.inputs]
        assert config.max_batch_size == e.max_batch_size
    record = manifest.builds[TINY]
    assert record["options"]["triton_image"] == "nvcr.io/nvidia/tritonserver:25.10-py3"
    assert record["variants"] == [v.record() for v in report.variants]

    # The ensemble takes the chosen classifier's tensors and max batch from its entry.
    ens = manifest.models[f"{TINY}_pipeline"]
    target = manifest.models[ens.extra["classifier"]]
    assert ens.outputs[0].name == target.outputs[0].name and ens.outputs[0].dims == target.outputs[0].dims
    # the preprocess output feeds the classifier input (an output declares no image format; Triton has none there)
    assert [(t.name, t.data_type, t.dims) for t in manifest.models[f"{TINY}_preprocess"].outputs] == \
        [(t.name, t.data_type, t.dims) for t in target.inputs]
    assert ens.max_batch_size == min(4, target.max_batch_size)

    # A second build restores every stage from the cache, as the same typed results.
    again = build(_cfg(out))
    assert len(again.notes) - len(report.notes) == 3 and all("stage cache" in n for n in again.notes[-3:])
    assert again.export.check == export.check
    assert [v.record() for v in again.variants] == [v.record() for v in report.variants]


def test_schema_1_manifest_loads_into_schema_2_types(tmp_path):
    fid_v1 = {"cosine_mean": 0.999, "rel_l2": 1e-3, "trt": {"cosine_mean": 0.998},
              "tolerance": {"metric": "rel_l2 <= tolerance and top-1 agreement 100%", "value": 5e-3}}
    entry = {"name": "m_py_fp16", "base_model": "m", "runtime": "py", "backend": "python", "precision": "fp16",
             "versions": [1], "files": ["m_py_fp16/config.pbtxt"], "status": "ready", "status_reason": "",
             "max_batch_size": 8, "data": {}, "extra": {"fidelity": fid_v1}}
    (tmp_path / MANIFEST_NAME).write_text(json.dumps({"schema": 1, "models": {"m_py_fp16": entry}, "builds": {}}))
    e = load_manifest(tmp_path).models["m_py_fp16"]
    assert e.fidelity is not None and e.fidelity.metrics == {"cosine_mean": 0.999, "rel_l2": 1e-3}
    assert e.fidelity.tolerance is not None and e.fidelity.tolerance.value == 5e-3
    assert "fidelity" not in e.extra and e.inputs == [] and e.max_batch_size == 8


def test_newer_manifest_schema_is_refused(tmp_path):
    from repo_gen.errors import UserError

    (tmp_path / MANIFEST_NAME).write_text(json.dumps({"schema": 99, "models": {}, "builds": {}}))
    with pytest.raises(UserError, match="schema 99"):
        load_manifest(tmp_path)


def _tiny_classifier(path: Path, classes: int = CLASSES) -> Path:
    """input [N,3,32,32] -> GlobalAveragePool -> Flatten -> Gemm -> logits [N,classes]."""
    w = helper.make_tensor("w", TensorProto.FLOAT, [3, classes], np.linspace(-1, 1, 3 * classes, dtype=np.float32))
    b = helper.make_tensor("b", TensorProto.FLOAT, [classes], np.zeros(classes, np.float32))
    graph = helper.make_graph(
        [helper.make_node("GlobalAveragePool", ["input"], ["pooled"]),
         helper.make_node("Flatten", ["pooled"], ["flat"]),
         helper.make_node("Gemm", ["flat", "w", "b"], ["logits"])],
        "tiny", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, SIZE, SIZE])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", classes])], [w, b])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def test_runtime_table_covers_every_runtime():
    assert tuple(RUNTIME_WRITERS) == ALL_RUNTIMES
    assert {r.backend for r in RUNTIME_WRITERS.values()} == {"onnxruntime", "python", "tensorrt"}  # torch: python


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_every_writer_declares_what_it_wrote(runtime, tiny_spec, tmp_path):
    onnx_path = _tiny_classifier(tmp_path / "tiny.onnx")
    cfg = _cfg(tmp_path / "repo", max_batch=16, opt_batch=4, version=2)
    variant = PrecisionVariant("fp32", onnx_path, onnx_path)
    d = tmp_path / "stage" / f"m_{runtime}_fp32"
    d.mkdir(parents=True)
    labels = [f"c{i}" for i in range(CLASSES)]
    w = RUNTIME_WRITERS[runtime].write(WriteRequest.make(cfg, d.name, d, variant, labels, work=tmp_path))
    assert w.status in (("ready",) if runtime != "trt" else ("ready", "not_built"))
    assert all((d / f).is_file() for f in w.files)
    config = parse_config((d / "config.pbtxt").read_text())
    assert config.max_batch_size == w.max_batch_size == 16
    assert [(t.name, list(t.dims)) for t in config.output] == [("logits", [CLASSES])] == \
        [(t.name, t.dims) for t in w.outputs]
    assert (d / "labels.txt").read_text().split() == labels


def test_doctor_json_and_exit_code(capsys):
    from repo_gen.cli import main

    rc = main(["doctor", "--json"])
    rows = json.loads(capsys.readouterr().out)
    assert {"name", "ok", "detail", "fix", "required"} <= set(rows[0])
    missing_required = [r for r in rows if r["required"] and not r["ok"]]
    assert rc == (1 if missing_required else 0)
    assert {r["name"] for r in rows if r["required"]} >= {"onnx", "onnxruntime", "torch"}


def test_serve_chooses_models_from_the_typed_manifest(tmp_path):
    from repo_gen.manifest import ModelEntry
    from repo_gen.triton.server import choose_models

    def entry(name, backend, status="ready", **kw):
        return ModelEntry(name, "m", name.split("_")[1], backend, "fp32", [1], [], status=status,
                          status_reason=f"{name} reason", **kw).to_dict()

    models = {"m_py_fp32": entry("m_py_fp32", "python"),
              "m_py_int8": entry("m_py_int8", "python", "inaccurate"),
              "m_trt_fp16": entry("m_trt_fp16", "tensorrt", "not_built"),
              "m_pipeline": entry("m_pipeline", "ensemble", extra={"steps": ["m_preprocess", "m_trt_fp16"]})}
    for name in [*models, "m_preprocess"]:
        (tmp_path / name).mkdir()
    (tmp_path / "m_preprocess" / "config.pbtxt").write_text('name: "m_preprocess"\nbackend: "python"\n')
    (tmp_path / MANIFEST_NAME).write_text(json.dumps({"schema": 2, "models": models, "builds": {}}))
    got = {c.name: c for c in choose_models(tmp_path, ["python"])}
    assert got["m_py_fp32"].serve and got["m_preprocess"].serve
    assert not got["m_py_int8"].serve and "m_py_int8 reason" in got["m_py_int8"].reason
    assert not got["m_trt_fp16"].serve and "not built" in got["m_trt_fp16"].reason
    assert not got["m_pipeline"].serve and "m_trt_fp16" in got["m_pipeline"].reason
    assert {c.name for c in choose_models(tmp_path, ["python"], allow_inaccurate=True) if c.serve} == \
        {"m_py_fp32", "m_py_int8", "m_preprocess"}

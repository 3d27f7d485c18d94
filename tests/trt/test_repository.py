"""write_tensorrt_model on a machine without TensorRT: every file but the plan, status not_built,
and a config Triton's own schema reads back with the fields the tensorrt backend needs."""

from __future__ import annotations

import json
import logging
import subprocess
from pathlib import Path

import pytest

from repo_gen.errors import UserError
from repo_gen.results import WriteRequest
from repo_gen.trt.builder import tensorrt_version
from repo_gen.trt.repository import can_build_here, plugin_op_types, write_tensorrt_model

pytestmark = pytest.mark.skipif(tensorrt_version() is not None, reason="these check the no-TensorRT path")

LABELS = [f"class_{i}" for i in range(10)]


def _write(tmp_path, cfg, variant, **kw):
    d = tmp_path / "staging" / "mobilevit_xxs_trt_fp16"
    d.mkdir(parents=True)
    w = write_tensorrt_model(WriteRequest.make(cfg, "mobilevit_xxs_trt_fp16", d, variant, LABELS), **kw)
    return d, (w.files, w.status, w.status_reason, w.details)


def _parse(text: str):
    from repo_gen.triton.render import parse_config

    return parse_config(text)


def test_tensorrt_stubs_are_not_tensorrt():
    # tensorrt-stubs leaves an importable namespace package named tensorrt: it must not count
    import tensorrt  # noqa: F401

    assert tensorrt_version() is None
    ok, why = can_build_here()
    assert not ok and "TensorRT is not installed" in why


def test_not_built_writes_everything_but_the_plan(tmp_path, make_cfg, variant, caplog):
    cfg = make_cfg(max_batch=32, opt_batch=8, version=2, max_queue_delay_us=250, instance_count=2)
    with caplog.at_level(logging.WARNING, logger="repo_gen"):
        d, (files, status, reason, extra) = _write(tmp_path, cfg, variant)
    assert status == "not_built"
    assert "\n" not in reason and "TensorRT is not installed" in reason and "rebuild_engine.sh" in reason
    assert set(files) == {"config.pbtxt", "labels.txt", "model.onnx", "rebuild_engine.sh", "README.md"}
    assert all((d / f).is_file() for f in files)
    # Triton needs the version folder before and after the rebuild; the plan is not faked
    assert (d / "2").is_dir() and not any((d / "2").iterdir())
    readme = (d / "README.md").read_text()
    assert "unable to load plan file to auto complete config: <repository>/mobilevit_xxs_trt_fp16/2/model.plan" in readme
    skipped = [r.getMessage() for r in caplog.records if "skipped 2/model.plan" in r.getMessage()]
    assert len(skipped) == 1 and "rebuild_engine.sh" in skipped[0]
    assert extra["tensorrt_version"] is None and extra["plan"] == "2/model.plan"
    assert extra["profile"] == {"input": "input", "min": [1, 3, 64, 64], "opt": [8, 3, 64, 64], "max": [32, 3, 64, 64]}
    assert extra["plugin_libs"] == [] and extra["plugins"]["chosen"] == "native"
    assert (d / "model.onnx").read_bytes() == Path(variant.trt_onnx).read_bytes()
    assert (d / "rebuild_engine.sh").stat().st_mode & 0o111
    subprocess.run(["bash", "-n", str(d / "rebuild_engine.sh")], check=True)


def test_config_fields_parse_with_tritons_schema(tmp_path, make_cfg, variant):
    cfg = make_cfg(max_batch=32, opt_batch=8, max_queue_delay_us=250, instance_count=2)
    d, (_, _, _, extra) = _write(tmp_path, cfg, variant)
    mc = _parse((d / "config.pbtxt").read_text())
    assert mc.platform == "tensorrt_plan" and mc.backend == ""
    assert mc.max_batch_size == 32 == extra["profile"]["max"][0]
    assert mc.default_model_filename == "model.plan"
    assert [(g.count, g.kind) for g in mc.instance_group] == [(2, mc.instance_group[0].KIND_GPU)]
    assert list(mc.dynamic_batching.preferred_batch_size) == [2, 4, 8, 16, 32] == extra["preferred_batch_sizes"]
    assert mc.dynamic_batching.max_queue_delay_microseconds == 250
    assert mc.input[0].name == "input" and list(mc.input[0].dims) == [3, 64, 64]
    from tritonclient.grpc import model_config_pb2 as pb

    assert mc.input[0].data_type == pb.TYPE_FP16 == mc.output[0].data_type  # the variant's io dtype
    assert mc.output[0].label_filename == "labels.txt"
    cuda = mc.optimization.cuda
    assert cuda.graphs
    specs = [(g.batch_size, g.graph_lower_bound.batch_size or g.batch_size) for g in cuda.graph_spec]
    assert specs == [(1, 1), (2, 2), (4, 3), (8, 5), (16, 9), (32, 17)]
    assert [g.batch_size for g in cuda.graph_spec] == extra["cuda_graph_batch_sizes"]
    for g in cuda.graph_spec:
        assert list(g.input["input"].dim) == [3, 64, 64]
        if g.HasField("graph_lower_bound"):
            assert list(g.graph_lower_bound.input["input"].dim) == [3, 64, 64]
    assert set(cuda.graph_spec[0].input) == {"input"}
    assert mc.parameters["execution_context_allocation_strategy"].string_value == "STATIC"
    assert sorted(w.batch_size for w in mc.model_warmup) == [1, 32]


def test_readme_says_which_tensorrt_and_how(tmp_path, make_cfg, variant):
    cfg = make_cfg(triton_image="nvcr.io/nvidia/tritonserver:25.10-py3")
    d, _ = _write(tmp_path, cfg, variant)
    readme = (d / "README.md").read_text()
    assert "TensorRT version" in readme and "not built yet" in readme
    assert "docker run --rm --gpus all" in readme and '-v "$PWD:$PWD" -w "$PWD"' in readme
    assert "nvcr.io/nvidia/tritonserver:25.10-py3 bash mobilevit_xxs_trt_fp16/rebuild_engine.sh" in readme
    # movable: no path of the machine that wrote it
    assert str(tmp_path) not in readme and "model repo" not in readme


def test_stale_plan_is_removed(tmp_path, make_cfg, variant):
    cfg = make_cfg()
    d = tmp_path / "staging" / "m"
    (d / "1").mkdir(parents=True)
    (d / "1" / "model.plan").write_bytes(b"ftrt old")
    w = write_tensorrt_model(WriteRequest.make(cfg, "m", d, variant, LABELS))
    files, status = w.files, w.status
    assert status == "not_built" and not (d / "1" / "model.plan").exists() and "1/model.plan" not in files


def test_version_compatible_recorded(tmp_path, make_cfg, variant):
    d, (_, _, _, extra) = _write(tmp_path, make_cfg(version_compatible=True, builder_opt_level=5), variant)
    assert extra["version_compatible"] is True and extra["builder_opt_level"] == 5
    script = (d / "rebuild_engine.sh").read_text()
    assert "--versionCompatible" in script and "--builderOptimizationLevel=5" in script
    assert "version-compatible=true" in (d / "README.md").read_text()


def test_plugin_ops_found_by_domain(onnx_files):
    assert plugin_op_types(onnx_files["native"]) == ()
    assert plugin_op_types(onnx_files["plugin"]) == ("RepoGenLayerNorm",)


def test_plugins_auto_without_tensorrt_is_pending(tmp_path, make_cfg, variant, onnx_files):
    lib = tmp_path / "lib" / "librepo_gen_plugins.so"
    cfg = make_cfg(plugins="auto")
    d, (files, status, _, extra) = _write(tmp_path, cfg, variant, plugin_onnx=onnx_files["plugin"], plugin_lib=lib)
    assert status == "not_built"
    assert {"model_plugins.onnx", "rebuild_engine_plugins.sh"} <= set(files)
    assert extra["plugins"]["mode"] == "auto" and extra["plugins"]["chosen"] == "pending"
    assert extra["plugins"]["candidates"] == {"native": {"status": "pending"}, "plugin": {"status": "pending"}}
    assert extra["plugin_libs"] == [str(lib.absolute())]
    plug = (d / "rebuild_engine_plugins.sh").read_text()
    assert f"--staticPlugins={lib.absolute()}" in plug and "model_plugins.onnx" in plug
    assert "--staticPlugins" not in (d / "rebuild_engine.sh").read_text()
    assert "time both" in (d / "README.md").read_text()


def test_plugins_auto_without_plugin_graph_builds_native(tmp_path, make_cfg, variant):
    _, (_, _, _, extra) = _write(tmp_path, make_cfg(plugins="auto"), variant)
    assert extra["plugins"]["chosen"] == "native" and list(extra["plugins"]["candidates"]) == ["native"]


def test_plugins_on_needs_graph_and_library(tmp_path, make_cfg, variant, onnx_files):
    with pytest.raises(UserError, match="--plugins on"):
        _write(tmp_path, make_cfg(plugins="on"), variant)
    with pytest.raises(UserError, match="--plugin-lib"):
        _write(tmp_path / "b", make_cfg(plugins="on"), variant, plugin_onnx=onnx_files["plugin"])


def test_plugins_on_uses_plugin_graph(tmp_path, make_cfg, variant, onnx_files):
    lib = tmp_path / "librepo_gen_plugins.so"
    d, (_, _, _, extra) = _write(tmp_path, make_cfg(plugins="on"), variant, plugin_onnx=onnx_files["plugin"],
                                 plugin_lib=lib)
    assert extra["engine"] == "plugin" and extra["plugin_libs"] == [str(lib)]
    assert (d / "model.onnx").read_bytes() == onnx_files["plugin"].read_bytes()
    assert f"--staticPlugins={lib}" in (d / "rebuild_engine.sh").read_text()
    json.dumps(extra)  # the manifest is JSON

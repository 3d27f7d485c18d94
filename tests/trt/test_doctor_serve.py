"""doctor rows and serve arguments for plan models, from a manifest and plan headers."""

from __future__ import annotations

import json
from pathlib import Path

from repo_gen import doctor
from repo_gen.manifest import load_manifest
from repo_gen.trt import serve


def _plan_bytes(major: int, minor: int, patch: int) -> bytes:
    head = bytearray(64)
    head[:4] = b"ftrt"
    head[24:27] = bytes([major, minor, patch])
    return bytes(head)


def _repo(tmp_path: Path, models: dict) -> Path:
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "repo-gen.json").write_text(json.dumps({"schema": 1, "models": models, "builds": {}}))
    return repo


def _entry(name, status="ready", extra=None, versions=(1,)):
    return {"name": name, "base_model": "m", "runtime": "trt", "backend": "tensorrt", "precision": "fp16",
            "versions": list(versions), "files": [], "status": status, "status_reason": "", "max_batch_size": 8,
            "data": {}, "extra": extra or {}}


def test_plan_header_version(tmp_path):
    p = tmp_path / "model.plan"
    p.write_bytes(_plan_bytes(10, 13, 0))
    assert doctor.plan_header_version(p) == "10.13.0"
    p.write_bytes(b"not a plan" * 10)
    assert doctor.plan_header_version(p) is None
    assert doctor.plan_header_version(tmp_path / "missing") is None


def test_version_rules():
    assert doctor.versions_compatible("10.13.0.35", "10.13.0", False)
    assert not doctor.versions_compatible("10.12.0", "10.13.0", False)
    assert doctor.versions_compatible("10.12.0", "10.13.0", True)  # version-compatible: later TRT ok
    assert not doctor.versions_compatible("10.13.0", "10.12.0", True)
    assert not doctor.versions_compatible("9.3.0", "10.13.0", True)


def test_check_plans(tmp_path):
    repo = _repo(tmp_path, {
        "a_trt_fp16": _entry("a_trt_fp16", extra={"tensorrt_version": "10.13.0.35"}),
        "b_trt_fp16": _entry("b_trt_fp16"),
        "c_trt_int8": _entry("c_trt_int8", status="not_built"),
        "d_onnx_fp32": dict(_entry("d_onnx_fp32"), backend="onnxruntime"),
    })
    for name, head in (("a_trt_fp16", b"x" * 64), ("b_trt_fp16", _plan_bytes(10, 9, 1))):
        (repo / name / "1").mkdir(parents=True)
        (repo / name / "1" / "model.plan").write_bytes(head)
    rows = {r.name: r for r in doctor.check_plans(repo)}
    assert set(rows) == {"plan a_trt_fp16/1", "plan b_trt_fp16/1", "plan c_trt_int8/1"}
    assert rows["plan a_trt_fp16/1"].ok and "10.13.0.35 (manifest)" in rows["plan a_trt_fp16/1"].detail
    assert rows["plan b_trt_fp16/1"].ok and "10.9.1 (plan header)" in rows["plan b_trt_fp16/1"].detail
    assert not rows["plan c_trt_int8/1"].ok and "rebuild_engine.sh" in rows["plan c_trt_int8/1"].fix


def test_machine_rows_have_four_fields():
    rows = [doctor.tensorrt_row(), *doctor.gpu_rows()]
    assert rows[0].name == "TensorRT" and not rows[0].required
    assert all(isinstance(r.ok, bool) and r.detail for r in rows)


def test_server_args(tmp_path):
    lib = tmp_path / "libs" / "librepo_gen_plugins.so"
    repo = _repo(tmp_path, {
        "a_trt_fp16": _entry("a_trt_fp16", extra={"plugin_libs": [str(lib)], "version_compatible": True}),
        "b_trt_int8": _entry("b_trt_int8", extra={"plugin_libs": [str(lib), "/opt/other.so"]}),
        "c_onnx_fp32": dict(_entry("c_onnx_fp32"), backend="onnxruntime"),
    })
    args = serve.tritonserver_args(repo)
    assert args == [f"--backend-config=tensorrt,plugins={lib};/opt/other.so",
                    "--backend-config=tensorrt,version-compatible=true"]
    assert serve.tritonserver_args(repo, ["b_trt_int8"]) == [f"--backend-config=tensorrt,plugins={lib};/opt/other.so"]
    assert serve.tritonserver_args(repo, ["c_onnx_fp32"]) == []


def test_serve_problems_name_the_missing_backend(tmp_path):
    repo = _repo(tmp_path, {"a_trt_fp16": _entry("a_trt_fp16", extra={"plugin_libs": ["/nope/lib.so"]})})
    problems = serve.serve_problems(repo, load_manifest(repo), tmp_path / "backends")
    assert any("no tensorrt backend" in p and "a_trt_fp16" in p for p in problems)
    assert any("/nope/lib.so" in p for p in problems)
    assert any("no plan built yet" in p for p in problems)


def test_doctor_flags_numpy2_for_the_python_backend_stub():
    """tritonserver 2.51's stub with numpy 2 sends empty outputs (tests/triton/test_numpy2_stub.py shows the
    served effect); doctor names it with the fix, and stays quiet for numpy 1 or another server."""
    bad = doctor.stub_numpy_row("2.51.0", "2.1.3")
    assert not bad.ok and "numpy 2.1.3" in bad.detail and "pre-processing" in bad.detail and "numpy<2" in bad.fix
    assert doctor.stub_numpy_row("2.51.0", "1.26.4").ok
    assert doctor.stub_numpy_row("2.60.0", "2.1.3").ok

"""The real Triton core (tritonserver 2.51 from the nvidia-pytriton wheel) reads every plan config
we write: loading fails only because this server has no tensorrt backend, never on the config.

The negative control proves the check can fail: the same server rejects a config with a field
Triton does not know, with a parse error instead of the missing-backend one.
"""

from __future__ import annotations

import pytest

from repo_gen.trt.builder import tensorrt_version

pytestmark = [pytest.mark.server, pytest.mark.skipif(tensorrt_version() is not None, reason="no-TensorRT path")]

LABELS = [f"class_{i}" for i in range(10)]
CASES = {
    "m_trt_fp16": {},
    "m_trt_int8": {"max_batch": 64, "opt_batch": 64, "version_compatible": True},
    "m_trt_fp32": {"max_batch": 1, "opt_batch": 1, "max_queue_delay_us": 0},
}


@pytest.fixture(scope="module")
def plan_repo(tmp_path_factory, make_onnx):
    from repo_gen.config import BuildConfig
    from repo_gen.precision import PrecisionVariant
    from repo_gen.results import WriteRequest
    from repo_gen.trt.repository import write_tensorrt_model

    root = tmp_path_factory.mktemp("plans")
    onnx = make_onnx(root / "g.onnx")
    repo = root / "repo"
    for name, kw in CASES.items():
        cfg = BuildConfig(model="mobilevit_xxs", output=repo, image_size=64, precisions=("fp16",),
                          runtimes=("trt",), **kw)
        d = repo / name
        d.mkdir(parents=True)
        v = PrecisionVariant(name.rsplit("_", 1)[1], onnx, onnx, io_dtype="fp16" if "fp16" in name else "fp32")
        write_tensorrt_model(WriteRequest.make(cfg, name, d, v, LABELS))
        # Triton looks for a backend only for a model with a version directory: the writer makes
        # it (empty until rebuild_engine.sh runs); this server lacks the backend that would read it
        assert (d / str(cfg.version)).is_dir()
    bad = repo / "m_bad_field"
    bad.mkdir()
    text = (repo / "m_trt_fp16" / "config.pbtxt").read_text().replace('name: "m_trt_fp16"', 'name: "m_bad_field"')
    (bad / "config.pbtxt").write_text(text + "\nno_such_field: 1\n")
    (bad / "1").mkdir()
    return repo


@pytest.fixture(scope="module")
def server(plan_repo):
    from repo_gen.errors import MissingDependency
    from repo_gen.tools import find_tritonserver
    from repo_gen.triton.server import TritonServer, free_ports

    try:
        inst = find_tritonserver()
    except MissingDependency as e:
        pytest.skip(str(e))
    if "tensorrt" in inst.backends:
        pytest.skip("this tritonserver has a tensorrt backend; the e2e test in tests/gpu covers it")
    srv = TritonServer(plan_repo, ports=free_ports(), models=[], exit_on_error=False, install=inst)
    srv.start(timeout_s=120)
    yield srv
    srv.stop()


@pytest.mark.parametrize("name", sorted(CASES))
def test_plan_config_fails_only_on_missing_backend(server, name):
    code, body = server.load_model(name)
    assert code == 400, body
    assert "unable to find backend library for backend 'tensorrt'" in body, body
    assert "failed to read text proto" not in body


def test_unknown_field_is_a_parse_error(server):
    code, body = server.load_model("m_bad_field")
    assert code != 200
    assert "unable to find backend library" not in body, body
    log = server.log_path.read_text(errors="replace")
    assert "failed to read text proto" in log and "m_bad_field" in log, server.log_tail(10)

"""TensorRT end to end on a GPU: build the FP16 plan of mobilevit_xxs with repo-gen, check it
against ONNX Runtime directly and through tritonserver's tensorrt backend.

Runs as is inside an NGC tritonserver (or tensorrt) image with repo-gen's requirements
installed (`pip install -e .[torch]`): TensorRT's python package, a visible GPU, torch + timm
(the export) and, for the serving half, a tritonserver with the tensorrt backend (the image's
/opt/tritonserver). Each missing piece skips with the reason. Requests go over plain HTTP with
Triton's binary tensor extension, so tritonclient is not needed.

Bounds: max|trt - ort| / max|ort| <= 2e-2 for FP16 (different kernels, FP16 accumulation
orders), 5e-3 for an FP32 plan (TensorRT may use TF32).
"""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from repo_gen.trt.builder import tensorrt_missing_reason, tensorrt_version
from repo_gen.trt.cuda import gpu_available

pytestmark = [pytest.mark.gpu, pytest.mark.slow]

if tensorrt_version() is None:
    pytest.skip(tensorrt_missing_reason(), allow_module_level=True)
_ok, _why = gpu_available()
if not _ok:
    pytest.skip(_why, allow_module_level=True)
pytest.importorskip("torch", reason="torch is needed to export the model (pip install torch timm)")
pytest.importorskip("timm", reason="timm is needed to export the model (pip install timm)")

MODEL = "mobilevit_xxs"
MAX_BATCH = 8
TOL = {"fp16": 2e-2, "fp32": 5e-3}
_DT = {np.dtype("float32"): "FP32", np.dtype("float16"): "FP16"}


def _precision() -> str:
    try:
        import repo_gen.precision.stage  # noqa: F401
    except ImportError:
        return "fp32"  # the precision stage is not in this build of repo-gen: still a real plan
    return "fp16"


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    from repo_gen.build import build
    from repo_gen.config import BuildConfig
    from repo_gen.triton.repository import read_manifest

    precision = _precision()
    out = tmp_path_factory.mktemp("trt") / "model_repository"
    cfg = BuildConfig(model=MODEL, output=out, max_batch=MAX_BATCH, opt_batch=4, precisions=(precision,),
                      runtimes=("onnx", "trt"), pipeline=False, timing_cache=out.parent / "timing.cache")
    build(cfg)
    name = f"{MODEL}_trt_{precision}"
    return out, name, precision, read_manifest(out)["models"][name]


def _ort(model_dir: Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(model_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    return sess.run(None, {"input": x})[0]


def _inputs(dtype: np.dtype, batch: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).random((batch, 3, 256, 256), dtype=np.float32).astype(dtype)


def test_plan_is_built_and_recorded(built):
    from repo_gen.doctor import check_plans
    from repo_gen.trt.builder import plan_max_batch

    repo, name, _, entry = built
    assert entry["status"] == "ready", entry["status_reason"]
    plan = repo / name / "1" / "model.plan"
    assert plan.is_file() and (repo / name / "trt_layers.json").is_file()
    assert json.loads((repo / name / "trt_layers.json").read_text())  # inspector output is JSON
    assert entry["extra"]["tensorrt_version"] == tensorrt_version()
    assert plan_max_batch(plan, "input") == MAX_BATCH == entry["max_batch_size"]
    rows = check_plans(repo)
    assert rows and all(r.ok for r in rows), rows


def test_plan_matches_onnxruntime(built):
    from repo_gen.compare import max_relative_error
    from repo_gen.trt.builder import EngineRunner

    repo, name, precision, _ = built
    with EngineRunner(repo / name / "1" / "model.plan", MAX_BATCH) as runner:
        dtype = runner.input_dtype
        for batch in (1, 3, MAX_BATCH):
            x = _inputs(dtype, batch, seed=batch)
            err = max_relative_error(_ort(repo / name, x), runner.infer(x))
            assert err <= TOL[precision], f"batch {batch}: {err:.2e}"
        assert runner.latency_ms((4, 3, 256, 256), iters=20) > 0


def _infer_http(url: str, model: str, x: np.ndarray) -> np.ndarray:
    header = {"inputs": [{"name": "input", "shape": list(x.shape), "datatype": _DT[x.dtype],
                          "parameters": {"binary_data_size": x.nbytes}}],
              "outputs": [{"name": "logits", "parameters": {"binary_data": True}}]}
    head = json.dumps(header).encode()
    req = urllib.request.Request(f"http://{url}/v2/models/{model}/infer", data=head + x.tobytes(), method="POST",
                                 headers={"Inference-Header-Content-Length": str(len(head)),
                                          "Content-Type": "application/octet-stream"})
    with urllib.request.urlopen(req, timeout=60) as r:  # noqa: S310 - loopback
        n = int(r.headers["Inference-Header-Content-Length"])
        body = r.read()
    meta = json.loads(body[:n])["outputs"][0]
    dt = {"FP32": np.float32, "FP16": np.float16}[meta["datatype"]]
    return np.frombuffer(body[n:], dtype=dt).reshape(meta["shape"])


def test_served_plan_matches_onnxruntime(built):
    from repo_gen.compare import max_relative_error
    from repo_gen.errors import MissingDependency
    from repo_gen.tools import find_tritonserver
    from repo_gen.triton.server import TritonServer, free_ports

    repo, name, precision, _ = built
    try:
        inst = find_tritonserver()
    except MissingDependency as e:
        pytest.skip(str(e))
    if "tensorrt" not in inst.backends:
        pytest.skip(f"tritonserver at {inst.binary} has no tensorrt backend (use the NGC tritonserver image)")
    from tritonclient.grpc import model_config_pb2 as pb

    from repo_gen.triton.render import parse_config

    fp16_io = parse_config((repo / name / "config.pbtxt").read_text()).input[0].data_type == pb.TYPE_FP16
    dtype = np.dtype("float16") if fp16_io else np.dtype("float32")
    server = TritonServer(repo, ports=free_ports(), models=[name], install=inst)
    server.start(timeout_s=300)
    try:
        for batch in (1, 5):
            x = _inputs(dtype, batch, seed=10 + batch)
            err = max_relative_error(_ort(repo / name, x), _infer_http(server.http_url, name, x))
            assert err <= TOL[precision], f"batch {batch}: {err:.2e}"
    finally:
        server.stop()

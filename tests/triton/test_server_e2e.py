"""Against a real tritonserver: readiness, real inference over gRPC and HTTP, perf_analyzer."""

import subprocess

import numpy as np
import pytest

from repo_gen.compare import max_relative_error
from repo_gen.onnx.runner import make_session
from tests.conftest import TEST_MAX_BATCH, TEST_MODEL

pytestmark = pytest.mark.server
PY_MODEL = f"{TEST_MODEL}_py_fp32"
ONNX_MODEL = f"{TEST_MODEL}_onnx_fp32"


def test_models_ready_or_unavailable_only_for_missing_backend(triton):
    # Ask the real Triton core to load every model, including those whose backend it lacks:
    # a config that failed to parse would say so here instead of naming the backend.
    triton.load_model(ONNX_MODEL)
    index = {m["name"]: m for m in triton.repository_index()}
    assert index[PY_MODEL]["state"] == "READY"
    for m in index.values():
        if m.get("state") != "READY":
            assert "unable to find backend library" in m.get("reason", ""), m


@pytest.mark.parametrize("protocol", ["grpc", "http"])
@pytest.mark.parametrize("batch", [1, TEST_MAX_BATCH])
def test_inference_matches_onnxruntime(triton, fp32_repo, protocol, batch):
    if protocol == "grpc":
        import tritonclient.grpc as client_mod

        client = client_mod.InferenceServerClient(triton.grpc_url)
    else:
        import tritonclient.http as client_mod

        client = client_mod.InferenceServerClient(triton.http_url)
    x = np.random.default_rng(batch).random((batch, 3, 256, 256), dtype=np.float32)
    inp = client_mod.InferInput("input", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    got = client.infer(PY_MODEL, [inp]).as_numpy("logits")
    ref = make_session(fp32_repo / PY_MODEL / "1" / "model.onnx").run(None, {"input": x})[0]
    assert got.shape == (batch, 1000)
    assert max_relative_error(ref, got) <= 1e-5


def test_perf_analyzer_measures(triton, perf_analyzer, tmp_path):
    csv = tmp_path / "pa.csv"
    argv = [str(perf_analyzer.binary), "-m", PY_MODEL, "-u", triton.grpc_url, "-i", "grpc",
            "--concurrency-range", "2", "--measurement-mode", "count_windows",
            "--measurement-request-count", "20", "-f", str(csv)]
    proc = subprocess.run(argv, capture_output=True, text=True, env=perf_analyzer.env, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    rows = csv.read_text().splitlines()
    assert rows[0].startswith("Concurrency") and len(rows) >= 2
    assert float(rows[1].split(",")[1]) > 0  # inferences/second


def test_repo_gen_talks_to_triton_only_through_tritonclient():
    """Health, readiness, repository index, load/unload: tritonclient, not hand-written HTTP."""
    import ast
    from pathlib import Path

    import repo_gen

    hand_written = []
    for path in Path(repo_gen.__file__).parent.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            hand_written += [f"{path.name}: {n}" for n in names if n.startswith(("urllib", "http.client", "requests"))]
    assert not hand_written, hand_written


def test_load_errors_carry_tritons_status_and_message(triton):
    code, message = triton.load_model("no_such_model")
    assert code >= 400 and "no_such_model" in message, (code, message)
    code, message = triton.load_model(PY_MODEL, '{"max_batch_size": "not a number"}')
    assert code >= 400 and message, (code, message)
    assert triton.is_live() and triton.is_ready()
    assert {m["name"] for m in triton.repository_index()} >= {PY_MODEL, ONNX_MODEL}

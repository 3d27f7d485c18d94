"""Against a real tritonserver: readiness, real inference over gRPC and HTTP, perf_analyzer."""

import csv as csv_mod

import numpy as np
import pytest

from repo_gen.compare import max_relative_error
from repo_gen.onnx.runner import make_session
from tests.conftest import TEST_MAX_BATCH, TEST_MODEL

pytestmark = pytest.mark.server
PY_MODEL = f"{TEST_MODEL}_py_fp32"
ONNX_MODEL = f"{TEST_MODEL}_onnx_fp32"


def test_models_ready_or_unavailable_only_for_missing_backend(repo_copy):
    # Ask the real Triton core to load every model, including those whose backend it lacks:
    # a config that failed to parse would say so here instead of naming the backend. Its own server:
    # a model that fails to load leaves a server with --strict-readiness not ready for good, which
    # would leak into every later test on the shared one.
    from repo_gen.triton.server import TritonServer, free_ports

    with TritonServer(repo_copy, ports=free_ports(), models=[PY_MODEL], exit_on_error=False) as triton:
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
    """perf_analyzer runs against the server and returns sane figures, however busy the machine is:
    count windows (20 requests each, a slow machine makes them longer) and a stability bound so wide
    that three complete windows always count (the machine's quietness is not what is tested)."""
    from repo_gen import procs

    csv = tmp_path / "pa.csv"
    argv = [str(perf_analyzer.binary), "-m", PY_MODEL, "-u", triton.grpc_url, "-i", "grpc",
            "--concurrency-range", "2", "--measurement-mode", "count_windows",
            "--measurement-request-count", "20", "--stability-percentage", "100000", "--max-trials", "3",
            "--verbose-csv", "-f", str(csv)]
    rc, out, timed_out = procs.run(argv, 300, env=perf_analyzer.env)
    assert rc == 0 and not timed_out, out[-3000:]
    rows = list(csv_mod.DictReader(csv.open()))
    assert len(rows) == 1 and rows[0]["Concurrency"] == "2", rows
    row = {k: float(v) for k, v in rows[0].items() if v not in ("", None)}
    assert row["Inferences/Second"] > 0
    assert row["p99 latency"] >= row["p50 latency"] > 0
    assert row["Server Compute Infer"] > 0  # the model ran in the server, not only the client


def test_repo_gen_talks_to_triton_only_through_tritonclient():
    """Health, readiness, repository index, load/unload: tritonclient, not hand-written HTTP
    (urllib.parse, which only splits URLs, is fine)."""
    import ast
    from pathlib import Path

    import repo_gen

    hand_written = []
    for path in Path(repo_gen.__file__).parent.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            hand_written += [f"{path.name}: {n}" for n in names if n.startswith(("urllib.request", "http.client", "requests"))]
    assert not hand_written, hand_written


def test_load_errors_carry_tritons_status_and_message(triton):
    code, message = triton.load_model("no_such_model")
    assert code >= 400 and "no_such_model" in message, (code, message)
    try:
        code, message = triton.load_model(PY_MODEL, '{"max_batch_size": "not a number"}')
        assert code >= 400 and message, (code, message)
    finally:  # a refused reload leaves the model unavailable: restore it for the other tests on this server
        assert triton.load_model(PY_MODEL) == (200, "")
    index = {m["name"]: m for m in triton.repository_index()}
    assert index[PY_MODEL]["state"] == "READY" and ONNX_MODEL in index
    assert triton.is_live() and triton.is_ready()  # a refused load of an unknown model or bad config harms nothing

"""Serving robustness against the real tritonserver: bad requests, reloads, a short soak.

Every bad request must get an error response, the server must stay READY, a well-behaved client
running at the same time must see no failure, and Triton's own accounting (metrics port and the
statistics API) must agree on the failures that reached the model.

Note on Triton 2.51's metrics: `nv_inference_request_failure` counts requests that reached the
model's scheduler (reasons BACKEND, CANCELED, REJECTED, OTHER). Requests refused while being
validated (wrong dtype/shape/batch, missing input, unknown model, malformed JSON) are answered
with 400 / INVALID_ARGUMENT and are *not* counted there; they have to be counted from response
codes (load balancer, client). `test_metrics_count_failures_that_reach_the_model` shows both.
"""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest

from tests.conftest import TEST_MAX_BATCH
from tests.reliability.helpers import PY_MODEL, ClientLoop, http_get, http_post, metric_sum
from tests.reliability.soak import run_soak

pytestmark = pytest.mark.server
SAMPLE = (3, 256, 256)
N_BYTES = int(np.prod(SAMPLE)) * 4


def _grpc_infer(triton, shape, dtype="FP32", model=PY_MODEL, name="input", timeout=60.0):
    import tritonclient.grpc as g

    np_dtype = {"FP32": np.float32, "FP16": np.float16, "INT32": np.int32, "INT8": np.int8}[dtype]
    x = np.random.default_rng(0).random(shape).astype(np_dtype)
    inp = g.InferInput(name, list(shape), dtype)
    inp.set_data_from_numpy(x)
    with g.InferenceServerClient(triton.grpc_url) as client:
        return client.infer(model, [inp], client_timeout=timeout)


def _http_infer_raw(triton, header: dict, binary: bytes = b"", model=PY_MODEL) -> tuple[int, bytes]:
    hdr = json.dumps(header).encode()
    headers = {"Content-Type": "application/octet-stream"}
    if binary:
        headers["Inference-Header-Content-Length"] = str(len(hdr))
    return http_post(f"http://{triton.http_url}/v2/models/{model}/infer", hdr + binary, headers)


def _binary_input(shape, size_bytes: int) -> dict:
    return {"inputs": [{"name": "input", "shape": list(shape), "datatype": "FP32",
                        "parameters": {"binary_data_size": size_bytes}}]}


def _shm_infer(triton, region_bytes: int, byte_size: int, offset: int = 0):
    """A request whose input lies in a registered system shared-memory region of `region_bytes`,
    claiming `byte_size` bytes from `offset`. Triton bounds-checks CUDA regions with the same code
    (its SharedMemoryManager); a CUDA region needs a GPU and is not exercised on the CPU here."""
    import os

    import tritonclient.grpc as g
    import tritonclient.utils.shared_memory as shm

    region = f"repo_gen_test_{region_bytes}_{offset}"
    key = f"/{region}_{os.getpid()}"
    handle = shm.create_shared_memory_region(region, key, region_bytes)
    try:
        with g.InferenceServerClient(triton.grpc_url) as client:
            client.register_system_shared_memory(region, key, region_bytes)
            try:
                inp = g.InferInput("input", [1, *SAMPLE], "FP32")
                inp.set_shared_memory(region, byte_size, offset)
                return client.infer(PY_MODEL, [inp], client_timeout=60.0)
            finally:
                client.unregister_system_shared_memory(region)
    finally:
        shm.destroy_shared_memory_region(handle)


# Each bad request: (id, how to send it, substring of the error Triton or model.py answers with).
BAD_REQUESTS = [
    ("wrong-dtype-int32", lambda t: _grpc_infer(t, (1, *SAMPLE), "INT32"), "data-type is 'INT32'"),
    ("wrong-dtype-fp16", lambda t: _grpc_infer(t, (1, *SAMPLE), "FP16"), "data-type is 'FP16'"),
    ("wrong-shape", lambda t: _grpc_infer(t, (1, 3, 128, 128)), "unexpected shape"),
    ("wrong-rank", lambda t: _grpc_infer(t, (1, 256, 256)), "unexpected shape"),
    ("batch-above-max", lambda t: _grpc_infer(t, (TEST_MAX_BATCH + 1, *SAMPLE)), f"batch-size must be <= {TEST_MAX_BATCH}"),
    ("zero-batch", lambda t: _grpc_infer(t, (0, *SAMPLE)), ""),
    ("unknown-model", lambda t: _grpc_infer(t, (1, *SAMPLE), model="no_such_model"), "unknown model"),
    ("unknown-input-name", lambda t: _grpc_infer(t, (1, *SAMPLE), name="bogus"), "unexpected inference input 'bogus'"),
    ("http-malformed-json", lambda t: http_post(f"http://{t.http_url}/v2/models/{PY_MODEL}/infer", b'{"inputs": ['),
     "failed to parse the request JSON"),
    ("http-json-not-an-object", lambda t: http_post(f"http://{t.http_url}/v2/models/{PY_MODEL}/infer", b"[1, 2, 3]"), ""),
    ("http-missing-input", lambda t: _http_infer_raw(t, {"inputs": []}), "missing required input"),
    ("http-oversized-body", lambda t: _http_infer_raw(t, _binary_input((1, *SAMPLE), 2 * N_BYTES), b"\0" * (2 * N_BYTES)), ""),
    ("http-truncated-body", lambda t: _http_infer_raw(t, _binary_input((1, *SAMPLE), N_BYTES), b"\0" * (N_BYTES // 2)), ""),
    ("http-large-declared-shape", lambda t: _http_infer_raw(t, {"inputs": [{"name": "input", "shape": [TEST_MAX_BATCH, *SAMPLE],
                                                                            "datatype": "FP32", "data": [0.0]}]}), ""),
    ("http-wrong-data-count", lambda t: _http_infer_raw(t, {"inputs": [{"name": "input", "shape": [1, *SAMPLE],
                                                                        "datatype": "FP32", "data": [0.0, 1.0]}]}), ""),
    ("shm-request-larger-than-region", lambda t: _shm_infer(t, N_BYTES // 2, N_BYTES), "invalid offset + byte size"),
    ("shm-offset-past-region", lambda t: _shm_infer(t, N_BYTES, N_BYTES, offset=N_BYTES // 2), "invalid offset + byte size"),
    ("http-string-data", lambda t: _http_infer_raw(t, {"inputs": [{"name": "input", "shape": [1, *SAMPLE], "datatype": "FP32",
                                                                   "data": ["__import__('os').system('id')"]}]}), ""),
]


def _outcome(fn, triton) -> tuple[bool, str]:
    """(was it an error response?, the error text)."""
    try:
        res = fn(triton)
    except Exception as e:  # noqa: BLE001 - the client raising is the error response we want
        return True, str(e)
    if isinstance(res, tuple):  # raw HTTP: (status, body)
        status, body = res
        return status >= 400, body.decode(errors="replace")
    return False, "succeeded"


def test_bad_requests_get_errors_server_stays_ready(triton):
    before_fail = metric_sum(f"127.0.0.1:{triton.ports.metrics}", "nv_inference_request_failure", PY_MODEL)
    results = {}
    with ClientLoop(triton.grpc_url, PY_MODEL, period_s=0.02) as good:
        for rid, fn, _expect in BAD_REQUESTS:
            is_error, text = _outcome(fn, triton)
            results[rid] = (is_error, text[:160])
            assert triton.is_ready(), f"server not READY after {rid}"
            assert triton.proc.poll() is None, f"server died after {rid}"
        time.sleep(0.5)
    bad = {k: v for k, v in results.items() if not v[0]}
    assert not bad, f"requests that did not get an error response: {bad}"
    for rid, _fn, expect in BAD_REQUESTS:
        if expect:
            assert expect.lower() in results[rid][1].lower(), (rid, results[rid])
    assert good.failed == 0, f"a well-behaved client failed during the bad requests: {good.errors}"
    assert good.ok >= 3, "the well-behaved client made (almost) no requests"
    # The server still computes correct results.
    assert _grpc_infer(triton, (TEST_MAX_BATCH, *SAMPLE)).as_numpy("logits").shape == (TEST_MAX_BATCH, 1000)
    after_fail = metric_sum(f"127.0.0.1:{triton.ports.metrics}", "nv_inference_request_failure", PY_MODEL)
    # Validation refusals are not the model's failures in Triton 2.51 (see module docstring); if a
    # newer Triton counts them, this says so and the docstring's note is to be updated.
    assert after_fail == before_fail, f"Triton now counts {after_fail - before_fail} validation refusals as failures"


def _stats_fail(triton) -> int:
    status, body = http_get(f"http://{triton.http_url}/v2/models/{PY_MODEL}/stats", 5)
    assert status == 200
    return sum(int(m["inference_stats"]["fail"]["count"]) for m in json.loads(body)["model_stats"])


def test_metrics_count_failures_that_reach_the_model(triton):
    """Requests a client abandons while they wait in the batcher's queue fail on the server (CANCELED):
    the metrics endpoint counts them, and agrees with the statistics API."""
    murl = f"127.0.0.1:{triton.ports.metrics}"
    m0, s0 = metric_sum(murl, "nv_inference_request_failure", PY_MODEL), _stats_fail(triton)
    stop = threading.Event()

    def keep_busy():
        while not stop.is_set():
            _grpc_infer(triton, (TEST_MAX_BATCH, *SAMPLE))

    threads = [threading.Thread(target=keep_busy, daemon=True) for _ in range(3)]
    for t in threads:
        t.start()
    abandoned = 0
    try:
        for _round in range(6):
            time.sleep(0.3)
            for _ in range(8):
                with pytest.raises(Exception, match="(?i)deadline"):
                    _grpc_infer(triton, (TEST_MAX_BATCH, *SAMPLE), timeout=0.02)
                abandoned += 1
            if metric_sum(murl, "nv_inference_request_failure", PY_MODEL) > m0:
                break
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    time.sleep(1.0)
    m1, s1 = metric_sum(murl, "nv_inference_request_failure", PY_MODEL), _stats_fail(triton)
    assert m1 > m0, f"{abandoned} abandoned requests, none counted as failed"
    assert m1 - m0 == s1 - s0, f"metrics say {m1 - m0} failures, the statistics API {s1 - s0}"
    assert triton.is_ready()


def test_requests_during_reload_never_fail(triton):
    """Reloading a loaded model (repository API, explicit mode) keeps the old instance serving until the new one is ready."""
    with ClientLoop(triton.grpc_url, PY_MODEL) as loop:
        time.sleep(1.0)
        for _ in range(2):
            status, text = triton.load_model(PY_MODEL)
            assert status == 200, text
            time.sleep(0.5)
        time.sleep(0.5)
    assert loop.failed == 0, loop.errors
    assert loop.ok > 0
    assert triton.is_ready()


def test_requests_during_unload_get_clean_errors(triton):
    """Unload -> load: requests in the gap get an error response (never a hang or a crash); after the
    load the model serves again and the other clients' connections still work."""
    with ClientLoop(triton.grpc_url, PY_MODEL) as loop:
        time.sleep(0.5)
        status, text = triton.unload_model(PY_MODEL)
        assert status == 200, text
        time.sleep(1.0)
        failed_in_gap = loop.failed
        status, text = triton.load_model(PY_MODEL)
        assert status == 200, text
        ok_before = loop.ok
        deadline = time.monotonic() + 30
        while loop.ok == ok_before and time.monotonic() < deadline:
            time.sleep(0.1)
    assert failed_in_gap > 0, "requests to an unloaded model did not fail"
    assert all(any(w in e.lower() for w in ("unavailable", "not_found", "unknown model", "not ready", "no available versions"))
               for e in loop.errors), loop.errors
    assert loop.ok > ok_before, "the model did not serve again after the load"
    assert triton.is_ready()
    index = {m["name"]: m for m in triton.repository_index()}
    assert index[PY_MODEL]["state"] == "READY"


@pytest.mark.slow
def test_short_soak(triton, perf_analyzer, tmp_path):
    """10 s of perf_analyzer at concurrency 32: no failed request, every slice of the run served requests
    (no stall), and the last slice's p99 is not far above the run's typical p99 (no drift). Other work on a
    shared machine moves single slices around, so drift is judged against the median slice, with room."""
    murl = f"127.0.0.1:{triton.ports.metrics}"
    fail0 = metric_sum(murl, "nv_inference_request_failure", PY_MODEL)
    res = run_soak(perf_analyzer, triton.grpc_url, PY_MODEL, concurrency=32, seconds=10, out_dir=tmp_path)
    assert res["returncode"] == 0, res["output_tail"]
    assert res["failed"] == 0 and res["served"] > 0, res
    assert metric_sum(murl, "nv_inference_request_failure", PY_MODEL) == fail0
    assert all(n > 0 for n in res["requests_per_window"]), res
    assert res["p99_last_ms"] <= 3 * float(np.median(res["p99_windows_ms"])), res
    assert triton.is_ready()


HUGE_SHAPE = [2**31, 3, 256, 256]


@pytest.mark.xfail(reason="tritonserver 2.51 (pytriton wheel) aborts with std::bad_alloc on an HTTP JSON request declaring "
                   f"shape {HUGE_SHAPE}: one request takes the server down. Mitigation: serve binds 127.0.0.1 by default; "
                   "in front of clients put a proxy that caps body and shape, or expose gRPC only", strict=False)
def test_http_huge_declared_shape_does_not_kill_the_server(repo_copy):
    """Kept separate, on its own server: it documents an upstream crash without taking down the shared one."""
    from repo_gen.triton.server import TritonServer, free_ports

    with TritonServer(repo_copy, ports=free_ports(), exit_on_error=False) as server:
        status, _ = _http_infer_raw(server, {"inputs": [{"name": "input", "shape": HUGE_SHAPE, "datatype": "FP32",
                                                         "data": [0.0]}]}) if server.is_ready() else (0, b"")
        time.sleep(1.0)
        alive = server.proc is not None and server.proc.poll() is None and server.is_ready()
        assert alive and status >= 400, f"server {'alive' if alive else 'DEAD'} after the request (HTTP {status})"

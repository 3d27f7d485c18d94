"""`<model>_pipeline` on a live tritonserver: real photos, bad inputs, failure isolation in a batch."""

from __future__ import annotations

import concurrent.futures
import json

import numpy as np
import pytest

from repo_gen.compare import max_relative_error
from repo_gen.data.preprocess import preprocess_bytes
from repo_gen.onnx.runner import make_session
from tests.conftest import TEST_MAX_BATCH
from tests.pipeline.conftest import CLASSIFIER, PIPELINE, PREPROCESS, huge_png

pytestmark = pytest.mark.server


@pytest.fixture(scope="module")
def reference(pipeline_repo):
    """In-process result: the same preprocess.py + ONNX Runtime on the classifier's model.onnx."""
    session = make_session(pipeline_repo / CLASSIFIER / "1" / "model.onnx")
    data = json.loads((pipeline_repo / "repo-gen.json").read_text())["models"][PIPELINE]["data"]

    def run(files: list[bytes]) -> np.ndarray:
        x = np.stack([preprocess_bytes(f, data["input_size"][1], data["interpolation"], data["crop_pct"],
                                       data["mean"], data["std"]) for f in files])
        return session.run(None, {"input": x})[0]

    return run


@pytest.fixture(scope="module")
def labels(pipeline_repo) -> list[str]:
    return (pipeline_repo / PIPELINE / "labels.txt").read_text().splitlines()


def _client(server, protocol: str):
    if protocol == "grpc":
        import tritonclient.grpc as mod

        return mod, mod.InferenceServerClient(server.grpc_url)
    import tritonclient.http as mod

    return mod, mod.InferenceServerClient(server.http_url, concurrency=8)


def _inputs(mod, files: list[bytes]):
    inp = mod.InferInput("IMAGE", [len(files), 1], "BYTES")
    inp.set_data_from_numpy(np.array([[f] for f in files], dtype=np.object_))
    return [inp]


def _good(pipeline_server, mod, client, files, k=None):
    out = mod.InferRequestedOutput("logits", class_count=k) if k else mod.InferRequestedOutput("logits")
    return client.infer(PIPELINE, _inputs(mod, files), outputs=[out]).as_numpy("logits")


def test_models_ready(pipeline_server):
    index = {m["name"]: m.get("state") for m in pipeline_server.repository_index()}
    assert index[PIPELINE] == index[PREPROCESS] == index[CLASSIFIER] == "READY", index


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_real_photos_equal_in_process_result(pipeline_server, photo_files, reference, labels, protocol):
    """Every photo, in every format and colour mode, batched up to max_batch per request:
    logits equal preprocess.py + ONNX Runtime in process, and the top-5 labels are the same."""
    mod, client = _client(pipeline_server, protocol)
    files = [f for _, f in photo_files]
    for start in range(0, len(files), TEST_MAX_BATCH):
        chunk = files[start : start + TEST_MAX_BATCH]
        got = _good(pipeline_server, mod, client, chunk)
        ref = reference(chunk)
        assert got.shape == ref.shape == (len(chunk), len(labels))
        assert max_relative_error(ref, got) <= 1e-5
        top5 = _good(pipeline_server, mod, client, chunk, k=5)
        for row, r in zip(top5, ref, strict=True):
            entries = [e.decode().split(":", 2) for e in row]
            assert [int(i) for _, i, _ in entries] == list(np.argsort(-r, kind="stable")[:5])
            assert [lab for _, _, lab in entries] == [labels[i] for i in np.argsort(-r, kind="stable")[:5]]
            np.testing.assert_allclose([float(s) for s, _, _ in entries], np.sort(r)[::-1][:5], rtol=1e-5, atol=1e-5)
    client.close()  # an open HTTP connection holds tritonserver's shutdown for 30 s


BAD_INPUTS = {
    "corrupt JPEG": (lambda ok: ok[: len(ok) // 3], "corrupt or truncated|cannot decode"),
    "empty": (lambda ok: b"", "empty input"),
    "non-image file": (lambda ok: open(__file__, "rb").read(), "not an image"),
    "10000x10000 PNG": (lambda ok: huge_png(10_000, 10_000), "pixel limit"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_fails_alone_server_stays_up(pipeline_server, photo_files, reference, case):
    import tritonclient.grpc as mod
    from tritonclient.utils import InferenceServerException

    client = mod.InferenceServerClient(pipeline_server.grpc_url)
    ok = next(f for n, f in photo_files if n.endswith(".jpeg"))
    make, match = BAD_INPUTS[case]
    with pytest.raises(InferenceServerException, match=match) as info:
        client.infer(PIPELINE, _inputs(mod, [make(ok)]))
    assert info.value.status() == "StatusCode.INVALID_ARGUMENT"
    with pytest.raises(InferenceServerException, match=f"image 1 of this request: .*({match})"):
        client.infer(PIPELINE, _inputs(mod, [ok, make(ok)]))  # a request is one unit: it fails whole
    assert pipeline_server.is_live() and pipeline_server.is_ready()
    got = _good(pipeline_server, mod, client, [ok])
    assert max_relative_error(reference([ok]), got) <= 1e-5
    client.close()


def test_10000x10000_jpeg_is_downscaled_and_answered(pipeline_server, huge_jpeg, reference):
    import tritonclient.grpc as mod

    client = mod.InferenceServerClient(pipeline_server.grpc_url)
    got = _good(pipeline_server, mod, client, [huge_jpeg])
    assert max_relative_error(reference([huge_jpeg]), got) <= 1e-5
    assert pipeline_server.is_live()
    client.close()


def _stats(client, name: str) -> dict:
    s = client.get_inference_statistics(model_name=name)["model_stats"][0]
    return {"executions": int(s.get("execution_count", 0)),
            "success": int(s["inference_stats"]["success"].get("count", 0)),
            "fail": int(s["inference_stats"]["fail"].get("count", 0))}


def test_corrupt_image_fails_only_its_request_within_one_dynamic_batch(pipeline_server, photo_files, reference):
    """Four concurrent requests, one corrupt, held by a 2 s queue delay so the batcher hands all
    four to ONE execute() of the preprocess model: the corrupt one errors, the others succeed."""
    import tritonclient.grpc as grpc_mod
    import tritonclient.http as http_mod
    from tritonclient.utils import InferenceServerException

    admin = http_mod.InferenceServerClient(pipeline_server.http_url)
    config = admin.get_model_config(PREPROCESS)
    config["dynamic_batching"]["max_queue_delay_microseconds"] = 2_000_000
    code, body = pipeline_server.load_model(PREPROCESS, json.dumps(config))
    assert code == 200, body
    try:
        goods = [f for n, f in photo_files if n.endswith((".jpeg", ".png"))][:3]
        files = [goods[0], b"\xff\xd8\xff\xe0 definitely not a JPEG", goods[1], goods[2]]
        before = _stats(admin, PREPROCESS)
        client = grpc_mod.InferenceServerClient(pipeline_server.grpc_url)
        futures = []
        for f in files:
            fut: concurrent.futures.Future = concurrent.futures.Future()
            client.async_infer(PIPELINE, _inputs(grpc_mod, [f]),
                               lambda result, error, fut=fut: fut.set_exception(error) if error else fut.set_result(result))
            futures.append(fut)
        outcomes = []
        for fut in futures:
            try:
                outcomes.append(fut.result(timeout=60).as_numpy("logits"))
            except InferenceServerException as e:
                outcomes.append(e)
        after = _stats(admin, PREPROCESS)
        assert after["executions"] - before["executions"] == 1, (before, after)  # one dynamic batch
        # (the python backend counts an error *response* as a successful request in Triton's stats)
        assert after["success"] + after["fail"] - before["success"] - before["fail"] == 4
        assert isinstance(outcomes[1], InferenceServerException) and "cannot decode" in outcomes[1].message()
        for i in (0, 2, 3):
            assert max_relative_error(reference([files[i]]), outcomes[i]) <= 1e-5
        client.close()
    finally:
        admin.close()
        code, body = pipeline_server.load_model(PREPROCESS)  # back to the config on disk
        assert code == 200, body
    assert pipeline_server.is_ready()

"""The torch runtime built and served on a CUDA GPU by the real tritonserver: several clients at once,
each answer checked against eager FP32 PyTorch on the same weights, so an answer handed to the wrong
request, an empty output or a batch read before it finished shows here (it caught an empty-output defect of
answering from a thread through response senders, RESULTS.md run 12). Skipped with the reason without a
GPU or tritonserver (the CPU path is tests/torch/test_torch_runtime.py)."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch is not installed")
if not torch.cuda.is_available():
    pytest.skip("no CUDA device visible to torch", allow_module_level=True)

from tests.conftest import TEST_MODEL, _need_tritonserver  # noqa: E402

pytestmark = [pytest.mark.gpu, pytest.mark.server]
MODEL = f"{TEST_MODEL}_torch_fp16"


@pytest.fixture(scope="module")
def gpu_repo(tmp_path_factory):
    from repo_gen.build import build
    from repo_gen.config import BuildConfig

    _need_tritonserver()
    out = tmp_path_factory.mktemp("gpurepo") / "model_repository"
    report = build(BuildConfig(model=TEST_MODEL, output=out, max_batch=8, precisions=("fp16",), runtimes=("torch",),
                               pipeline=False))
    (entry,) = [e for e in report.entries if e.name == MODEL]
    assert entry.status == "ready", entry.status_reason
    return out


def _references(version_dir, xs: list[np.ndarray]) -> list[np.ndarray]:
    import timm

    from repo_gen.torch import serving

    meta = json.loads((version_dir / serving.META_FILE).read_text())
    module = timm.create_model(meta["timm_name"], pretrained=False, num_classes=meta["num_classes"]).eval()
    module.load_state_dict(torch.load(version_dir / serving.WEIGHTS_FILE, weights_only=True))
    with torch.inference_mode():
        return [module(torch.from_numpy(x)).numpy() for x in xs]


def test_concurrent_clients_get_their_own_answers(gpu_repo):
    import tritonclient.grpc as grpcclient

    from repo_gen.triton.server import TritonServer, free_ports

    inputs = [np.random.default_rng(k).random((1 + k % 3, 3, 256, 256), dtype=np.float32) for k in range(16)]
    refs = _references(gpu_repo / MODEL / "1", inputs)
    server = TritonServer(gpu_repo, ports=free_ports(), models=[MODEL], exit_on_error=True)
    server.start(timeout_s=400)
    with server:

        def ask(x: np.ndarray) -> np.ndarray:
            client = grpcclient.InferenceServerClient(server.grpc_url)
            inp = grpcclient.InferInput("input", list(x.shape), "FP32")
            inp.set_data_from_numpy(x)
            got = client.infer(MODEL, [inp]).as_numpy("logits")
            client.close()
            return got.astype(np.float32)

        for _ in range(3):  # rounds of 4 clients at once: the dynamic batcher merges their requests
            with ThreadPoolExecutor(4) as pool:
                answers = list(pool.map(ask, inputs))
            for ref, got in zip(refs, answers, strict=True):
                assert got.shape == ref.shape
                rel_l2 = float(np.linalg.norm(got - ref) / np.linalg.norm(ref))
                assert rel_l2 < 2e-2, rel_l2  # FP16 vs FP32; another request's answer is ~1.4
        assert server.is_ready()

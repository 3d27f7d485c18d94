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

from tests.conftest import TEST_MODEL, _need_tritonserver, serve_without_repo_gen  # noqa: E402

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
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    from repo_gen.config import TORCH_GPU_INSTANCES

    cfg = text_format.Parse((out / MODEL / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())
    # the default on a GPU: TORCH_GPU_INSTANCES per GPU, so the clients below reach both instances at once
    assert [g.count for g in cfg.instance_group] == [TORCH_GPU_INSTANCES]
    # Every bucket AOT-precompiled (no compile caches needed), and a server-side load uses those files.
    from repo_gen.torch import serving

    version_dir = out / MODEL / "1"
    meta = json.loads((version_dir / serving.META_FILE).read_text())
    assert sorted(map(int, meta["precompiled"])) == meta["buckets"] and meta["cache_file"] is None
    assert all((version_dir / f).is_file() for f in meta["precompiled"].values())
    _, loaded = serving.load_runner(version_dir, torch.device("cuda", 0), log=pytest.fail)
    assert "precompiled" in loaded["load_s"] and "cache" not in loaded["load_s"], loaded["load_s"]
    return out


def _references(version_dir, xs: list[np.ndarray]) -> list[np.ndarray]:
    import timm

    from repo_gen.torch import serving

    meta = json.loads((version_dir / serving.META_FILE).read_text())
    module = timm.create_model(meta["timm_name"], pretrained=False, num_classes=meta["num_classes"]).eval()
    module.load_state_dict(torch.load(version_dir / serving.WEIGHTS_FILE, weights_only=True))
    with torch.inference_mode():
        return [module(torch.from_numpy(x)).numpy() for x in xs]


def _with_outputs_on_device(repo) -> str:
    """A copy of the built model that hands its outputs back as CUDA tensors (`output_memory` "device")."""
    import shutil

    name = f"{MODEL}_devout"
    shutil.copytree(repo / MODEL, repo / name)
    cfg = repo / name / "config.pbtxt"
    text = cfg.read_text()
    edited = text.replace(f'name: "{MODEL}"', f'name: "{name}"').replace('string_value: "host"', 'string_value: "device"')
    assert edited.count('string_value: "device"') == 1 and f'name: "{name}"' in edited
    cfg.write_text(edited)
    return name


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_concurrent_clients_get_their_own_answers(gpu_repo, protocol, monkeypatch, tmp_path):
    """Both output paths (one host copy per batch, the default; CUDA tensors through DLPack), over gRPC and
    HTTP without shared memory: what a plain client gets back. The server cannot import repo_gen: the
    precompiled buckets must load from the model's folder alone (checked in the server's log)."""
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient

    from repo_gen.triton.server import TritonServer, free_ports

    client_mod = grpcclient if protocol == "grpc" else httpclient
    inputs = [np.random.default_rng(k).random((1 + k % 3, 3, 256, 256), dtype=np.float32) for k in range(16)]
    refs = _references(gpu_repo / MODEL / "1", inputs)
    device_out = f"{MODEL}_devout"
    if not (gpu_repo / device_out).is_dir():
        _with_outputs_on_device(gpu_repo)
    serve_without_repo_gen(monkeypatch, tmp_path)
    server = TritonServer(gpu_repo, ports=free_ports(), models=[MODEL, device_out], exit_on_error=True)
    server.start(timeout_s=400)
    said = [ln for ln in server.log_path.read_text(errors="replace").splitlines() if f"{MODEL}: " in ln]
    loaded = [ln for ln in said if "loaded in" in ln]
    assert loaded and all("'precompiled'" in ln for ln in loaded) and not any("did not load" in ln for ln in said), said
    failures = []
    with server:
        for model in (MODEL, device_out):

            def ask(x: np.ndarray, model: str = model) -> np.ndarray:
                client = client_mod.InferenceServerClient(server.grpc_url if protocol == "grpc" else server.http_url)
                inp = client_mod.InferInput("input", list(x.shape), "FP32")
                inp.set_data_from_numpy(x)
                try:
                    got = client.infer(model, [inp]).as_numpy("logits")
                except Exception as e:  # e.g. an empty output: "cannot reshape array of size 0"
                    return f"{type(e).__name__}: {e}"
                finally:
                    client.close()
                return got.astype(np.float32)

            for _ in range(3):  # rounds of 4 clients at once: the dynamic batcher merges their requests
                with ThreadPoolExecutor(4) as pool:
                    answers = list(pool.map(ask, inputs))
                for ref, got in zip(refs, answers, strict=True):
                    if isinstance(got, str) or got.shape != ref.shape:
                        failures.append(f"{model} over {protocol}: {got if isinstance(got, str) else got.shape}")
                        continue
                    rel_l2 = float(np.linalg.norm(got - ref) / np.linalg.norm(ref))
                    if not rel_l2 < 2e-2:  # FP16 vs FP32; another request's answer is ~1.4
                        failures.append(f"{model} over {protocol}: relative L2 {rel_l2:.3g}")
        assert server.is_ready()
    assert not failures, f"{len(failures)} wrong answers, first: {failures[:3]}"


class _CudaRegion:
    """Device memory for CUDA shared memory, from the CUDA runtime torch already loaded (ctypes): the
    client side of `--shared-memory cuda` without cuda-python, which tritonclient's helpers need and
    the GPU machine lacks."""

    def __init__(self, n_bytes: int, device: int = 0):
        import ctypes

        torch.cuda.init()
        maps = open("/proc/self/maps").read().split()  # noqa: SIM115 - read at once
        paths = sorted({p for p in maps if "/libcudart.so" in p})
        if not paths:
            pytest.skip("libcudart is not loaded in this process: cannot make a CUDA shared-memory region")
        self.rt = ctypes.CDLL(paths[0])
        self.ptr = ctypes.c_void_p()
        self.n_bytes = n_bytes
        self._ok(self.rt.cudaSetDevice(device), "cudaSetDevice")
        self._ok(self.rt.cudaMalloc(ctypes.byref(self.ptr), ctypes.c_size_t(n_bytes)), "cudaMalloc")
        handle = (ctypes.c_byte * 64)()
        self._ok(self.rt.cudaIpcGetMemHandle(handle, self.ptr), "cudaIpcGetMemHandle")
        self.handle = bytes(handle)

    def _ok(self, status: int, what: str) -> None:
        assert status == 0, f"{what} returned CUDA error {status}"

    def write(self, x: np.ndarray, offset: int = 0) -> None:
        import ctypes

        assert offset + x.nbytes <= self.n_bytes
        data = np.ascontiguousarray(x)
        self._ok(self.rt.cudaMemcpy(ctypes.c_void_p(self.ptr.value + offset), data.ctypes.data_as(ctypes.c_void_p),
                                    ctypes.c_size_t(data.nbytes), 1), "cudaMemcpy")  # 1: host to device

    def free(self) -> None:
        self.rt.cudaFree(self.ptr)


def test_cuda_shm_request_larger_than_its_region_fails_alone(gpu_repo, monkeypatch, tmp_path):
    """The issue's bad input: a request naming more bytes than its CUDA shared-memory region holds (or an
    offset past its end) gets an error, and the server keeps serving: a good request from the same
    region before and after is answered correctly (inputs read in place on the GPU)."""
    import base64
    import contextlib

    import tritonclient.grpc as grpcclient

    from repo_gen.triton.server import TritonServer, free_ports

    image = np.random.default_rng(7).random((1, 3, 256, 256), dtype=np.float32)
    (ref,) = _references(gpu_repo / MODEL / "1", [image])
    region = _CudaRegion(image.nbytes)  # room for exactly one image
    region.write(image)
    serve_without_repo_gen(monkeypatch, tmp_path)
    server = TritonServer(gpu_repo, ports=free_ports(), models=[MODEL], exit_on_error=True)
    errors = {}
    try:
        server.start(timeout_s=400)
        client = grpcclient.InferenceServerClient(server.grpc_url)
        with server, contextlib.closing(client):
            client.register_cuda_shared_memory("one_image", base64.b64encode(region.handle), 0, image.nbytes)

            def infer(batch: int, byte_size: int, offset: int = 0) -> np.ndarray:
                inp = grpcclient.InferInput("input", [batch, 3, 256, 256], "FP32")
                inp.set_shared_memory("one_image", byte_size, offset=offset)
                return client.infer(MODEL, [inp]).as_numpy("logits")

            def check(got: np.ndarray) -> None:
                rel_l2 = float(np.linalg.norm(got - ref) / np.linalg.norm(ref))
                assert got.shape == ref.shape and rel_l2 < 2e-2, (got.shape, rel_l2)

            check(infer(1, image.nbytes))
            for name, call in (("twice the region", lambda: infer(2, 2 * image.nbytes)),
                               ("offset past the end", lambda: infer(1, image.nbytes, offset=image.nbytes // 2))):
                with pytest.raises(Exception) as refused:  # noqa: PT011 - tritonclient's exception, message checked
                    call()
                errors[name] = str(refused.value)
                assert server.is_ready() and server.proc.poll() is None, f"server not serving after {name}"
            check(infer(1, image.nbytes))
            client.unregister_cuda_shared_memory("one_image")
    finally:
        region.free()  # after the server stopped (the with above), which had the region mapped
    print(json.dumps(errors))
    for name, text in errors.items():
        assert "invalid offset + byte size" in text.lower(), (name, text)

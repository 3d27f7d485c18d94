"""The torch runtime's kernel choice on a CUDA GPU: our kernels measured against native, the
numbers recorded, and a model built with them loading from its own version folder (the staged
library and bindings, not this checkout). Skipped with the reason without a GPU or the library."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch", reason="torch is not installed")
if not torch.cuda.is_available():
    pytest.skip("no CUDA device visible to torch", allow_module_level=True)

from repo_gen.errors import MissingDependency  # noqa: E402
from repo_gen.plugins.kernels import find_library  # noqa: E402
from repo_gen.torch.kernel_choice import KERNEL_MARGIN  # noqa: E402

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def library():
    try:
        return find_library(None)
    except MissingDependency as e:
        pytest.skip(str(e))


def _meta(buckets):
    from repo_gen.torch import serving

    return {"timm_name": "mobilevit_xxs", "num_classes": 10, "image_size": 256, "dtype": "fp16", "device": "cuda",
            "channels_last": True, "fold_bn": True, "compile_mode": "default", "cuda_graphs": "manual",
            "dynamic_batch": False, "buckets": buckets, "cache_file": None, "kernels": "native",
            **serving.gpu_identity(0)}


def test_build_measures_kernels_and_a_chosen_model_loads_from_its_folder(library, tmp_path):
    import timm

    from repo_gen.torch import serving
    from repo_gen.torch.runtime import choose_here

    module = timm.create_model("mobilevit_xxs", pretrained=False, num_classes=10).eval()
    torch.save(module.state_dict(), tmp_path / serving.WEIGHTS_FILE)
    device = torch.device("cuda", 0)
    meta = _meta([1, 8])
    prepared = serving.build_module(meta, tmp_path / serving.WEIGHTS_FILE, device)
    choice = choose_here(meta, tmp_path, prepared, device, library, tolerance=5e-3)
    print(json.dumps(choice.to_dict()))
    assert choice.batch == 8 and choice.native_ms > 0 and choice.plugins_ms > 0
    assert choice.swapped["layer_norm"] > 0 and choice.swapped["attention"] > 0
    assert choice.rel_l2 < 5e-3 and choice.top1_agreement == 1.0
    assert meta["kernel_choice"]["speedup"] == choice.speedup
    assert (choice.kernels == "plugins") == (choice.speedup >= KERNEL_MARGIN)

    # Whatever won here, a model recorded with kernels must load from the staged files alone.
    from repo_gen.torch.kernel_choice import stage_kernel_files

    files = stage_kernel_files(tmp_path, library)
    assert all((tmp_path / f).is_file() for f in files)
    served = {**meta, "kernels": "plugins", "plugin_lib": library.name}
    with_kernels = serving.build_module(served, tmp_path / serving.WEIGHTS_FILE, device)
    kinds = {type(m).__name__ for m in with_kernels.modules()}
    assert "KernelLayerNorm" in kinds
    x = torch.rand(3, 3, 256, 256, device=device)
    native = serving.BucketRunner(prepared, {**meta, "buckets": [8]}, device)
    ours = serving.BucketRunner(with_kernels, {**served, "buckets": [8]}, device)
    ref, got = native(x), ours(x)
    assert float((got - ref).norm() / ref.norm()) < 5e-3


def test_kernels_off_records_why_native_was_kept(tmp_path):
    from repo_gen.torch.runtime import choose_here

    meta = _meta([1])
    choice = choose_here(meta, tmp_path, None, torch.device("cuda", 0), "--plugins off: native, not measured",
                         tolerance=5e-3)
    assert choice.kernels == "native" and meta["kernel_choice"]["reason"].startswith("--plugins off")
    assert "plugin_lib" not in meta


def test_model_with_our_kernels_is_precompiled_and_served_from_its_folder(library, tmp_path, monkeypatch):
    """`--plugins on`: every bucket AOT-precompiled with our kernels in it (so a start loads files instead
    of compiling), and the real tritonserver serves it with repo_gen off the python path (the kernels
    and their bindings come from the version folder, as in the NGC image), answers checked against
    eager FP32 PyTorch."""
    import numpy as np
    import timm
    import tritonclient.grpc as grpcclient

    from repo_gen.build import build
    from repo_gen.config import BuildConfig
    from repo_gen.torch import serving
    from repo_gen.triton.server import TritonServer, free_ports
    from tests.conftest import TEST_MODEL, _need_tritonserver, serve_without_repo_gen

    _need_tritonserver()
    out = tmp_path / "model_repository"
    report = build(BuildConfig(model=TEST_MODEL, output=out, max_batch=8, precisions=("fp16",), runtimes=("torch",),
                               pipeline=False, plugins="on", trt_plugin_lib=library))
    name = f"{TEST_MODEL}_torch_fp16"
    (entry,) = [e for e in report.entries if e.name == name]
    assert entry.status == "ready", entry.status_reason
    version_dir = out / name / "1"
    meta = json.loads((version_dir / serving.META_FILE).read_text())
    assert meta["kernels"] == "plugins" and meta["cache_file"] is None, (meta["kernels"], meta["cache_file"])
    assert sorted(map(int, meta["precompiled"])) == meta["buckets"]

    x = np.random.default_rng(3).random((3, 3, 256, 256), dtype=np.float32)
    module = timm.create_model(meta["timm_name"], pretrained=False, num_classes=meta["num_classes"]).eval()
    module.load_state_dict(torch.load(version_dir / serving.WEIGHTS_FILE, weights_only=True))
    with torch.inference_mode():
        ref = module(torch.from_numpy(x)).numpy()
    serve_without_repo_gen(monkeypatch, tmp_path)
    server = TritonServer(out, ports=free_ports(), models=[name], exit_on_error=True)
    server.start(timeout_s=400)
    with server:
        client = grpcclient.InferenceServerClient(server.grpc_url)
        inp = grpcclient.InferInput("input", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        got = client.infer(name, [inp]).as_numpy("logits")
        client.close()
    log = server.log_path.read_text(errors="replace")
    said = [ln for ln in log.splitlines() if f"{name}: " in ln]  # model.py's lines: how each instance loaded
    loaded = [ln for ln in said if "loaded in" in ln]
    assert loaded and all("kernels plugins" in ln and "'precompiled'" in ln for ln in loaded), said or log[-3000:]
    assert not any("did not load" in ln or "No module named" in ln for ln in said), said
    rel_l2 = float(np.linalg.norm(got - ref) / np.linalg.norm(ref))
    assert got.shape == ref.shape and rel_l2 < 2e-2, (got.shape, rel_l2)

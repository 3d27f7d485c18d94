"""The torch runtime on the CPU: built without a GPU (eager FP32), served by the real CPU tritonserver,
answers checked against ONNX Runtime on the build's own ONNX file. GPU behaviour (compile, CUDA
graphs, cache artifacts, CUDA shared memory) runs on the GPU machine through
benchmarks/bench_gpu_serving.py and is skipped here with the reason."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from repo_gen.compare import max_relative_error
from repo_gen.errors import UserError
from tests.conftest import TEST_MAX_BATCH, TEST_MODEL, _need_tritonserver

TORCH_MODEL = f"{TEST_MODEL}_torch_fp32"
PY_MODEL = f"{TEST_MODEL}_py_fp32"


@pytest.fixture(scope="module")
def torch_repo(tmp_path_factory):
    from repo_gen.build import build
    from repo_gen.config import BuildConfig
    from repo_gen.torch.runtime import visible_gpus

    if visible_gpus():
        pytest.skip("a GPU is visible: this file checks the CPU fallback (the GPU path runs in bench_gpu_serving.py)")
    out = tmp_path_factory.mktemp("torchrepo") / "model_repository"
    report = build(BuildConfig(model=TEST_MODEL, output=out, max_batch=TEST_MAX_BATCH, precisions=("fp32",),
                               runtimes=("torch", "py"), pipeline=False))
    return out, report


def test_cpu_build_says_what_it_built(torch_repo):
    repo, report = torch_repo
    (entry,) = [e for e in report.entries if e.name == TORCH_MODEL]
    note = entry.status_reason  # also logged as one warning line
    assert "no CUDA GPU here" in note and "eager FP32 CPU model" in note and "--runtimes torch" in note
    assert "\n" not in note
    meta = json.loads((repo / TORCH_MODEL / "1" / "torch_meta.json").read_text())
    assert meta["device"] == "cpu" and meta["compile_mode"] is None and meta["timm_name"] == TEST_MODEL
    assert meta["kernels"] == "native" and "no CUDA GPU" in meta["kernel_choice"]["reason"]
    cfg = (repo / TORCH_MODEL / "config.pbtxt").read_text()
    assert "KIND_CPU" in cfg and "gpus" not in cfg
    manifest = json.loads((repo / "repo-gen.json").read_text())
    entry = manifest["models"][TORCH_MODEL]
    assert entry["runtime"] == "torch" and entry["backend"] == "python" and entry["status"] == "ready"


def test_torch_model_gets_a_row_in_the_fidelity_table(torch_repo):
    """The model the torch runtime serves is judged on the build's evaluation images against the FP32
    ONNX graph, with the ONNX variants' metrics, in the same FIDELITY file and in its manifest entry."""
    repo, report = torch_repo
    (entry,) = [e for e in report.entries if e.name == TORCH_MODEL]
    fid = entry.fidelity
    assert fid is not None and TORCH_MODEL in fid.graph and "eager FP32 on the CPU" in fid.graph
    assert fid.metrics["n"] >= 1 and fid.metrics["top1_agreement"] == 1.0
    assert fid.metrics["rel_l2"] < 1e-4  # eager FP32 PyTorch vs FP32 ONNX Runtime: rounding only
    text = (repo / f"FIDELITY_{TEST_MODEL}.md").read_text()
    assert "torch runtime" in text and TORCH_MODEL in text
    manifest = json.loads((repo / "repo-gen.json").read_text())
    assert manifest["models"][TORCH_MODEL]["fidelity"]["graph"] == fid.graph


@pytest.mark.server
def test_served_torch_model_matches_onnxruntime(torch_repo, tmp_path):
    _need_tritonserver()
    import tritonclient.grpc as grpcclient

    from repo_gen.onnx.runner import make_session
    from repo_gen.triton.server import TritonServer, free_ports

    repo, _ = torch_repo
    served = tmp_path / "model_repository"
    shutil.copytree(repo, served)
    server = TritonServer(served, ports=free_ports(), exit_on_error=False)
    server.start(timeout_s=300)
    with server:
        status, text = server.load_model(TORCH_MODEL)
        assert status == 200, text
        client = grpcclient.InferenceServerClient(server.grpc_url)
        ort = make_session(repo / PY_MODEL / "1" / "model.onnx")
        for batch in (1, 3, TEST_MAX_BATCH):
            x = np.random.default_rng(batch).random((batch, 3, 256, 256), dtype=np.float32)
            inp = grpcclient.InferInput("input", list(x.shape), "FP32")
            inp.set_data_from_numpy(x)
            got = client.infer(TORCH_MODEL, [inp]).as_numpy("logits")
            assert got.shape == (batch, 1000)
            assert max_relative_error(ort.run(None, {"input": x})[0], got) <= 1e-4
        # A bad request fails alone and the model keeps serving.
        bad = grpcclient.InferInput("input", [1, 3, 128, 128], "FP32")
        bad.set_data_from_numpy(np.zeros((1, 3, 128, 128), np.float32))
        with pytest.raises(Exception, match="shape|dims|unexpected"):
            client.infer(TORCH_MODEL, [bad])
        assert server.is_ready()


def test_gpu_instance_groups_render_and_parse():
    """Instance groups across GPUs go through Triton's own schema (model_config_pb2)."""
    from repo_gen.triton.config import ModelConfigSpec, TensorSpec
    from repo_gen.triton.render import parse_config, render_config

    spec = ModelConfigSpec(name="m", template="python", max_batch_size=64,
                           inputs=[TensorSpec("input", "TYPE_FP32", [3, 256, 256])],
                           outputs=[TensorSpec("logits", "TYPE_FP32", [1000])], instance_count=2,
                           instance_kind="KIND_GPU", gpus=[0, 1], preferred_batch_sizes=[8, 32, 64],
                           parameters={"FORCE_CPU_ONLY_INPUT_TENSORS": "no"})
    cfg = parse_config(render_config(spec))
    (group,) = cfg.instance_group
    assert group.count == 2 and list(group.gpus) == [0, 1] and group.kind == group.KIND_GPU
    assert list(cfg.dynamic_batching.preferred_batch_size) == [8, 32, 64]


@pytest.mark.server
def test_triton_core_accepts_gpu_instance_groups(torch_repo, tmp_path):
    """The real Triton core reads a KIND_GPU / gpus config: on this GPU-less server the load fails
    on the missing GPU, not on the config's text (a bad field would fail as "failed to read text proto")."""
    _need_tritonserver()
    from repo_gen.triton.server import TritonServer, free_ports

    repo, _ = torch_repo
    served = tmp_path / "model_repository"
    shutil.copytree(repo, served)
    cfg = served / TORCH_MODEL / "config.pbtxt"
    cfg.write_text(cfg.read_text().replace("  kind: KIND_CPU\n", "  kind: KIND_GPU\n  gpus: [ 0, 1 ]\n"))
    from repo_gen.errors import BuildFailure

    server = TritonServer(served, ports=free_ports(), exit_on_error=True)
    with pytest.raises(BuildFailure, match="unsupported gpu id 0") as e:
        server.start(timeout_s=300)
    server.stop()
    assert "text proto" not in str(e.value)


@pytest.mark.parametrize("spec, fix", [("", "empty list"), ("0", "no CUDA GPU"), ("a,b", "comma list")])
def test_bad_gpu_lists_are_one_line_errors(spec, fix):
    from repo_gen.torch.runtime import parse_gpus, resolve_gpus, visible_gpus

    if visible_gpus():
        pytest.skip("checks a machine without GPUs")
    with pytest.raises(UserError, match=fix) as e:
        resolve_gpus(parse_gpus(spec))
    assert "\n" not in str(e.value)


def test_gpu_only_paths_skip_here():
    pytest.importorskip("torch")
    import torch

    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU: the compiled GPU model is built and served by benchmarks/bench_gpu_serving.py "
                    "on the GPU machine (RESULTS.md, 'Served on a GPU')")


def test_serve_gpu_override_moves_only_gpu_groups():
    from repo_gen.torch.runtime import gpu_config_override
    from repo_gen.triton.config import ModelConfigSpec, TensorSpec
    from repo_gen.triton.render import render_config

    def spec(kind, gpus):
        return ModelConfigSpec(name="m", template="python", max_batch_size=8,
                               inputs=[TensorSpec("input", "TYPE_FP32", [3, 64, 64])],
                               outputs=[TensorSpec("logits", "TYPE_FP32", [10])], instance_count=2,
                               instance_kind=kind, gpus=gpus)

    moved = json.loads(gpu_config_override(render_config(spec("KIND_GPU", [0])), (1, 2)))
    assert moved["instance_group"] == [{"count": 2, "kind": "KIND_GPU", "gpus": [1, 2]}]
    assert gpu_config_override(render_config(spec("KIND_CPU", [])), (0,)) is None


def test_build_with_bad_gpus_leaves_no_repository(tmp_path):
    from repo_gen.config import BuildConfig
    from repo_gen.torch.runtime import visible_gpus

    if visible_gpus():
        pytest.skip("checks a machine without GPUs")
    out = tmp_path / "model_repository"
    with pytest.raises(UserError, match="--gpus"):
        BuildConfig(model=TEST_MODEL, output=out, runtimes=("torch",), gpus=(0,))
    assert not out.exists()


def test_kernels_are_measured_only_with_plugins_on_and_a_library(tmp_path):
    """`--plugins off` (the default) serves native unmeasured; a missing library says so; a library is used."""
    from types import SimpleNamespace

    from repo_gen.torch.runtime import kernel_library

    lib = tmp_path / "libmobilevit_plugins.so"
    lib.write_bytes(b"")
    off = kernel_library(SimpleNamespace(plugins="off"), (lib, {"exists": True}))
    assert isinstance(off, str) and "--plugins auto" in off
    missing = kernel_library(SimpleNamespace(plugins="auto"), (None, {"exists": False, "note": "not found (build it)"}))
    assert isinstance(missing, str) and "not found (build it)" in missing
    assert kernel_library(SimpleNamespace(plugins="auto"), (lib, {"exists": True})) == lib


@pytest.mark.server
def test_rebuild_script_rebuilds_a_moved_repository_in_place(torch_repo, tmp_path):
    """rebuild.sh finds its repository from where it sits: a copied repository is rebuilt where it is
    now, and the original is not touched (no build machine's absolute --output inside)."""
    import os
    import subprocess
    import sys

    repo, _report = torch_repo
    moved = tmp_path / "elsewhere" / "model_repository"
    shutil.copytree(repo, moved)
    script = moved / TORCH_MODEL / "1" / "rebuild.sh"
    assert str(repo) not in script.read_text()
    original_meta = repo / TORCH_MODEL / "1" / "torch_meta.json"
    before = original_meta.stat().st_mtime_ns
    (moved / TORCH_MODEL / "1" / "torch_meta.json").unlink()
    env = {**os.environ, "PATH": f"{os.path.dirname(sys.executable)}{os.pathsep}{os.environ.get('PATH', '')}"}
    done = subprocess.run(["sh", str(script)], env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    meta = json.loads((moved / TORCH_MODEL / "1" / "torch_meta.json").read_text())
    assert meta["timm_name"] == TEST_MODEL and "rebuild.sh" in meta["rebuild"]
    assert original_meta.stat().st_mtime_ns == before


def test_bucket_runner_splits_a_batch_into_its_cheapest_pieces():
    """A merged batch between buckets runs as bucket-sized pieces instead of padding to the next bucket
    (two 64-image requests in a 256 bucket would cost twice their work), and the pieces' outputs are the
    whole batch's, in order."""
    torch = pytest.importorskip("torch")
    from repo_gen.torch.serving import BucketRunner

    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                                 torch.nn.Linear(4, 5)).eval()
    meta = {"dtype": "fp32", "buckets": [1, 8, 32, 64, 256], "image_size": 16}
    runner = BucketRunner(module, meta, torch.device("cpu"))
    assert runner.plan(128) == [64, 64]  # not one padded 256
    assert runner.plan(65) == [64, 1]  # not one padded 256
    assert runner.plan(256) == [256] and runner.plan(64) == [64] and runner.plan(3) == [3]
    assert runner.plan(600)[:2] == [256, 256]
    assert all(sum(runner.plan(n)) == n for n in range(1, 700))
    # Measured costs decide: if the 256 bucket were as cheap per call as one 64, 128 rows would pad into it.
    runner.cost[256] = runner.cost[64]
    runner._plans.clear()
    assert runner.plan(128) == [128]
    x = torch.rand(70, 3, 16, 16)
    runner.cost = {b: float(b + 8) for b in runner.buckets}
    runner._plans.clear()
    assert runner.plan(70) == [64, 6]
    with torch.inference_mode():
        want = module(x)
        assert torch.allclose(runner(x), want, atol=1e-6)  # eager: one call, no padding
        runner.fn = torch.nn.Sequential(module)  # as a compiled module is: bucket buffers and pieces
        # Three requests merged: pieces 64 + 6 cross the requests' boundaries.
        assert torch.allclose(runner([x[:30], x[30:67], x[67:]]), want, atol=1e-6)
        assert torch.allclose(runner(x[:9]), want[:9], atol=1e-6)
    with pytest.raises(ValueError, match="at least 1"):
        runner.plan(0)


def test_compiled_artifacts_from_another_machine_are_named_in_one_line():
    """AOT-precompiled buckets (or compile caches) built for another torch or GPU: one line naming the
    difference and the rebuild, before anything is loaded; a CPU model has nothing to mismatch."""
    pytest.importorskip("torch")
    from repo_gen.torch.serving import artifact_mismatch

    meta = {"device": "cuda", "precompiled": {"1": "compiled_b1.bin"}, "cache_file": None, "torch_version": "0.0.1",
            "gpu_name": "NVIDIA H200", "gpu_capability": "9.0", "rebuild": "sh m/1/rebuild.sh in the model repository"}
    line = artifact_mismatch(meta)
    assert line is not None and "\n" not in line
    assert "torch_version '0.0.1'" in line and "rebuild on this machine: sh m/1/rebuild.sh" in line
    assert artifact_mismatch({**meta, "precompiled": {}, "cache_file": "compile_cache.bin"}) == line
    assert artifact_mismatch({**meta, "precompiled": {}}) is None  # nothing compiled to mismatch
    assert artifact_mismatch({**meta, "device": "cpu"}) is None


def test_precompile_is_a_gpu_path_and_says_so_elsewhere():
    torch = pytest.importorskip("torch")
    from repo_gen.torch.serving import BucketRunner

    module = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3)).eval()
    runner = BucketRunner(module, {"dtype": "fp32", "buckets": [1, 8], "image_size": 16, "compile_mode": "default",
                                   "cuda_graphs": "manual"}, torch.device("cpu"))
    assert "GPU only" in (runner.can_precompile() or "")


def test_precompiled_bucket_round_trip_on_this_torch(tmp_path):
    """The AOT-precompile interface of the torch installed here (CI's; the H200's torch 2.11 is checked by
    tests/gpu): a bucket compiled, saved, and loaded in a fresh process over a fresh copy of the module
    answers as the eager module does. On the CPU, with a small network: the GPU path adds the CUDA-graph
    capture only."""
    import subprocess
    import sys
    import textwrap

    torch = pytest.importorskip("torch", reason="torch is not installed")
    from repo_gen.torch import serving

    if not hasattr(torch.compiler, "load_compiled_function"):
        pytest.skip(f"torch {torch.__version__} has no AOT precompile")
    make = textwrap.dedent("""
        import torch
        from repo_gen.torch import serving
        META = {"dtype": "fp32", "buckets": [2], "image_size": 16, "compile_mode": "default"}
        def make():
            torch.manual_seed(0)
            return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                                       torch.nn.Flatten(), torch.nn.Linear(4, 5)).eval()
    """)
    namespace: dict = {}
    exec(make, namespace)  # noqa: S102 - the same module definition here and in the fresh process
    runner = serving.BucketRunner(namespace["make"](), namespace["META"], torch.device("cpu"))
    runner.precompile()
    files, bound = runner.save_precompiled(tmp_path), runner.precompiled_bound
    assert files == {"2": serving.PRECOMPILED_FILE.format(bucket=2)} and (tmp_path / files["2"]).stat().st_size > 0
    check = make + textwrap.dedent(f"""
        from pathlib import Path
        module = make()
        runner = serving.BucketRunner(module, META, torch.device("cpu"))
        runner.load_precompiled(Path({str(tmp_path)!r}), {files!r}, {bound!r})
        x = torch.rand(2, 3, 16, 16)
        runner.inputs[2].copy_(x)
        with torch.inference_mode():
            got, ref = runner.compiled[2](runner.inputs[2]), module(x)
        print(float((got - ref).abs().max()))
    """)
    out = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, timeout=600)  # noqa: S603
    assert out.returncode == 0, out.stderr[-3000:]
    assert float(out.stdout.strip().splitlines()[-1]) < 1e-5

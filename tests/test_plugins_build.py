"""CI check of `plugins/`: the kernel library configures and builds with CMake + nvcc on a CPU
machine (sm_80 and sm_90, warnings as errors), exports exactly its C ABI, and rejects
unsupported shapes through that ABI before touching the GPU.

Skipped with the reason when nvcc or cmake is missing. The TensorRT wrappers are compiled too
when TensorRT headers are found (TENSORRT_ROOT); otherwise that test is skipped.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

PLUGINS = Path(__file__).resolve().parents[1] / "plugins"
C_ABI = {
    "mvt_abi_version",
    "mvt_error_string",
    "mvt_layernorm_f32",
    "mvt_layernorm_f16",
    "mvt_attention_f32",
    "mvt_attention_f16",
    "mvt_attention_packed_f32",
    "mvt_attention_packed_f16",
}
TRT_ENTRY_POINTS = {"getCreators", "getPluginCreators", "setLoggerFinder"}
INVALID_VALUE = 1  # cudaErrorInvalidValue


def _tools() -> dict[str, str]:
    found = {name: shutil.which(name) for name in ("cmake", "nvcc", "nm")}
    if not found["nvcc"] and Path("/usr/local/cuda/bin/nvcc").is_file():
        found["nvcc"] = "/usr/local/cuda/bin/nvcc"
    missing = [name for name, path in found.items() if not path]
    if missing:
        pytest.skip(f"{', '.join(missing)} not found: install the CUDA toolkit (nvcc) and cmake to build plugins/")
    return found  # type: ignore[return-value]


def _build(build_dir: Path, extra: list[str], env: dict[str, str] | None = None) -> Path:
    tools = _tools()
    generator = ["-G", "Ninja"] if shutil.which("ninja") else []
    configure = [tools["cmake"], "-S", str(PLUGINS), "-B", str(build_dir), *generator,
                 f"-DCMAKE_CUDA_COMPILER={tools['nvcc']}", "-DCMAKE_CUDA_ARCHITECTURES=80;90",
                 "-DMVT_WERROR=ON", *extra]
    run_env = {**os.environ, **(env or {})}
    out = subprocess.run(configure, capture_output=True, text=True, env=run_env, timeout=300)  # noqa: S603
    assert out.returncode == 0, out.stdout + out.stderr
    jobs = str(max(2, os.cpu_count() or 2))
    out = subprocess.run([tools["cmake"], "--build", str(build_dir), "-j", jobs],  # noqa: S603
                         capture_output=True, text=True, env=run_env, timeout=900)
    assert out.returncode == 0, out.stdout[-5000:] + out.stderr[-5000:]
    lib = build_dir / "libmobilevit_plugins.so"
    assert lib.is_file()
    return lib


def _exported(lib: Path) -> set[str]:
    out = subprocess.run([_tools()["nm"], "-D", "--defined-only", str(lib)],  # noqa: S603
                         capture_output=True, text=True, check=True)
    names = set()
    for line in out.stdout.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[1] in {"T", "W", "D", "B", "R", "V", "i"}:
            names.add(parts[2].split("@")[0])
    return names


@pytest.fixture(scope="module")
def kernel_lib(tmp_path_factory) -> Path:
    return _build(tmp_path_factory.mktemp("plugins_build"), ["-DMVT_BUILD_TRT_WRAPPERS=OFF"])


def test_kernel_library_exports_only_the_c_abi(kernel_lib):
    assert _exported(kernel_lib) == C_ABI


def test_c_abi_rejects_unsupported_shapes_without_a_gpu(kernel_lib):
    # Argument checks run before any CUDA call, so this needs no device.
    from repo_gen.plugins import KernelLibrary

    lib = KernelLibrary(kernel_lib)
    assert lib.error_string(INVALID_VALUE) == "invalid argument"
    fake = 1 << 20  # never dereferenced: every call below must be refused first
    for d in (8, 15, 1025):
        assert lib.layernorm(fake, fake, fake, fake, 4, d, 1e-5, half=True) == INVALID_VALUE
        assert lib.layernorm(fake, fake, fake, fake, 4, d, 1e-5, half=False) == INVALID_VALUE
    assert lib.layernorm(0, fake, fake, fake, 4, 64, 1e-5, half=True) == INVALID_VALUE
    for n, hd, heads, scale in [(16, 8, 4, 0.1), (16, 65, 4, 0.1), (0, 32, 4, 0.1), (1025, 32, 4, 0.1),
                                (16, 32, 0, 0.1), (16, 32, 4, 0.0)]:
        for half in (False, True):
            assert lib.attention(fake, fake, fake, fake, 2, heads, n, hd, scale, half=half) == INVALID_VALUE
            assert lib.attention_packed(fake, fake, 2, heads, n, hd, scale, half=half) == INVALID_VALUE


def test_kernel_swap_keeps_the_weights_and_uses_module_classes(kernel_lib):
    """What the torch runtime's `--plugins on` puts into MobileViT, checked without a GPU: every
    transformer LayerNorm and attention replaced, the state dict the same tensors under the same names
    (the served model loads the build's weights after the swap), and no forward bound to an instance
    (Dynamo's AOT precompile cannot package one, so a server start would compile every bucket)."""
    torch = pytest.importorskip("torch", reason="torch is not installed")
    timm = pytest.importorskip("timm", reason="timm is not installed")
    from timm.models.vision_transformer import Attention

    from repo_gen.torch.kernel_ops import KernelAttention, KernelLayerNorm, swap_in_kernels

    module = timm.create_model("mobilevit_xxs", pretrained=False, num_classes=10).eval()
    before = module.state_dict()
    layer_norms = sum(type(m) is torch.nn.LayerNorm for m in module.modules())
    attentions = sum(isinstance(m, Attention) for m in module.modules())
    counts = swap_in_kernels(module, str(kernel_lib))
    assert counts == {"layer_norm": layer_norms, "attention": attentions} and attentions == 9
    kinds = [type(m) for m in module.modules()]
    assert torch.nn.LayerNorm not in kinds and not any(issubclass(k, Attention) for k in kinds)
    assert kinds.count(KernelLayerNorm) == layer_norms and kinds.count(KernelAttention) == attentions
    assert not any("forward" in vars(m) for m in module.modules())
    after = module.state_dict()
    assert list(after) == list(before)
    assert all(after[k] is before[k] or after[k].data_ptr() == before[k].data_ptr() for k in before)


def test_tensorrt_wrappers_compile_when_headers_exist(tmp_path):
    root = os.environ.get("TENSORRT_ROOT")
    candidates = [Path(root) / "include"] if root else []
    candidates += [Path("/usr/include/x86_64-linux-gnu"), Path("/usr/include"), Path("/opt/tensorrt/include")]
    if not any((c / "NvInferRuntime.h").is_file() for c in candidates):
        pytest.skip("TensorRT headers not found (set TENSORRT_ROOT): the IPluginV3 wrappers are not compiled here")
    lib = _build(tmp_path / "build", ["-DMVT_BUILD_TRT_WRAPPERS=ON", "-DMVT_STATIC_REGISTRATION=OFF"])
    assert _exported(lib) == C_ABI | TRT_ENTRY_POINTS

"""ctypes bindings to the C ABI of `libmobilevit_plugins.so` (see plugins/api/mobilevitPlugins.h).

The functions take raw device pointers, so any framework can drive them; the GPU tests and
`benchmarks/bench_kernels.py` pass `torch.Tensor.data_ptr()` and the current stream's handle.
Every call returns the CUDA status as an int (0 = success, 1 = cudaErrorInvalidValue for an
unsupported shape); nothing raises on a bad shape, so callers can test rejections.
"""

from __future__ import annotations

import ctypes
import os
from pathlib import Path

try:
    from repo_gen.errors import MissingDependency
except ImportError:  # copied beside a served torch model that uses the kernels (repo_gen not installed there)

    class MissingDependency(RuntimeError):  # type: ignore[no-redef]
        pass

LIBRARY_ENV = "REPO_GEN_PLUGIN_LIB"
LIBRARY_NAME = "libmobilevit_plugins.so"
ABI_VERSION = 1

# Supported envelope, mirrored from the kernel headers.
LAYERNORM_WIDTHS = (16, 1024)
ATTENTION_HEAD_DIMS = (16, 64)
ATTENTION_MAX_TOKENS = 1024

_c_int = ctypes.c_int
_c_i32 = ctypes.c_int32
_c_i64 = ctypes.c_int64
_c_f32 = ctypes.c_float
_ptr = ctypes.c_void_p

_SIGNATURES: dict[str, tuple[object, list[object]]] = {
    "mvt_abi_version": (_c_int, []),
    "mvt_error_string": (ctypes.c_char_p, [_c_int]),
    "mvt_layernorm_f32": (_c_int, [_ptr, _ptr, _ptr, _ptr, _c_i64, _c_i32, _c_f32, _ptr]),
    "mvt_layernorm_f16": (_c_int, [_ptr, _ptr, _ptr, _ptr, _c_i64, _c_i32, _c_f32, _ptr]),
    "mvt_attention_f32": (_c_int, [_ptr, _ptr, _ptr, _ptr, _c_i32, _c_i32, _c_i32, _c_i32, _c_f32, _ptr]),
    "mvt_attention_f16": (_c_int, [_ptr, _ptr, _ptr, _ptr, _c_i32, _c_i32, _c_i32, _c_i32, _c_f32, _ptr]),
    "mvt_attention_packed_f32": (_c_int, [_ptr, _ptr, _c_i32, _c_i32, _c_i32, _c_i32, _c_f32, _ptr]),
    "mvt_attention_packed_f16": (_c_int, [_ptr, _ptr, _c_i32, _c_i32, _c_i32, _c_i32, _c_f32, _ptr]),
}


def _repo_root() -> Path:
    return Path(__file__).resolve().parents[2]


def find_library(path: str | os.PathLike[str] | None = None) -> Path:
    """Locate the library.

    Args:
        path: Explicit path. None resolves to `$REPO_GEN_PLUGIN_LIB`, then
            `plugins/build/libmobilevit_plugins.so` in this checkout.

    Raises:
        MissingDependency: Nothing at the resolved path; the message says how to build it.
    """
    if path is None:
        env = os.environ.get(LIBRARY_ENV)
        candidate = Path(env) if env else _repo_root() / "plugins" / "build" / LIBRARY_NAME
    else:
        candidate = Path(path)
    if not candidate.is_file():
        raise MissingDependency(
            f"{candidate} not found: build it with `cmake -S plugins -B plugins/build && "
            f"cmake --build plugins/build -j` or point {LIBRARY_ENV} at an existing {LIBRARY_NAME}"
        )
    return candidate


class KernelLibrary:
    """Typed handle on the C ABI. Pointers are ints (device addresses); stream is a handle or 0."""

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.path = find_library(path)
        self._lib = ctypes.CDLL(str(self.path))
        for name, (restype, argtypes) in _SIGNATURES.items():
            fn = getattr(self._lib, name)
            fn.restype = restype
            fn.argtypes = argtypes
        version = self._lib.mvt_abi_version()
        if version != ABI_VERSION:
            raise MissingDependency(
                f"{self.path} has C ABI version {version}, this package expects {ABI_VERSION}: rebuild plugins/"
            )

    def error_string(self, status: int) -> str:
        raw = self._lib.mvt_error_string(status)
        return raw.decode() if raw else f"status {status}"

    def layernorm(
        self, x: int, gamma: int, beta: int, y: int, rows: int, d: int, eps: float, *, half: bool, stream: int = 0
    ) -> int:
        fn = self._lib.mvt_layernorm_f16 if half else self._lib.mvt_layernorm_f32
        return int(fn(x, gamma, beta, y, rows, d, eps, stream))

    def attention(
        self,
        q: int,
        k: int,
        v: int,
        o: int,
        batch: int,
        heads: int,
        seq_len: int,
        head_dim: int,
        scale: float,
        *,
        half: bool,
        stream: int = 0,
    ) -> int:
        """Separate layout: q, k, v, o contiguous [batch, heads, seq_len, head_dim]."""
        fn = self._lib.mvt_attention_f16 if half else self._lib.mvt_attention_f32
        return int(fn(q, k, v, o, batch, heads, seq_len, head_dim, scale, stream))

    def attention_packed(
        self,
        qkv: int,
        o: int,
        batch: int,
        heads: int,
        seq_len: int,
        head_dim: int,
        scale: float,
        *,
        half: bool,
        stream: int = 0,
    ) -> int:
        """Packed layout: qkv [batch, seq_len, 3, heads, head_dim], o [batch, seq_len, heads, head_dim]."""
        fn = self._lib.mvt_attention_packed_f16 if half else self._lib.mvt_attention_packed_f32
        return int(fn(qkv, o, batch, heads, seq_len, head_dim, scale, stream))


def load_library(path: str | os.PathLike[str] | None = None) -> KernelLibrary:
    """Eager twin of `KernelLibrary(path)`."""
    return KernelLibrary(path)

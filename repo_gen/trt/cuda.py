"""Find GPUs and move bytes on them without torch, cuda-python or TensorRT.

Two sources for "which GPUs are there": `nvidia-smi` (name, compute capability, memory, driver)
and, where it is absent (containers often lack it), the CUDA driver library `libcuda.so.1`
through ctypes. The same driver API gives the few calls the builder needs to time and run an
engine (device memory, copies, a stream, events); the driver library is present wherever a
GPU is usable, so nothing else has to be installed. TensorRT uses the runtime API's primary
context, which is the one `DeviceContext` makes current, so pointers are shared.
"""

from __future__ import annotations

import ctypes
import shutil
import subprocess
from dataclasses import dataclass
from typing import Any

from repo_gen.errors import BuildFailure, MissingDependency

# CUdevice_attribute values (cuda.h); stable since CUDA 5.
_CC_MAJOR = 75
_CC_MINOR = 76
_SMI_TIMEOUT_S = 20


@dataclass(frozen=True)
class GpuInfo:
    index: int
    name: str
    compute_capability: str  # "9.0"
    memory_mib: int | None = None
    driver: str | None = None


def gpus_from_nvidia_smi(timeout_s: float = _SMI_TIMEOUT_S) -> list[GpuInfo] | None:
    """GPUs as nvidia-smi lists them; None when nvidia-smi is absent or fails."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    argv = [exe, "--query-gpu=index,name,compute_cap,memory.total,driver_version", "--format=csv,noheader,nounits"]
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, check=False)  # noqa: S603
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    gpus = []
    for line in out.stdout.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) < 5:
            continue
        try:
            mem: int | None = int(float(parts[3]))
        except ValueError:
            mem = None
        gpus.append(GpuInfo(int(parts[0]), parts[1], parts[2], mem, parts[4]))
    return gpus


def _libcuda() -> Any:
    try:
        return ctypes.CDLL("libcuda.so.1")
    except OSError as e:
        raise MissingDependency(
            f"the CUDA driver library libcuda.so.1 was not found ({e}); install the NVIDIA driver, or run "
            "in a container started with --gpus all"
        ) from e


def _check(lib: Any, rc: int, what: str) -> None:
    if rc != 0:
        msg = ctypes.c_char_p()
        lib.cuGetErrorString(rc, ctypes.byref(msg))
        text = msg.value.decode() if msg.value else f"error {rc}"
        raise BuildFailure(f"CUDA driver call {what} failed: {text}")


def gpus_from_driver() -> tuple[list[GpuInfo], str]:
    """GPUs as the CUDA driver sees them, and a reason when there are none."""
    try:
        lib = _libcuda()
    except MissingDependency as e:
        return [], str(e)
    rc = lib.cuInit(0)
    if rc != 0:
        return [], f"cuInit failed with CUDA error {rc} (100 means no CUDA-capable device is visible)"
    count = ctypes.c_int()
    _check(lib, lib.cuDeviceGetCount(ctypes.byref(count)), "cuDeviceGetCount")
    version = ctypes.c_int()
    lib.cuDriverGetVersion(ctypes.byref(version))
    driver = f"CUDA {version.value // 1000}.{version.value % 1000 // 10}"
    gpus = []
    for i in range(count.value):
        dev = ctypes.c_int()
        _check(lib, lib.cuDeviceGet(ctypes.byref(dev), i), "cuDeviceGet")
        name = ctypes.create_string_buffer(256)
        _check(lib, lib.cuDeviceGetName(name, 256, dev), "cuDeviceGetName")
        major, minor = ctypes.c_int(), ctypes.c_int()
        _check(lib, lib.cuDeviceGetAttribute(ctypes.byref(major), _CC_MAJOR, dev), "cuDeviceGetAttribute")
        _check(lib, lib.cuDeviceGetAttribute(ctypes.byref(minor), _CC_MINOR, dev), "cuDeviceGetAttribute")
        mem = ctypes.c_size_t()
        _check(lib, lib.cuDeviceTotalMem_v2(ctypes.byref(mem), dev), "cuDeviceTotalMem")
        gpus.append(GpuInfo(i, name.value.decode(), f"{major.value}.{minor.value}", mem.value >> 20, driver))
    return gpus, "" if gpus else "the CUDA driver reports 0 devices"


def list_gpus() -> tuple[list[GpuInfo], str]:
    """GPUs on this machine (nvidia-smi first, then the driver library) and, if none, why."""
    smi = gpus_from_nvidia_smi()
    if smi:
        return smi, ""
    gpus, reason = gpus_from_driver()
    if gpus:
        return gpus, ""
    if smi is None:
        reason = f"nvidia-smi not found; {reason}"
    return [], reason


def gpu_available() -> tuple[bool, str]:
    """(True, "<name> (sm X.Y)") or (False, reason in one line)."""
    gpus, reason = list_gpus()
    if not gpus:
        return False, f"no GPU: {reason}"
    g = gpus[0]
    return True, f"{g.name} (compute capability {g.compute_capability})"


class DeviceContext:
    """The primary CUDA context of one device made current, plus the calls the builder needs.

    Pointers are plain ints (what TensorRT's `set_tensor_address` takes). Use as a context
    manager: everything allocated through it is freed on exit.
    """

    def __init__(self, device: int = 0) -> None:
        self._lib = _libcuda()
        lib = self._lib
        for fn in ("cuMemAlloc_v2", "cuDevicePrimaryCtxRetain"):
            getattr(lib, fn).restype = ctypes.c_int
        _check(lib, lib.cuInit(0), "cuInit")
        self._dev = ctypes.c_int()
        _check(lib, lib.cuDeviceGet(ctypes.byref(self._dev), device), "cuDeviceGet")
        self._ctx = ctypes.c_void_p()
        _check(lib, lib.cuDevicePrimaryCtxRetain(ctypes.byref(self._ctx), self._dev), "cuDevicePrimaryCtxRetain")
        _check(lib, lib.cuCtxSetCurrent(self._ctx), "cuCtxSetCurrent")
        self._ptrs: list[int] = []
        self._events: list[int] = []
        self.stream = self._new_stream()

    def __enter__(self) -> DeviceContext:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _new_stream(self) -> int:
        s = ctypes.c_void_p()
        _check(self._lib, self._lib.cuStreamCreate(ctypes.byref(s), 0), "cuStreamCreate")
        return int(s.value or 0)

    def malloc(self, nbytes: int) -> int:
        p = ctypes.c_uint64()
        _check(self._lib, self._lib.cuMemAlloc_v2(ctypes.byref(p), ctypes.c_size_t(max(nbytes, 1))), "cuMemAlloc")
        self._ptrs.append(p.value)
        return p.value

    def to_device(self, ptr: int, host: Any) -> None:
        """Copy a C-contiguous numpy array to device memory at `ptr`."""
        src = host.ctypes.data_as(ctypes.c_void_p)
        _check(self._lib, self._lib.cuMemcpyHtoD_v2(ctypes.c_uint64(ptr), src, ctypes.c_size_t(host.nbytes)),
               "cuMemcpyHtoD")

    def to_host(self, host: Any, ptr: int) -> None:
        """Copy device memory at `ptr` into the C-contiguous numpy array `host`."""
        dst = host.ctypes.data_as(ctypes.c_void_p)
        _check(self._lib, self._lib.cuMemcpyDtoH_v2(dst, ctypes.c_uint64(ptr), ctypes.c_size_t(host.nbytes)),
               "cuMemcpyDtoH")

    def synchronize(self) -> None:
        _check(self._lib, self._lib.cuStreamSynchronize(ctypes.c_void_p(self.stream)), "cuStreamSynchronize")

    def event(self) -> int:
        e = ctypes.c_void_p()
        _check(self._lib, self._lib.cuEventCreate(ctypes.byref(e), 0), "cuEventCreate")
        self._events.append(int(e.value or 0))
        return int(e.value or 0)

    def record(self, event: int) -> None:
        _check(self._lib, self._lib.cuEventRecord(ctypes.c_void_p(event), ctypes.c_void_p(self.stream)), "cuEventRecord")

    def elapsed_ms(self, start: int, end: int) -> float:
        _check(self._lib, self._lib.cuEventSynchronize(ctypes.c_void_p(end)), "cuEventSynchronize")
        ms = ctypes.c_float()
        _check(self._lib, self._lib.cuEventElapsedTime(ctypes.byref(ms), ctypes.c_void_p(start), ctypes.c_void_p(end)),
               "cuEventElapsedTime")
        return float(ms.value)

    def close(self) -> None:
        lib = self._lib
        for p in self._ptrs:
            lib.cuMemFree_v2(ctypes.c_uint64(p))
        for e in self._events:
            lib.cuEventDestroy_v2(ctypes.c_void_p(e))
        if self.stream:
            lib.cuStreamDestroy_v2(ctypes.c_void_p(self.stream))
            self.stream = 0
        self._ptrs, self._events = [], []
        if self._ctx.value:
            lib.cuDevicePrimaryCtxRelease_v2(self._dev)
            self._ctx = ctypes.c_void_p()

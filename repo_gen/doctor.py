"""`repo-gen doctor`: what this machine can build and serve, each with a version or the reason
it is missing and how to get it; with a repository, whether its TensorRT plans load here.

Each row is a `Check` (name, ok, detail, fix, required): `detail` is a version or the reason
something is missing, `fix` says what to do ("" when ok). Nothing here imports TensorRT except
through `repo_gen.trt.builder`.

A plan's TensorRT version comes from the manifest (recorded when repo-gen built it) and, for
plans built elsewhere (rebuild_engine.sh), from the plan file's header: bytes 24-26 hold major,
minor and patch after the "ftrt" magic. That layout is not a documented API (it was given by
NVIDIA in NVIDIA/TensorRT#3073 and is used by Autoware), so it is read only when sane and
labelled as coming from the header.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import subprocess
from pathlib import Path
from typing import Any

from repo_gen.checks import Check
from repo_gen.manifest import ModelEntry
from repo_gen.trt.trtexec import PLAN_NAME, SCRIPT_NAME

PLAN_MAGIC = b"ftrt"
_HEADER_VERSION_AT = 24


def _pkg(module: str, dist: str, fix: str, required: bool = False) -> Check:
    try:
        importlib.import_module(module)
        return Check(dist, True, importlib.metadata.version(dist), required=required)
    except Exception as e:  # ImportError, or a broken install raising something else
        return Check(dist, False, f"not importable ({type(e).__name__}: {str(e)[:80]})", fix, required)


def run_checks(repo: Path | None = None) -> list[Check]:
    checks = [
        _pkg("torch", "torch", "pip install torch (scripts/setup.sh installs 2.14.1)", required=True),
        _pkg("timm", "timm", "pip install timm", required=True),
        _pkg("onnx", "onnx", "pip install onnx", required=True),
        _pkg("onnxruntime", "onnxruntime", "pip install onnxruntime", required=True),
        _pkg("onnx_graphsurgeon", "onnx_graphsurgeon", "pip install onnx-graphsurgeon", required=True),
        _pkg("tritonclient.grpc", "tritonclient", "pip install 'tritonclient[all]'"),
    ]
    checks += _trt_checks(repo)
    checks += _torch_checks(repo)
    checks += _server_checks()
    return checks


def _trt_checks(repo: Path | None) -> list[Check]:
    rows = [tensorrt_row(), compile_check_row(), *gpu_rows()]
    if repo is not None:
        rows += check_plans(repo)
    return rows


def _torch_checks(repo: Path | None) -> list[Check]:
    from repo_gen.torch import doctor as torch_doctor

    return torch_doctor.gpu_checks() + (torch_doctor.artifact_checks(repo) if repo is not None else [])


def _server_checks() -> list[Check]:
    from repo_gen.errors import MissingDependency
    from repo_gen.tools import INSTALL_PERF, INSTALL_TRITON, find_perf_analyzer, find_tritonserver

    out = []
    try:
        inst = find_tritonserver()
        version = _triton_version(inst.binary)
        out.append(Check("tritonserver", True, f"{version} at {inst.binary} ({inst.source})"))
        backends = inst.backends
        missing = [b for b in ("onnxruntime", "tensorrt", "python") if b not in backends]
        out.append(Check("triton backends", bool(backends), ", ".join(backends) or "none",
                         f"missing {', '.join(missing)}: use the NGC tritonserver image for them" if missing else ""))
        if "python" in backends:
            import numpy

            out.append(stub_numpy_row(version, numpy.__version__))
    except MissingDependency:
        out.append(Check("tritonserver", False, "not found", INSTALL_TRITON))
    try:
        pa = find_perf_analyzer()
        proc = subprocess.run([str(pa.binary), "--version"], capture_output=True, text=True, env=pa.env, timeout=20)
        ok = proc.returncode == 0
        detail = (proc.stdout.strip() or proc.stderr.strip()).splitlines()[0] if ok else (proc.stderr.strip().splitlines() or ["fails to start"])[-1]
        out.append(Check("perf_analyzer", ok, f"{detail} at {pa.binary}", "" if ok else "apt-get install libb64-0d; pip install nvidia-cuda-runtime-cu12 (scripts/setup.sh does both)"))
    except MissingDependency:
        out.append(Check("perf_analyzer", False, "not found", INSTALL_PERF))
    return out


def stub_numpy_row(triton_version: str, numpy_version: str) -> Check:
    """The numpy the python-backend stubs will import (this python's: repo-gen starts tritonserver with
    it first on PATH). tritonserver 2.51's stub was built for numpy 1: under numpy 2 it sends numpy-built
    outputs with 0 bytes, reads inputs with every row as the first and dies on BYTES tensors (found on the
    H200, benchmarks/RESULTS.md). repo-gen's numeric python models use DLPack there; its image
    pre-processing models refuse to load."""
    major = int(numpy_version.split(".")[0])
    if major < 2 or not triton_version.startswith("2.51"):
        return Check("python backend numpy", True, f"numpy {numpy_version} for the stubs")
    return Check("python backend numpy", False,
                 f"numpy {numpy_version} for the stubs of tritonserver {triton_version} (built for numpy 1): the generated "
                 "numeric python models work through DLPack, the image pre-processing models (BYTES inputs) will not load",
                 "pip install 'numpy<2' in the python that starts tritonserver (scripts/setup.sh pins numpy<2)")


def _triton_version(binary: Path) -> str:
    # tritonserver has no --version; the pytriton wheel names it in its metadata, NGC images in an env var.
    import os

    if os.environ.get("TRITON_SERVER_VERSION"):
        return os.environ["TRITON_SERVER_VERSION"]
    if "pytriton" in str(binary):
        return "2.51 (nvidia-pytriton " + importlib.metadata.version("nvidia-pytriton") + ")"
    return "unknown version"


# -- TensorRT: the installed version, the GPUs, the plans of a repository ------------------------------


def tensorrt_row() -> Check:
    from repo_gen.trt.builder import tensorrt_version

    version = tensorrt_version()
    if version is None:
        return Check("TensorRT", False, "not installed (plans can only be written as rebuild scripts here)",
                         "pip install tensorrt (needs internet), or run inside an NGC tensorrt/tritonserver image")
    return Check("TensorRT", True, version)


def compile_check_row() -> Check:
    """TensorRT-RTX, which compile-checks every TensorRT-bound graph (repo_gen/trt/compile_check.py)."""
    from repo_gen.trt.compile_check import INSTALL_HINT, library_status

    version, why = library_status()
    if version is None:
        return Check("TensorRT-RTX (compile check)", False, why, INSTALL_HINT)
    return Check("TensorRT-RTX (compile check)", True, f"{version} (AOT compile check only; not a serving TensorRT)")


def gpu_rows() -> list[Check]:
    from repo_gen.trt.cuda import list_gpus

    gpus, reason = list_gpus()
    if not gpus:
        return [Check("GPU", False, reason or "none found",
                          "TensorRT needs an NVIDIA GPU: install the driver, or start the container with --gpus all")]
    return [
        Check(f"GPU {g.index}", True,
                  f"{g.name}, compute capability {g.compute_capability}"
                  + (f", {g.memory_mib} MiB" if g.memory_mib else "") + (f", driver {g.driver}" if g.driver else ""))
        for g in gpus
    ]


def plan_header_version(plan: Path) -> str | None:
    """"major.minor.patch" from a plan file's header, or None when the header does not look like one."""
    try:
        with open(plan, "rb") as f:
            head = f.read(32)
    except OSError:
        return None
    if len(head) < _HEADER_VERSION_AT + 3 or head[:4] != PLAN_MAGIC:
        return None
    major, minor, patch = head[_HEADER_VERSION_AT:_HEADER_VERSION_AT + 3]
    if not 7 <= major <= 99 or minor > 99 or patch > 99:
        return None
    return f"{major}.{minor}.{patch}"


def _triple(version: str) -> tuple[int, ...]:
    parts = []
    for p in version.split(".")[:3]:
        digits = "".join(ch for ch in p if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


def versions_compatible(built: str, installed: str, version_compatible: bool) -> bool:
    """Same major.minor.patch; a version-compatible plan also loads on a later TensorRT of the same major."""
    b, i = _triple(built), _triple(installed)
    if b == i:
        return True
    return version_compatible and b[0] == i[0] and b <= i


def _plan_row(repo: Path, name: str, entry: ModelEntry, installed: str | None) -> list[Check]:
    extra = entry.extra
    rows = []
    script = repo / name / SCRIPT_NAME
    fix_build = f"run {script} inside the tritonserver image that serves {repo} (see {repo / name / 'README.md'})"
    for v in entry.versions or [1]:
        plan = repo / name / str(v) / PLAN_NAME
        label = f"plan {name}/{v}"
        if not plan.is_file():
            reason = str(entry.status_reason or "no model.plan").split(";")[0]
            rows.append(Check(label, False, reason if reason.startswith("plan not built") else
                                  f"plan not built ({reason})", fix_build))
            continue
        from_header = plan_header_version(plan)
        recorded = extra.get("tensorrt_version") if v == max(entry.versions or [v]) else None
        built = recorded or from_header
        source = "manifest" if recorded else "plan header"
        vc = bool(extra.get("version_compatible"))
        if built is None:
            rows.append(Check(label, False, "TensorRT version unknown (no manifest record, unreadable header)",
                                  f"rebuild it: {fix_build}"))
        elif installed is None:
            rows.append(Check(label, True, f"built with TensorRT {built} ({source}); no TensorRT here to compare"))
        elif not versions_compatible(built, installed, vc):
            rows.append(Check(label, False, f"built with TensorRT {built} ({source}), installed {installed}: "
                                  "it will not load", f"rebuild it with the serving TensorRT: {fix_build}"))
        else:
            rows.append(Check(label, True, f"built with TensorRT {built} ({source}), matches {installed}"
                                  + (" (version-compatible)" if vc else "")))
            rows.extend(_profile_row(label, plan, entry, extra))
    return rows


def _profile_row(label: str, plan: Path, entry: ModelEntry, extra: dict[str, Any]) -> list[Check]:
    """With TensorRT present: the plan's profile max batch must equal the config's max_batch_size."""
    from repo_gen.errors import RepoGenError
    from repo_gen.trt.builder import plan_max_batch

    want = int(entry.max_batch_size)
    input_name = (extra.get("profile") or {}).get("input", "input")
    try:
        got = plan_max_batch(plan, input_name, tuple(Path(p) for p in extra.get("plugin_libs", [])))
    except (RepoGenError, OSError, RuntimeError) as e:
        return [Check(f"{label} profile", False, f"could not read the plan's profile: {e}", "")]
    if got != want:
        return [Check(f"{label} profile", False, f"profile max batch {got} != max_batch_size {want}",
                          f"rebuild with --max-batch {want} (rebuild_engine.sh)")]
    return [Check(f"{label} profile", True, f"max batch {got} = max_batch_size")]


def check_plans(repo: Path) -> list[Check]:
    """One row per plan of every tensorrt model in the repository's manifest."""
    from repo_gen.manifest import load_manifest
    from repo_gen.trt.builder import tensorrt_version

    manifest = load_manifest(Path(repo))
    installed = tensorrt_version()
    rows: list[Check] = []
    for name, entry in sorted(manifest.of_backend("tensorrt").items()):
        rows.extend(_plan_row(Path(repo), name, entry, installed))
    return rows

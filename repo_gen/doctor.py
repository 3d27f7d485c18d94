"""`repo-gen doctor`: what this machine can build and serve, each with a version or the reason
it is missing and how to get it."""

from __future__ import annotations

import importlib
import importlib.metadata
import subprocess
from pathlib import Path
from typing import NamedTuple


class Check(NamedTuple):
    """One doctor row (also the rows of `repo_gen.trt.doctor`)."""

    name: str
    ok: bool
    detail: str  # version when ok, reason when not
    fix: str = ""  # what to do, "" when ok


def _pkg(module: str, dist: str, fix: str, what: str | None = None) -> Check:
    try:
        importlib.import_module(module)
        return Check(what or dist, True, importlib.metadata.version(dist))
    except Exception as e:  # ImportError, or a broken install raising something else
        return Check(what or dist, False, f"not importable ({type(e).__name__}: {str(e)[:80]})", fix)


def run_checks(repo: Path | None = None) -> list[Check]:
    checks = [
        _pkg("torch", "torch", "pip install torch (scripts/setup.sh installs 2.14.1)"),
        _pkg("timm", "timm", "pip install timm"),
        _pkg("onnx", "onnx", "pip install onnx"),
        _pkg("onnxruntime", "onnxruntime", "pip install onnxruntime"),
        _pkg("onnx_graphsurgeon", "onnx_graphsurgeon", "pip install onnx-graphsurgeon"),
        _pkg("tritonclient.grpc", "tritonclient", "pip install 'tritonclient[all]'"),
    ]
    checks += _trt_checks(repo)
    checks += _torch_checks(repo)
    checks += _server_checks()
    return checks


def _trt_checks(repo: Path | None) -> list[Check]:
    import repo_gen.trt.doctor as trt_doctor

    rows = trt_doctor.checks()
    if repo is not None:
        rows += trt_doctor.check_plans(repo)
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


def _triton_version(binary: Path) -> str:
    # tritonserver has no --version; the pytriton wheel names it in its metadata, NGC images in an env var.
    import os

    if os.environ.get("TRITON_SERVER_VERSION"):
        return os.environ["TRITON_SERVER_VERSION"]
    if "pytriton" in str(binary):
        return "2.51 (nvidia-pytriton " + importlib.metadata.version("nvidia-pytriton") + ")"
    return "unknown version"

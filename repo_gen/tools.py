"""Find the external programs repo-gen drives: tritonserver (+ its backends) and perf_analyzer.

Search order, first hit wins:
  tritonserver: $REPO_GEN_TRITONSERVER, `tritonserver` on PATH (NGC image: /opt/tritonserver/bin),
                the binary inside the installed nvidia-pytriton wheel (python backend only).
  perf_analyzer: $REPO_GEN_PERF_ANALYZER, the one scripts/setup.sh extracts into
                <venv>/opt/perf_analyzer, `perf_analyzer` on PATH (NGC -sdk image).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

from repo_gen.errors import MissingDependency

INSTALL_TRITON = (
    "install the nvidia-pytriton wheel (pip install nvidia-pytriton==0.7.0, done by scripts/setup.sh) "
    "for a CPU-only tritonserver, or use the NGC image nvcr.io/nvidia/tritonserver:<yy.mm>-py3"
)
INSTALL_PERF = "run scripts/setup.sh (extracts perf_analyzer from the tritonclient 2.48 wheel) or use the NGC -py3-sdk image"


def cache_dir() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "repo-gen"
    base.mkdir(parents=True, exist_ok=True)
    return base


@dataclass
class TritonInstall:
    binary: Path
    backend_dir: Path
    backends: list[str] = field(default_factory=list)
    source: str = ""  # "env", "path", "pytriton"
    env: dict[str, str] = field(default_factory=dict)


def _pytriton_root() -> Path | None:
    try:
        import importlib.util

        spec = importlib.util.find_spec("pytriton")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    root = Path(list(spec.submodule_search_locations)[0]) / "tritonserver"
    return root if (root / "bin" / "tritonserver").is_file() else None


def _pytriton_backend_dir(root: Path) -> Path:
    """A backend directory for the wheel's tritonserver with the python stub of *this* Python.

    The wheel ships one python-backend stub per Python version beside the backends, and the
    python backend looks for `triton_python_backend_stub` in its own directory. Rather than
    modify the installed wheel we assemble a directory of symlinks in the user cache; the
    kernel resolves the stub's $ORIGIN through the link, so its bundled libraries still load.
    """
    ver = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = root / "python_backend_stubs" / ver / "triton_python_backend_stub"
    key = hashlib.sha256(f"{root}:{ver}".encode()).hexdigest()[:12]
    out = cache_dir() / "tritonserver-backends" / key
    py = out / "python"
    py.mkdir(parents=True, exist_ok=True)
    links = {p.name: p for p in (root / "backends" / "python").iterdir() if p.is_file()}
    if stub.is_file():
        links["triton_python_backend_stub"] = stub
    for name, target in links.items():
        link = py / name
        if link.is_symlink() and Path(os.readlink(link)) == target:
            continue
        if link.exists() or link.is_symlink():
            link.unlink()
        link.symlink_to(target)
    for other in (root / "backends").iterdir():
        if other.is_dir() and other.name != "python" and not (out / other.name).exists():
            (out / other.name).symlink_to(other)
    return out


def list_backends(backend_dir: Path) -> list[str]:
    if not backend_dir.is_dir():
        return []
    return sorted(p.name for p in backend_dir.iterdir() if p.is_dir() and any(p.glob("libtriton_*.so")))


def find_tritonserver() -> TritonInstall:
    """Locate tritonserver and its backend directory, or raise MissingDependency saying how to get one."""
    env_bin = os.environ.get("REPO_GEN_TRITONSERVER")
    candidates: list[tuple[Path, str]] = []
    if env_bin:
        candidates.append((Path(env_bin), "env"))
    on_path = shutil.which("tritonserver")
    if on_path:
        candidates.append((Path(on_path), "path"))
    root = _pytriton_root()
    if root is not None:
        candidates.append((root / "bin" / "tritonserver", "pytriton"))
    for binary, source in candidates:
        if not binary.is_file() or not os.access(binary, os.X_OK):
            continue
        if source == "pytriton":
            assert root is not None
            backend_dir = _pytriton_backend_dir(root)
        else:
            backend_dir = Path(os.environ.get("REPO_GEN_BACKEND_DIR", binary.parent.parent / "backends"))
        env = {}
        # The python backend's stub imports numpy/onnxruntime from the environment whose bin
        # comes first on PATH when tritonserver starts (PYTHONPATH alone is not enough).
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
        return TritonInstall(binary, backend_dir, list_backends(backend_dir), source, env)
    raise MissingDependency(f"tritonserver not found; {INSTALL_TRITON}")


@dataclass
class PerfAnalyzer:
    binary: Path
    env: dict[str, str]
    version: str = ""


def find_perf_analyzer() -> PerfAnalyzer:
    candidates = []
    if os.environ.get("REPO_GEN_PERF_ANALYZER"):
        candidates.append(Path(os.environ["REPO_GEN_PERF_ANALYZER"]))
    candidates.append(Path(sys.prefix) / "opt" / "perf_analyzer" / "perf_analyzer")
    on_path = shutil.which("perf_analyzer")
    if on_path:
        candidates.append(Path(on_path))
    for binary in candidates:
        if binary.is_file() and os.access(binary, os.X_OK):
            env = dict(os.environ)
            libdirs = []
            try:
                import nvidia.cuda_runtime  # the CUDA 12 runtime perf_analyzer 2.48 links against

                libdirs.append(str(Path(list(nvidia.cuda_runtime.__path__)[0]) / "lib"))
            except ImportError:
                pass
            if libdirs:
                env["LD_LIBRARY_PATH"] = os.pathsep.join(libdirs + [env.get("LD_LIBRARY_PATH", "")]).rstrip(os.pathsep)
            return PerfAnalyzer(binary, env)
    raise MissingDependency(f"perf_analyzer not found; {INSTALL_PERF}")

"""Pack tritonserver 2.51 (python backend) + perf_analyzer 2.48 into one tar.xz for a GPU machine
that cannot install wheels (no network, no pip), e.g. the borrowed H200.

Sources are the wheels scripts/setup.sh installs into the venv: nvidia-pytriton 0.7.0 (tritonserver,
its backends and the bundled libraries) and perf_analyzer extracted from tritonclient 2.48.0.
Layout inside the archive (the server's RPATH `$ORIGIN/../../../nvidia_pytriton.libs` needs it):

    triton/pytriton/tritonserver/{bin,backends,caches}   backends/python/ holds the stub of --python
    triton/nvidia_pytriton.libs/                         minus libpython 3.13, which nothing we run uses
    triton/perf_analyzer/perf_analyzer                   + libb64.so.0d, libcudart.so.12 -> bundled libs
    triton/env.sh                                        exports REPO_GEN_TRITONSERVER & co.

On the target: `tar xJf triton-gpu.tar.xz -C DIR && source DIR/triton/env.sh`, then repo-gen serve /
bench find both programs. The stub must match the target's python3 (3.12 on the H200 image).

Usage: python scripts/pack_triton_gpu.py --output .devcarry/triton-gpu.tar.xz [--python 3.12]
"""

from __future__ import annotations

import argparse
import io
import sys
import tarfile
from pathlib import Path

ENV_SH = """# source me: points repo-gen at the tritonserver and perf_analyzer unpacked beside this file
_root="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export REPO_GEN_TRITONSERVER="$_root/pytriton/tritonserver/bin/tritonserver"
export REPO_GEN_BACKEND_DIR="$_root/pytriton/tritonserver/backends"
export REPO_GEN_PERF_ANALYZER="$_root/perf_analyzer/perf_analyzer"
export LD_LIBRARY_PATH="$_root/perf_analyzer${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
"""


def site_packages() -> Path:
    import pytriton  # noqa: F401 - located, not used

    return Path(sys.modules["pytriton"].__path__[0]).parent


def one(libs: Path, pattern: str) -> Path:
    hits = sorted(libs.glob(pattern))
    if len(hits) != 1:
        raise SystemExit(f"error: expected one {pattern} in {libs}, found {len(hits)}; reinstall nvidia-pytriton==0.7.0")
    return hits[0]


def pack(output: Path, python: str, perf: Path) -> int:
    try:
        sp = site_packages()
    except ImportError:
        print("error: nvidia-pytriton is not installed in this Python; run scripts/setup.sh", file=sys.stderr)
        return 2
    server = sp / "pytriton" / "tritonserver"
    stub = server / "python_backend_stubs" / python / "triton_python_backend_stub"
    libs = sp / "nvidia_pytriton.libs"
    if not stub.is_file():
        print(f"error: --python {python}: no stub at {stub}; choose one of "
              f"{', '.join(sorted(p.name for p in (server / 'python_backend_stubs').iterdir()))}", file=sys.stderr)
        return 2
    if not perf.is_file():
        print(f"error: --perf-analyzer {perf}: no such file; run scripts/setup.sh", file=sys.stderr)
        return 2
    b64, cudart = one(libs, "libb64-*.so.0d"), one(libs, "libcudart-*.so.12*")
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(output.name + ".partial")
    with tarfile.open(tmp, "w:xz", preset=6) as tar:
        for sub in ("bin", "backends", "caches"):
            tar.add(server / sub, f"triton/pytriton/tritonserver/{sub}",
                    filter=lambda ti: None if "__pycache__" in ti.name else ti)
        tar.add(stub, "triton/pytriton/tritonserver/backends/python/triton_python_backend_stub")
        for lib in sorted(libs.iterdir()):
            if not lib.name.startswith("libpython3"):
                tar.add(lib, f"triton/nvidia_pytriton.libs/{lib.name}")
        tar.add(perf, "triton/perf_analyzer/perf_analyzer")
        for name, target in (("libb64.so.0d", b64), ("libcudart.so.12", cudart)):
            link = tarfile.TarInfo(f"triton/perf_analyzer/{name}")
            link.type, link.linkname = tarfile.SYMTYPE, f"../nvidia_pytriton.libs/{target.name}"
            tar.addfile(link)
        data = ENV_SH.encode()
        info = tarfile.TarInfo("triton/env.sh")
        info.size, info.mode = len(data), 0o644
        tar.addfile(info, io.BytesIO(data))
    tmp.replace(output)
    print(f"wrote {output} ({output.stat().st_size / 2**20:.1f} MiB): tritonserver 2.51 + python {python} stub + perf_analyzer")
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--output", type=Path, default=Path(".devcarry/triton-gpu.tar.xz"))
    p.add_argument("--python", default="3.12", help="python version of the target machine's python3")
    p.add_argument("--perf-analyzer", type=Path, default=Path(sys.prefix) / "opt" / "perf_analyzer" / "perf_analyzer")
    a = p.parse_args()
    return pack(a.output, a.python, a.perf_analyzer)


if __name__ == "__main__":
    sys.exit(main())

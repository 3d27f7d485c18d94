"""`repo-gen doctor` rows about TensorRT: the installed version, the GPUs, and the plans of a repository.

Each row is (name, ok, detail, fix): `detail` is a version or the reason something is missing,
`fix` says what to do ("" when ok). Nothing here imports TensorRT except through `builder.py`.

A plan's TensorRT version comes from the manifest (recorded when repo-gen built it) and, for
plans built elsewhere (rebuild_engine.sh), from the plan file's header: bytes 24-26 hold major,
minor and patch after the "ftrt" magic. That layout is not a documented API (it was given by
NVIDIA in NVIDIA/TensorRT#3073 and is used by Autoware), so it is read only when sane and
labelled as coming from the header.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from repo_gen.doctor import Check
from repo_gen.trt.trtexec import PLAN_NAME, SCRIPT_NAME

PLAN_MAGIC = b"ftrt"
_HEADER_VERSION_AT = 24


def tensorrt_row() -> Check:
    from repo_gen.trt.builder import tensorrt_version

    version = tensorrt_version()
    if version is None:
        return Check("TensorRT", False, "not installed (plans can only be written as rebuild scripts here)",
                         "pip install tensorrt (needs internet), or run inside an NGC tensorrt/tritonserver image")
    return Check("TensorRT", True, version)


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


def _plan_row(repo: Path, name: str, entry: dict[str, Any], installed: str | None) -> list[Check]:
    extra = entry.get("extra", {}) or {}
    rows = []
    script = repo / name / SCRIPT_NAME
    fix_build = f"run {script} inside the tritonserver image that serves {repo} (see {repo / name / 'README.md'})"
    for v in entry.get("versions", []) or [1]:
        plan = repo / name / str(v) / PLAN_NAME
        label = f"plan {name}/{v}"
        if not plan.is_file():
            reason = str(entry.get("status_reason") or "no model.plan").split(";")[0]
            rows.append(Check(label, False, reason if reason.startswith("plan not built") else
                                  f"plan not built ({reason})", fix_build))
            continue
        from_header = plan_header_version(plan)
        recorded = extra.get("tensorrt_version") if v == max(entry.get("versions", [v])) else None
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


def _profile_row(label: str, plan: Path, entry: dict[str, Any], extra: dict[str, Any]) -> list[Check]:
    """With TensorRT present: the plan's profile max batch must equal the config's max_batch_size."""
    from repo_gen.errors import RepoGenError
    from repo_gen.trt.builder import plan_max_batch

    want = int(entry.get("max_batch_size", 0))
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
    from repo_gen.triton.repository import read_manifest
    from repo_gen.trt.builder import tensorrt_version

    manifest = read_manifest(Path(repo))
    installed = tensorrt_version()
    rows: list[Check] = []
    for name, entry in sorted(manifest.get("models", {}).items()):
        if entry.get("backend") == "tensorrt":
            rows.extend(_plan_row(Path(repo), name, entry, installed))
    return rows


def checks() -> list[Check]:
    """Machine rows of `repo-gen doctor`: TensorRT version, then one row per GPU."""
    return [tensorrt_row(), *gpu_rows()]

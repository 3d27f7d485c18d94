"""What `repo-gen serve` needs for plan models: tritonserver arguments and up-front problems.

The tensorrt backend takes its options once per server (Triton's tensorrt_backend README):

    --backend-config=tensorrt,plugins=/abs/a.so;/abs/b.so   loaded before any plan
    --backend-config=tensorrt,version-compatible=true       lets version-compatible plans load

These are argv words for `subprocess` (no shell), so the `;` and the paths carry no quotes:
the backend splits the value on `;` and opens each path as is.
"""

from __future__ import annotations

from pathlib import Path

from repo_gen.manifest import Manifest, ModelEntry
from repo_gen.trt.trtexec import PLAN_NAME

TENSORRT_BACKEND_LIB = "tensorrt/libtriton_tensorrt.so"


def plan_models(manifest: Manifest) -> dict[str, ModelEntry]:
    return manifest.of_backend("tensorrt")


def plugin_libraries(manifest: Manifest) -> list[str]:
    """Absolute plugin library paths every plan model needs, deduplicated in order."""
    libs: list[str] = []
    for entry in plan_models(manifest).values():
        for lib in entry.extra.get("plugin_libs", []):
            path = str(Path(lib).absolute())
            if path not in libs:
                libs.append(path)
    return libs


def tensorrt_server_args(manifest: Manifest) -> list[str]:
    """tritonserver argv words for the repository's plan models ([] when it has none)."""
    models = plan_models(manifest)
    if not models:
        return []
    args = []
    libs = plugin_libraries(manifest)
    if libs:
        args.append("--backend-config=tensorrt,plugins=" + ";".join(libs))
    if any(e.extra.get("version_compatible") for e in models.values()):
        args.append("--backend-config=tensorrt,version-compatible=true")
    return args


def tritonserver_args(repo: Path, models: list[str] | None = None) -> list[str]:
    """tritonserver argv words for the plan models of `repo` that will be loaded (`models` None: all)."""
    from repo_gen.manifest import load_manifest

    manifest = load_manifest(Path(repo))
    if models is not None:
        manifest.models = {n: e for n, e in manifest.models.items() if n in models}
    return tensorrt_server_args(manifest)


def has_tensorrt_backend(backend_dir: Path) -> bool:
    return (Path(backend_dir) / TENSORRT_BACKEND_LIB).is_file()


def serve_problems(repo: Path, manifest: Manifest, backend_dir: Path) -> list[str]:
    """One line per reason a plan model will not load on this server; [] when none are known."""
    models = plan_models(manifest)
    if not models:
        return []
    problems = []
    names = ", ".join(sorted(models))
    if not has_tensorrt_backend(backend_dir):
        problems.append(
            f"this tritonserver has no tensorrt backend ({Path(backend_dir) / TENSORRT_BACKEND_LIB} is missing), "
            f"so {names} cannot load: serve with the NGC tritonserver image, or build with --runtimes onnx,py"
        )
    for lib in plugin_libraries(manifest):
        if not Path(lib).is_file():
            problems.append(f"plugin library {lib} (needed by the plan models) does not exist on this machine; "
                            "build plugins/ or mount it at that path")
    for name, entry in sorted(models.items()):
        versions = entry.versions or [1]
        if not any((Path(repo) / name / str(v) / PLAN_NAME).is_file() for v in versions):
            problems.append(f"{name}: no plan built yet; run {Path(repo) / name / 'rebuild_engine.sh'} inside "
                            "the serving tritonserver image")
    from repo_gen.doctor import check_plans

    for row in check_plans(Path(repo)):
        if not row.ok and "not built" not in row.detail:
            problems.append(f"{row.name}: {row.detail}; {row.fix}")
    return problems

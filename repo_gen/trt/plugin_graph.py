"""The TensorRT plugin choice of a build: which plugin library, and the plugin graph of a variant.

`--plugins off` never reaches here. `on` needs a library and a graph where the rewrite matched;
`auto` keeps the native engine when either is missing (see `repo_gen.trt.repository`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from repo_gen.config import BuildConfig
from repo_gen.precision import PrecisionVariant


def uses_plugins(cfg: BuildConfig) -> bool:
    """Whether plan models of this build are compiled with (or compared against) the plugin library."""
    return cfg.plugins in ("on", "auto") and "trt" in cfg.runtimes


def plugin_library(cfg: BuildConfig) -> tuple[Path | None, dict[str, Any]]:
    """The plugin library the plugin engines load, and a manifest note about it.

    `--plugin-lib` must exist. Without it: `$REPO_GEN_PLUGIN_LIB`, then
    `plugins/build/libmobilevit_plugins.so` of this checkout. When none exists, `--plugins on` is
    a UserError; `auto` keeps only the native engine where TensorRT could build here (nothing to
    compare), and elsewhere names the default path, so both engines stay pending with their
    rebuild scripts (the plugin script expects the library there).
    """
    import os

    from repo_gen.errors import MissingDependency, UserError
    from repo_gen.plugins.kernels import LIBRARY_ENV, LIBRARY_NAME, find_library

    build_hint = "build it with `cmake -S plugins -B plugins/build && cmake --build plugins/build -j`"
    if cfg.trt_plugin_lib is not None:
        lib = Path(cfg.trt_plugin_lib).absolute()
        if not lib.is_file():
            raise UserError(f"--plugin-lib {cfg.trt_plugin_lib}: no such file; {build_hint}, or pass --plugins off")
        return lib, {"path": str(lib), "exists": True, "source": "--plugin-lib"}
    try:
        lib = find_library(None).absolute()
        return lib, {"path": str(lib), "exists": True, "source": "default"}
    except MissingDependency as e:
        if cfg.plugins == "on":
            raise UserError(f"--plugins on needs the plugin library: {e}; or pass --plugin-lib PATH "
                            "(or --plugins auto / off)") from e
    from repo_gen.trt.repository import can_build_here

    default = Path(os.environ.get(LIBRARY_ENV) or Path(__file__).resolve().parents[2] / "plugins" / "build" / LIBRARY_NAME)
    if can_build_here()[0]:
        return None, {"path": str(default), "exists": False, "source": "default",
                      "note": f"not found ({build_hint}): only the native engine was built"}
    return default.absolute(), {"path": str(default.absolute()), "exists": False, "source": "default",
                                "note": f"not built yet: {build_hint} before running the plugin rebuild script"}


def plugin_graph(cfg: BuildConfig, variant: PrecisionVariant, work: Path,
                 library: tuple[Path | None, dict[str, Any]] | None = None) -> tuple[Path | None, Path | None, dict]:
    """`variant.trt_onnx` with the plugin nodes (`work/<precision>_plugins.onnx`), the library
    (`library`, else `plugin_library(cfg)`), and the rewrite's counts for the manifest. No graph
    (None) when nothing matched: `auto` then keeps native."""
    import onnx

    from repo_gen.errors import UserError
    from repo_gen.onnx.plugin_rewrite import plugin_rewrite_report, rewrite_plugins

    lib, lib_info = library or plugin_library(cfg)
    rewritten = rewrite_plugins(onnx.load(str(variant.trt_onnx)))
    counts = plugin_rewrite_report(rewritten) or {}
    record: dict[str, Any] = {"library": lib_info}
    for kind, c in counts.items():
        if c is not None:
            record[kind] = {**{k: c[k] for k in ("found", "replaced", "left_native", "layouts", "dtypes")},
                            "unmatched": c["unmatched"][:10]}
    if not any(c and c["replaced"] for c in counts.values()):
        if cfg.plugins == "on":
            raise UserError(f"--plugins on: no LayerNorm or attention of {variant.precision} matched the plugin "
                            f"patterns ({record}); pass --plugins off or auto")
        return None, lib, record
    path = work / f"{variant.precision}_plugins.onnx"
    onnx.save(rewritten, str(path))
    return path, lib, record

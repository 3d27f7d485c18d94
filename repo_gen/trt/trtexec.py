"""The `trtexec` command that rebuilds a plan, as argv (for tests and logs) and as a bash script.

One function, `trtexec_argv`, decides every flag; the script (`templates/rebuild_engine.sh.j2`)
renders that same argv with the model directory replaced by `${HERE}` (the script's own folder,
so the repository can be mounted anywhere) and every other word quoted with `shlex.quote`.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path

from repo_gen.trt.profile import ProfileShapes, shape_arg

PLAN_NAME = "model.plan"
ONNX_NAME = "model.onnx"
LAYER_INFO_NAME = "trt_layers.json"
SCRIPT_NAME = "rebuild_engine.sh"
DEFAULT_TIMING_CACHE_NAME = "timing.cache"
_HERE = "\x00HERE\x00"  # placeholder for the model directory while building argv


@dataclass(frozen=True)
class RebuildSpec:
    """Everything the rebuild command depends on.

    Attributes:
        plugin_libs: absolute paths of plugin libraries the graph needs; empty: none.
        timing_cache: absolute path of a shared timing cache; None means `<model dir>/timing.cache`.
        onnx_name: ONNX file next to config.pbtxt that trtexec compiles.
    """

    profile: ProfileShapes
    version: int
    opt_level: int = 3
    version_compatible: bool = False
    plugin_libs: tuple[str, ...] = ()
    timing_cache: str | None = None
    onnx_name: str = ONNX_NAME

    @property
    def plan_rel(self) -> str:
        return f"{self.version}/{PLAN_NAME}"


def trtexec_argv(spec: RebuildSpec, model_dir: str | Path, trtexec: str = "trtexec") -> list[str]:
    """The exact trtexec argv for a model directory (no shell involved)."""
    d = str(model_dir)
    cache = spec.timing_cache or f"{d}/{DEFAULT_TIMING_CACHE_NAME}"
    argv = [
        trtexec,
        f"--onnx={d}/{spec.onnx_name}",
        "--stronglyTyped",
        f"--minShapes={shape_arg(spec.profile, 'min')}",
        f"--optShapes={shape_arg(spec.profile, 'opt')}",
        f"--maxShapes={shape_arg(spec.profile, 'max')}",
        f"--saveEngine={d}/{spec.plan_rel}",
        f"--timingCacheFile={cache}",
        f"--builderOptimizationLevel={spec.opt_level}",
    ]
    if spec.version_compatible:
        argv.append("--versionCompatible")
        # a version-compatible plan can only use plugin libraries serialized into it
        for lib in spec.plugin_libs:
            argv += [f"--dynamicPlugins={lib}", f"--setPluginsToSerialize={lib}"]
    else:
        argv += [f"--staticPlugins={lib}" for lib in spec.plugin_libs]
    argv += ["--profilingVerbosity=detailed", f"--exportLayerInfo={d}/{LAYER_INFO_NAME}", "--skipInference"]
    return argv


def shell_word(arg: str) -> str:
    """Quote one argv word for bash, turning the model-dir placeholder into "${HERE}"."""
    parts = arg.split(_HERE)
    return '"${HERE}"'.join(shlex.quote(p) if p else "" for p in parts)


def script_words(spec: RebuildSpec) -> list[str]:
    """trtexec's arguments (without the program) as quoted bash words relative to ${HERE}."""
    return [shell_word(a) for a in trtexec_argv(spec, _HERE)[1:]]


def render_rebuild_script(spec: RebuildSpec, model_name: str) -> str:
    from repo_gen.triton.render import render_template

    p = spec.profile
    return render_template(
        "rebuild_engine.sh.j2",
        model_name=model_name,
        plan_rel=spec.plan_rel,
        version=spec.version,
        version_compatible=spec.version_compatible,
        min_batch=p.min[0],
        opt_batch=p.opt_batch,
        max_batch=p.max_batch,
        plugin_libs=[shlex.quote(lib) for lib in spec.plugin_libs],
        words=script_words(spec),
    )


def docker_command(model_name: str, spec: RebuildSpec, image: str | None = None, script: str = SCRIPT_NAME) -> str:
    """The `docker run` line that runs the script inside the serving image, to be run from the
    repository root (the folder holding repo-gen.json).

    The repository is mounted at its own path (`$PWD`), so the command names no path of the
    build machine and works wherever the repository was moved. Plugin libraries and a shared
    timing cache live outside the repository: their folders are mounted at their own absolute
    paths, so every path in the script is valid inside the container.
    `image` None means "the $TRITON_IMAGE environment variable, which must be set".
    """
    mounts: list[str] = []
    for extra in [*(str(Path(lib).parent) for lib in spec.plugin_libs),
                  *([str(Path(spec.timing_cache).parent)] if spec.timing_cache else [])]:
        if extra not in mounts:
            mounts.append(extra)
    img = shlex.quote(image) if image else '"${TRITON_IMAGE:?set TRITON_IMAGE to the tritonserver image you serve with}"'
    words = ["docker", "run", "--rm", "--gpus", "all", "--user", '"$(id -u):$(id -g)"', "-v", '"$PWD:$PWD"',
             "-w", '"$PWD"']
    for m in mounts:
        words += ["-v", shlex.quote(f"{m}:{m}")]
    words += [img, "bash", shlex.quote(f"{model_name}/{script}")]
    return " ".join(words)

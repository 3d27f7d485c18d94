"""Compile check: TensorRT for RTX parses and builds a TensorRT-bound ONNX graph ahead of time.

TensorRT itself cannot be installed on this project's CPU machines (GUIDE section 1), but
TensorRT for RTX can (`tensorrt-rtx-cu12-bindings` + `tensorrt-rtx-cu12-libs`), and its builder
runs without a GPU when the builder config names a target compute capability. So every graph
the build hands to trtexec is also parsed by TensorRT's ONNX parser (RTX build) and built by a
strongly typed TensorRT builder here, through repo-gen's own builder functions
(`builder.parse_onnx_network`, `builder.create_builder_config`, `builder.load_plugins`).

What a passed check proves: the ONNX parser accepts every node, cast and Q/DQ of the graph, and
a strongly typed TensorRT-family builder compiles it for an RTX target. What it does not prove:
the engine it builds is NOT the serving plan (Triton's tensorrt backend cannot load TensorRT-RTX
engines, and it is thrown away); TensorRT-RTX refuses SM 9.0, so nothing it builds runs on an
H100/H200; the plan is still built by the serving image's trtexec (`rebuild_engine.sh`).

Each check runs in a child process (`python -m repo_gen.trt.compile_check`): a parser or plugin
that aborts (std::terminate) must end the check, not the build.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from repo_gen.trt.profile import ProfileShapes

LIBRARY = "TensorRT-RTX"
BINDINGS_DIST = "tensorrt-rtx-cu12-bindings"
INSTALL_HINT = ("pip install --no-deps tensorrt-rtx-cu12-bindings==1.7.1.116 tensorrt-rtx-cu12-libs==1.7.1.116 "
                "(scripts/setup.sh does)")
DEFAULT_TARGET = "SM89"
TIMEOUT_S = 600.0
WHAT_IT_PROVES = (
    "TensorRT's ONNX parser (TensorRT-RTX build) and a strongly typed TensorRT-RTX builder accept this graph "
    "(every node, cast and Q/DQ) and compile it ahead of time for an RTX target. It is NOT the serving plan: the "
    "TensorRT-RTX engine is discarded (Triton's tensorrt backend cannot load it, and it cannot run on SM 9.0 GPUs "
    "such as H100/H200); the plan is still built by the serving image's trtexec (rebuild_engine.sh)."
)
_RESULT_MARK = "REPO_GEN_COMPILE_CHECK "

Status = Literal["not_run", "failed", "passed"]


@dataclass(frozen=True)
class CompileCheck:
    """One graph's compile check; `to_dict()` goes into the manifest and the model README.

    Attributes:
        graph: the ONNX file's name (inside the model folder when written there).
        status: "passed", "failed" (the parser or builder refused the graph; `errors` says why)
            or "not_run" (TensorRT-RTX absent or broken; `errors` holds the one-line reason).
        layers: layers of the parsed network; 0 when not parsed.
        engine_bytes: size of the TensorRT-RTX engine (discarded); 0 when not built.
        errors: one line per parser/builder error (the parser's name the node and its reason).
    """

    graph: str
    library: str
    version: str | None
    target: str
    status: Status
    layers: int = 0
    engine_bytes: int = 0
    seconds: float = 0.0
    errors: list[str] = field(default_factory=list)
    plugin_libs: list[str] = field(default_factory=list)

    @property
    def summary(self) -> str:
        """One line for logs and the build table."""
        if self.status == "passed":
            return (f"{LIBRARY} {self.version} compile check passed for {self.graph} ({self.target}): "
                    f"{self.layers:,} layers, engine {self.engine_bytes / 1e6:.1f} MB, {self.seconds:.1f} s")
        if self.status == "not_run":
            return f"{LIBRARY} compile check not run for {self.graph}: {'; '.join(self.errors)}"
        return f"{LIBRARY} {self.version} compile check FAILED for {self.graph}: {'; '.join(self.errors)}"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "what_it_proves": WHAT_IT_PROVES}


def rtx_version() -> str | None:
    """Version of the installed TensorRT-RTX bindings (from package metadata, without loading
    the library), or None when they are not installed."""
    try:
        return importlib.metadata.version(BINDINGS_DIST)
    except importlib.metadata.PackageNotFoundError:
        return None


def library_status() -> tuple[str | None, str]:
    """(version, "") when TensorRT-RTX loads here, else (None, one-line reason with the fix).

    Loaded in a child process, like the check itself, so a broken library cannot take the
    caller down."""
    if rtx_version() is None:
        return None, f"not installed ({INSTALL_HINT})"
    code = "from repo_gen.trt.compile_check import _load_rtx; print(_load_rtx().__version__)"
    root = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, *filter(None, [os.environ.get("PYTHONPATH")])])}
    try:
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env,
                              check=False)
    except subprocess.TimeoutExpired:
        return None, "installed, but importing it did not finish within 120 s"
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or [f"exit code {proc.returncode}"])[-1]
        return None, f"installed ({rtx_version()}) but does not load: {last[:200]}"
    return proc.stdout.strip(), ""


def not_run(graph: Path, reason: str, target: str = DEFAULT_TARGET) -> CompileCheck:
    return CompileCheck(graph=graph.name, library=LIBRARY, version=rtx_version(), target=target,
                        status="not_run", errors=[reason])


def compile_check(onnx: Path, profile: ProfileShapes, *, plugin_libs: tuple[Path, ...] = (),
                  plugin_ops: tuple[str, ...] = (), target: str = DEFAULT_TARGET,
                  timeout_s: float = TIMEOUT_S) -> CompileCheck:
    """Parse and build `onnx` with TensorRT-RTX for `target` in a child process.

    Never raises for a graph or library problem: TensorRT-RTX missing, a child that crashes or
    times out, a plugin library that does not load or lacks a creator, and a parser rejection
    all come back as a CompileCheck whose `errors` say so in one line each.
    """
    if rtx_version() is None:
        return not_run(onnx, f"{LIBRARY} is not installed ({INSTALL_HINT})", target)
    argv = [sys.executable, "-m", "repo_gen.trt.compile_check", str(Path(onnx).absolute()),
            "--profile", json.dumps([profile.input_name, list(profile.min), list(profile.opt), list(profile.max)]),
            "--target", target]
    for lib in plugin_libs:
        argv += ["--plugin-lib", str(Path(lib).absolute())]
    for op in plugin_ops:
        argv += ["--plugin-op", op]
    env = dict(os.environ)
    # the child imports this checkout's repo_gen even when the installed one is another checkout
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join([root, *filter(None, [env.get("PYTHONPATH")])])
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, env=env, check=False)
    except subprocess.TimeoutExpired:
        return CompileCheck(graph=onnx.name, library=LIBRARY, version=rtx_version(), target=target, status="failed",
                            seconds=round(time.perf_counter() - t0, 2),
                            errors=[f"the check did not finish within {timeout_s:.0f} s"])
    for line in proc.stdout.splitlines():
        if line.startswith(_RESULT_MARK):
            return CompileCheck(**json.loads(line[len(_RESULT_MARK):]))
    # the child died before reporting (abort, std::terminate, segfault): keep the last words
    tail = [ln.strip() for ln in (proc.stderr or proc.stdout).splitlines() if ln.strip()][-3:]
    how = f"signal {-proc.returncode}" if proc.returncode < 0 else f"exit code {proc.returncode}"
    errors = [f"the {LIBRARY} child process died ({how}): " + " | ".join(tail)[-600:]]
    if plugin_libs:
        errors.append(f"{LIBRARY} aborts after creating any custom IPluginV3, a reference plugin written with its own "
                      "Python API included (plugins/README.md): this says nothing about the plugins")
    return CompileCheck(graph=onnx.name, library=LIBRARY, version=rtx_version(), target=target, status="failed",
                        seconds=round(time.perf_counter() - t0, 2), errors=errors,
                        plugin_libs=[str(p) for p in plugin_libs])


def _load_rtx() -> Any:
    import importlib

    # the libs package must be imported first: it puts libtensorrt_rtx on the loader path
    importlib.import_module("tensorrt_rtx_libs")
    return importlib.import_module("tensorrt_rtx_bindings")


def run_check(onnx: Path, profile: ProfileShapes, target: str, plugin_libs: tuple[Path, ...],
              plugin_ops: tuple[str, ...]) -> CompileCheck:
    """The check itself (runs in the child): repo-gen's builder functions against TensorRT-RTX."""
    from repo_gen.errors import RepoGenError
    from repo_gen.trt.builder import (
        EngineSpec,
        ParserRejected,
        create_builder_config,
        load_plugins,
        make_logger,
        parse_onnx_network,
    )

    base = dict(graph=onnx.name, library=LIBRARY, target=target, plugin_libs=[str(p) for p in plugin_libs])
    t0 = time.perf_counter()
    try:
        trt = _load_rtx()
    except Exception as e:  # ImportError, OSError from the shared library
        return CompileCheck(**base, version=rtx_version(), status="not_run",  # type: ignore[arg-type]
                            errors=[f"{LIBRARY} is installed but does not load ({type(e).__name__}: {e})"])
    version = str(trt.__version__)
    errors: list[str] = []

    def failed(lines: list[str], layers: int = 0) -> CompileCheck:
        return CompileCheck(**base, version=version, status="failed", layers=layers,  # type: ignore[arg-type]
                            seconds=round(time.perf_counter() - t0, 2), errors=lines)

    log = make_logger(errors, api=trt)
    builder = trt.Builder(log)
    try:
        loaded = load_plugins(builder.get_plugin_registry(), plugin_libs, plugin_ops, onnx,
                              library=f"{LIBRARY} {version}", errors=errors)
        network, _parser = parse_onnx_network(builder, onnx, log, errors, api=trt)
        spec = EngineSpec(onnx=onnx, plan=onnx.with_suffix(".unused"), profile=profile)
        config = create_builder_config(builder, network, spec, loaded, api=trt)
    except ParserRejected as e:
        return failed(e.lines)
    except RepoGenError as e:
        return failed([str(e)])
    config.num_compute_capabilities = 1
    config.set_compute_capability(getattr(trt.ComputeCapability, target), 0)
    layers = int(network.num_layers)
    try:
        serialized = builder.build_serialized_network(network, config)
    except Exception as e:
        return failed([f"the builder raised {type(e).__name__}: {e}", *errors[-3:]], layers)
    if serialized is None:
        return failed([f"the builder returned no engine: {'; '.join(errors[-3:]) or 'no error message'}"], layers)
    return CompileCheck(**base, version=version, status="passed", layers=layers,  # type: ignore[arg-type]
                        engine_bytes=len(memoryview(serialized)), seconds=round(time.perf_counter() - t0, 2))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="compile-check one ONNX graph with TensorRT-RTX (child process)")
    ap.add_argument("onnx", type=Path)
    ap.add_argument("--profile", required=True, help='JSON: [input name, min shape, opt shape, max shape]')
    ap.add_argument("--target", default=DEFAULT_TARGET)
    ap.add_argument("--plugin-lib", action="append", type=Path, default=[])
    ap.add_argument("--plugin-op", action="append", default=[])
    args = ap.parse_args(argv)
    name, mn, opt, mx = json.loads(args.profile)
    profile = ProfileShapes(name, tuple(mn), tuple(opt), tuple(mx))
    result = run_check(args.onnx, profile, args.target, tuple(args.plugin_lib), tuple(args.plugin_op))
    print(_RESULT_MARK + json.dumps(asdict(result)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

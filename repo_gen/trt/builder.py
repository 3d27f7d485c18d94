"""Compile a strongly typed ONNX graph into a TensorRT plan: the only module that imports `tensorrt`.

Every call into TensorRT lives here, is thin, and is type-checked with `mypy --strict` against
`tensorrt-stubs` (tests/trt/test_builder_typing.py), because TensorRT cannot be installed on
this project's machines: a wrong method or argument name must fail CI, not a user's build.

Precision is decided by the ONNX graph (FP16 casts, INT8 Q/DQ; see GUIDE section 2), so the
network is created STRONGLY_TYPED and no precision flag is ever set.

`tensorrt` is imported inside each function, never at module level, so this module imports
(and `repo-gen --help` works) without TensorRT. Note that `import tensorrt` *succeeds* where
only `tensorrt-stubs` is installed (it leaves a namespace package of .pyi files), so
availability is decided by `tensorrt_version()`, never by a bare import.

The calls that parse the ONNX graph and configure the build (`make_logger`,
`parse_onnx_network`, `create_builder_config`, `load_plugins`) take an optional `api` module or
objects made by it: TensorRT for RTX's Python API (`tensorrt_rtx_bindings`) has the same names
for these calls, so the compile check (`compile_check.py`) runs this very code against a real
TensorRT-family library on machines with no GPU. mypy still checks them against TensorRT's
stubs: inside each, `trt` is typed as `tensorrt` and bound to `api` only at run time.
"""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from repo_gen.errors import BuildFailure, MissingDependency, UserError
from repo_gen.fileio import write_atomic
from repo_gen.log import logger
from repo_gen.trt.profile import ProfileShapes

if TYPE_CHECKING:
    import numpy.typing as npt
    import tensorrt as trt

# Words TensorRT's logger and exceptions use when the GPU runs out of memory while building.
_OOM_MARKERS = ("out of memory", "outofmemory", "cudaerrormemoryallocation", "mem_alloc_failed",
                "requested amount of gpu memory", "insufficient memory", "failed to allocate")


def tensorrt_version() -> str | None:
    """The installed TensorRT's version, or None when only the type stubs (or nothing) are present."""
    try:
        import tensorrt
    except ImportError:
        return None
    version = getattr(tensorrt, "__version__", None)
    if not isinstance(version, str) or not hasattr(tensorrt, "Builder"):
        return None  # a namespace package left by tensorrt-stubs: no library behind it
    return version


def tensorrt_missing_reason() -> str:
    return ("TensorRT is not installed here (pip install tensorrt on a machine with internet access, "
            "or use an NGC tensorrt/tritonserver image)")


def require_tensorrt() -> str:
    """The TensorRT version; raise MissingDependency (with the fix) when absent."""
    version = tensorrt_version()
    if version is None:
        raise MissingDependency(tensorrt_missing_reason())
    return version


@dataclass(frozen=True)
class EngineSpec:
    """What to build.

    Attributes:
        onnx: strongly typed ONNX graph (the precision variant's `trt_onnx`).
        plan: where the serialized engine goes (`<model>/<version>/model.plan`).
        profile: the one optimization profile (min 1 / opt / max batch).
        opt_level: builder optimization level 0-5 (TensorRT's default is 3).
        version_compatible: build a version-compatible plan (lean runtime inside); the server
            then needs `--backend-config=tensorrt,version-compatible=true`.
        timing_cache: timing cache file, read when it exists and written back after the build;
            None means no cache.
        plugin_libs: plugin libraries loaded into the registry before parsing.
        plugin_ops: ONNX op types that must be provided by a registered plugin creator.
        layer_info: where the engine inspector's layer information (JSON) goes; None: not saved.
        workspace_mib: workspace memory pool limit; None means TensorRT's default (the GPU's memory).
    """

    onnx: Path
    plan: Path
    profile: ProfileShapes
    opt_level: int = 3
    version_compatible: bool = False
    timing_cache: Path | None = None
    plugin_libs: tuple[Path, ...] = ()
    plugin_ops: tuple[str, ...] = ()
    layer_info: Path | None = None
    workspace_mib: int | None = None


@dataclass(frozen=True)
class EngineResult:
    """What was built; `to_dict()` goes into the manifest and the build report."""

    plan: str
    tensorrt_version: str
    build_s: float
    plan_bytes: int
    profile: dict[str, list[int]]
    num_layers: int
    device_memory_bytes: int
    layer_info: str | None
    timing_cache: str | None
    plugin_libs: list[str] = field(default_factory=list)
    version_compatible: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _tensorrt(api: ModuleType | None) -> ModuleType:
    """`api` (e.g. tensorrt_rtx_bindings), else the installed `tensorrt`."""
    if api is not None:
        return api
    import tensorrt

    return tensorrt


def make_logger(errors: list[str], api: ModuleType | None = None) -> trt.ILogger:
    """A TensorRT logger that forwards to repo-gen's logger and appends errors to `errors`.

    Args:
        api: the TensorRT Python module; None means `tensorrt`.
    """
    if TYPE_CHECKING:
        import tensorrt as trt
    else:
        trt = _tensorrt(api)

    class _Logger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)

        def log(self, severity: trt.ILogger.Severity, msg: str) -> None:
            if severity in (trt.ILogger.Severity.INTERNAL_ERROR, trt.ILogger.Severity.ERROR):
                errors.append(msg)
                logger.error(f"TensorRT: {msg}")
            elif severity == trt.ILogger.Severity.WARNING:
                logger.debug(f"TensorRT warning: {msg}")

    return _Logger()


def _dims(d: trt.Dims) -> list[int]:
    return [int(d[i]) for i in range(len(d))]


def _creator_names(registry: trt.IPluginRegistry) -> set[str]:
    names = set()
    for creator in registry.all_creators:
        name = getattr(creator, "name", None)
        if isinstance(name, str):
            names.add(name)
    return names


def load_plugins(registry: trt.IPluginRegistry, libs: tuple[Path, ...], required_ops: tuple[str, ...],
                 onnx: Path, library: str | None = None, errors: list[str] | None = None) -> list[str]:
    """Load each plugin library and check every op in `required_ops` has a creator; return the
    absolute library paths. Raises UserError naming the missing file or op.

    Args:
        library: the TensorRT library `registry` belongs to, for messages; None means
            "TensorRT <installed version>".
        errors: the list the registry's logger appends errors to (quoted when a load fails);
            None: not available.
    """
    loaded = []
    for lib in libs:
        path = Path(lib).absolute()
        if not path.is_file():
            raise UserError(f"--plugin-lib {path}: no such file; build the plugin library (plugins/) first "
                            "or pass --plugins off")
        built_for = library or f"this TensorRT ({tensorrt_version()})"
        seen = len(errors) if errors is not None else 0
        try:
            handle: object = registry.load_library(str(path))
        except Exception as e:  # TensorRT raises a bare RuntimeError/TypeError here
            raise UserError(f"--plugin-lib {path}: TensorRT could not load it ({e}); was it built against "
                            f"{built_for}?") from e
        if handle is None:  # most failures are only logged, and the call returns None
            why = ((errors or [])[seen:] or ["see TensorRT's log above"])[0]  # the first says why
            needs = f" (the graph needs it for op(s) {', '.join(required_ops)})" if required_ops else ""
            raise UserError(f"--plugin-lib {path}: {built_for} could not load it{needs}: {why[:300]}; is it a "
                            "plugin library built against that TensorRT?")
        loaded.append(str(path))
    if required_ops:
        names = _creator_names(registry)
        missing = [op for op in required_ops if op not in names]
        if missing:
            where = ", ".join(loaded) if loaded else "no plugin library (pass --plugin-lib)"
            raise UserError(
                f"{onnx.name}: op(s) {', '.join(missing)} need a TensorRT plugin creator, and none is registered "
                f"after loading {where}; rebuild the plugin library with those creators or pass --plugins off"
            )
    return loaded


def parser_errors(parser: trt.OnnxParser) -> list[str]:
    """One line per ONNX parser error, naming the node (name, op type, index)."""
    lines = []
    for i in range(parser.num_errors):
        err: trt.ParserError = parser.get_error(i)
        node = err.node_name() or f"#{err.node()}"
        lines.append(f"node {node!r} (op {err.node_operator() or '?'}): {err.desc()} [{err.code()}]")
    return lines


def explain_build_failure(errors: list[str], spec: EngineSpec) -> str:
    """One message for a failed build: TensorRT's errors, and for memory errors what to change."""
    text = "; ".join(errors[-5:]) or "no error message from TensorRT"
    lowered = text.lower().replace(" ", "")
    if any(m.replace(" ", "") in lowered for m in _OOM_MARKERS):
        half = max(1, spec.profile.max_batch // 2)
        return (f"TensorRT ran out of GPU memory building {spec.plan} for batch up to {spec.profile.max_batch}: "
                f"{text}. The profile's max batch must fit in GPU memory with every tactic TensorRT tries: "
                f"lower --max-batch (e.g. {half}), free the GPU (nvidia-smi lists other processes), or cap the "
                "workspace pool")
    return f"TensorRT could not build {spec.plan}: {text}"


def _network_input(network: trt.INetworkDefinition, profile: ProfileShapes, onnx: Path) -> trt.ITensor:
    names = [network.get_input(i).name for i in range(network.num_inputs)]
    if names != [profile.input_name]:
        raise BuildFailure(f"{onnx}: expected one input named {profile.input_name!r}, the graph has {names}")
    tensor = network.get_input(0)
    dims = _dims(tensor.shape)
    if len(dims) != len(profile.max) or any(d not in (-1, m) for d, m in zip(dims, profile.max, strict=False)):
        raise BuildFailure(f"{onnx}: input {profile.input_name!r} has shape {dims}; the profile needs "
                           f"[-1, {', '.join(str(d) for d in profile.max[1:])}] (dynamic batch)")
    return tensor


class ParserRejected(BuildFailure):
    """TensorRT's ONNX parser refused the graph; `lines` holds one line per parser error."""

    def __init__(self, onnx: Path, lines: list[str]) -> None:
        self.lines = lines
        super().__init__(f"TensorRT's ONNX parser rejected {onnx}: " + "; ".join(lines))


def parse_onnx_network(builder: trt.Builder, onnx: Path, log: trt.ILogger, errors: list[str],
                       api: ModuleType | None = None) -> tuple[trt.INetworkDefinition, trt.OnnxParser]:
    """A strongly typed network parsed from `onnx`, and its parser (which owns weights the
    network refers to: keep it alive while the network is used).

    Raises ParserRejected naming each node the parser refused.

    Args:
        errors: the list `log` appends TensorRT's error messages to (reported when the parser
            names no node).
        api: the TensorRT Python module; None means `tensorrt`.
    """
    if TYPE_CHECKING:
        import tensorrt as trt
    else:
        trt = _tensorrt(api)
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, log)
    if not parser.parse_from_file(str(onnx)):
        raise ParserRejected(onnx, parser_errors(parser) or errors[-3:] or ["no error message from the parser"])
    return network, parser


def create_builder_config(builder: trt.Builder, network: trt.INetworkDefinition, spec: EngineSpec,
                          plugin_paths: list[str], api: ModuleType | None = None) -> trt.IBuilderConfig:
    """The builder config of `spec`: optimization level, detailed profiling, version
    compatibility, workspace limit and the one optimization profile (after checking the
    network's input against it).

    Args:
        plugin_paths: loaded plugin libraries (serialized into a version-compatible plan).
        api: the TensorRT Python module; None means `tensorrt`.
    """
    if TYPE_CHECKING:
        import tensorrt as trt
    else:
        trt = _tensorrt(api)
    _network_input(network, spec.profile, spec.onnx)
    config = builder.create_builder_config()
    config.builder_optimization_level = spec.opt_level
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
    if spec.version_compatible:
        config.set_flag(trt.BuilderFlag.VERSION_COMPATIBLE)
        if plugin_paths:
            # a version-compatible plan runs on the lean runtime of its own TensorRT version, which
            # can only use plugin libraries serialized into the plan
            config.plugins_to_serialize = plugin_paths
    if spec.workspace_mib is not None:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, spec.workspace_mib << 20)

    profile = builder.create_optimization_profile()
    p = spec.profile
    profile.set_shape(p.input_name, trt.Dims(list(p.min)), trt.Dims(list(p.opt)), trt.Dims(list(p.max)))
    if config.add_optimization_profile(profile) < 0:
        raise BuildFailure(f"TensorRT rejected the optimization profile {p} for {spec.onnx}")
    return config


def _load_timing_cache(config: trt.IBuilderConfig, path: Path | None) -> trt.ITimingCache:
    data = b""
    if path is not None and path.is_file():
        data = path.read_bytes()
    cache = config.create_timing_cache(data)
    if not config.set_timing_cache(cache, False):
        logger.warning(f"timing cache {path}: made by another TensorRT version or GPU; starting an empty one")
        cache = config.create_timing_cache(b"")
        config.set_timing_cache(cache, True)
    return cache


def _save_timing_cache(cache: trt.ITimingCache, path: Path | None) -> None:
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, bytes(memoryview(cache.serialize())))


def profile_of(engine: trt.ICudaEngine, input_name: str) -> dict[str, list[int]]:
    """min/opt/max shapes of profile 0 for `input_name`, read back from the engine."""
    shapes = engine.get_tensor_profile_shape(input_name, 0)
    return {k: _dims(s) for k, s in zip(("min", "opt", "max"), shapes, strict=True)}


def check_profile(engine: trt.ICudaEngine, input_name: str, max_batch: int, where: str) -> dict[str, list[int]]:
    """Raise BuildFailure unless the engine's profile max batch equals `max_batch` (the config's
    max_batch_size: Triton's tensorrt backend refuses a config larger than the profile)."""
    prof = profile_of(engine, input_name)
    if prof["max"][0] != max_batch or prof["min"][0] != 1:
        raise BuildFailure(f"{where}: profile batch range is {prof['min'][0]}..{prof['max'][0]}, config needs "
                           f"1..{max_batch} (max_batch_size); rebuild the plan with --max-batch {max_batch}")
    return prof


def build_engine(spec: EngineSpec) -> EngineResult:
    """Build, serialize and check one plan; save the timing cache and the layer information."""
    version = require_tensorrt()
    import tensorrt as trt

    if not spec.onnx.is_file():
        raise BuildFailure(f"{spec.onnx}: ONNX file to compile is missing (bug in an earlier stage)")
    if not 0 <= spec.opt_level <= 5:
        raise UserError(f"--builder-opt-level {spec.opt_level}: must be from 0 to 5")
    t0 = time.perf_counter()
    errors: list[str] = []
    log = make_logger(errors)
    try:
        builder = trt.Builder(log)
    except Exception as e:  # TypeError/RuntimeError "CUDA initialization failure"
        raise BuildFailure(f"TensorRT could not start on this machine ({e}); is a GPU visible (nvidia-smi)?") from e
    plugin_paths = load_plugins(builder.get_plugin_registry(), spec.plugin_libs, spec.plugin_ops, spec.onnx,
                                errors=errors)

    network, _parser = parse_onnx_network(builder, spec.onnx, log, errors)
    config = create_builder_config(builder, network, spec, plugin_paths)
    p = spec.profile
    cache = _load_timing_cache(config, spec.timing_cache)

    logger.info(f"building TensorRT {version} plan {spec.plan} (opt level {spec.opt_level}, batch 1/{p.opt_batch}/"
                f"{p.max_batch}{', version-compatible' if spec.version_compatible else ''})")
    try:
        serialized = builder.build_serialized_network(network, config)
    except Exception as e:
        raise BuildFailure(explain_build_failure([*errors, str(e)], spec)) from e
    if serialized is None:
        raise BuildFailure(explain_build_failure(errors, spec))
    plan_bytes = bytes(memoryview(serialized))
    _save_timing_cache(cache, spec.timing_cache)
    spec.plan.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(spec.plan, plan_bytes)

    runtime = trt.Runtime(log)
    if spec.version_compatible:
        runtime.engine_host_code_allowed = True
    engine = runtime.deserialize_cuda_engine(plan_bytes)
    if engine is None:
        raise BuildFailure(f"{spec.plan}: the plan just built does not deserialize: {'; '.join(errors[-3:])}")
    prof = check_profile(engine, p.input_name, p.max_batch, str(spec.plan))
    layer_info = None
    if spec.layer_info is not None:
        inspector = engine.create_engine_inspector()
        info = inspector.get_engine_information(trt.LayerInformationFormat.JSON)
        spec.layer_info.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(spec.layer_info, json.dumps(json.loads(info), indent=1).encode())
        layer_info = str(spec.layer_info)
    return EngineResult(
        plan=str(spec.plan),
        tensorrt_version=version,
        build_s=round(time.perf_counter() - t0, 3),
        plan_bytes=len(plan_bytes),
        profile=prof,
        num_layers=engine.num_layers,
        device_memory_bytes=engine.device_memory_size_v2,
        layer_info=layer_info,
        timing_cache=str(spec.timing_cache) if spec.timing_cache else None,
        plugin_libs=plugin_paths,
        version_compatible=spec.version_compatible,
    )


def _numpy_dtype(dtype: trt.DataType) -> str:
    import tensorrt as trt

    table = {trt.DataType.FLOAT: "float32", trt.DataType.HALF: "float16", trt.DataType.INT8: "int8",
             trt.DataType.INT32: "int32", trt.DataType.INT64: "int64", trt.DataType.BOOL: "bool"}
    if dtype not in table:
        raise BuildFailure(f"engine I/O dtype {dtype} is not supported by repo-gen's runner")
    return table[dtype]


class EngineRunner:
    """Run a plan on GPU 0 with device buffers sized for `max_batch`: for the plugin-vs-native
    latency comparison and for checking a plan against ONNX Runtime."""

    def __init__(self, plan: Path, max_batch: int, plugin_libs: tuple[Path, ...] = ()) -> None:
        require_tensorrt()
        import numpy as np
        import tensorrt as trt

        from repo_gen.trt.cuda import DeviceContext

        self.cuda = DeviceContext(0)
        # The runtime is kept: an engine must not outlive the runtime that deserialized it.
        self._errors: list[str] = []
        self._runtime, engine = deserialize_plan(plan, plugin_libs, self._errors)
        self.engine = engine
        self.context = engine.create_execution_context()
        self.inputs: list[str] = []
        self.outputs: list[str] = []
        self._ptr: dict[str, int] = {}
        self._dtype: dict[str, Any] = {}
        for i in range(engine.num_io_tensors):
            name = engine.get_tensor_name(i)
            is_input = engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
            (self.inputs if is_input else self.outputs).append(name)
            self._dtype[name] = np.dtype(_numpy_dtype(engine.get_tensor_dtype(name)))
            shape = engine.get_tensor_profile_shape(name, 0)[2] if is_input else engine.get_tensor_shape(name)
            elems = max_batch
            for d in _dims(shape)[1:]:
                elems *= max(int(d), 1)
            self._ptr[name] = self.cuda.malloc(elems * self._dtype[name].itemsize)
            self.context.set_tensor_address(name, self._ptr[name])

    @property
    def input_dtype(self) -> Any:
        """numpy dtype of the first input tensor."""
        return self._dtype[self.inputs[0]]

    def close(self) -> None:
        self.cuda.close()

    def __enter__(self) -> EngineRunner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _enqueue(self) -> None:
        if not self.context.execute_async_v3(self.cuda.stream):
            raise BuildFailure(f"TensorRT execution failed: {'; '.join(self._errors[-3:])}")

    def infer(self, x: npt.NDArray[Any]) -> npt.NDArray[Any]:
        """Outputs of the first output tensor for input batch `x` (cast to the input's dtype)."""
        import numpy as np

        name = self.inputs[0]
        x = np.ascontiguousarray(x, dtype=self._dtype[name])
        if not self.context.set_input_shape(name, tuple(x.shape)):
            raise BuildFailure(f"input shape {x.shape} is outside the plan's profile")
        self.cuda.to_device(self._ptr[name], x)
        self._enqueue()
        out_name = self.outputs[0]
        out = np.empty(tuple(_dims(self.context.get_tensor_shape(out_name))), dtype=self._dtype[out_name])
        self.cuda.to_host(out, self._ptr[out_name])
        self.cuda.synchronize()
        return out

    def latency_ms(self, batch_shape: tuple[int, ...], warmup: int = 20, iters: int = 100, seed: int = 0) -> float:
        """Median GPU time of one execution at `batch_shape`, timed with CUDA events on random inputs."""
        import numpy as np

        name = self.inputs[0]
        x = np.random.default_rng(seed).random(batch_shape, dtype=np.float32).astype(self._dtype[name])
        self.infer(x)
        for _ in range(warmup):
            self._enqueue()
        start, end = self.cuda.event(), self.cuda.event()
        times = []
        for _ in range(iters):
            self.cuda.record(start)
            self._enqueue()
            self.cuda.record(end)
            times.append(self.cuda.elapsed_ms(start, end))
        return float(statistics.median(times))


def plan_latency_ms(plan: Path, profile: ProfileShapes, plugin_libs: tuple[Path, ...] = ()) -> float:
    """Median latency of `plan` at the profile's opt batch (for `--plugins auto`)."""
    with EngineRunner(plan, profile.max_batch, plugin_libs) as runner:
        return runner.latency_ms(profile.opt)


def plan_max_batch(plan: Path, input_name: str, plugin_libs: tuple[Path, ...] = ()) -> int:
    """Profile max batch of an existing plan (for `repo-gen doctor` where TensorRT is present)."""
    _runtime, engine = deserialize_plan(plan, plugin_libs)
    return profile_of(engine, input_name)["max"][0]


def deserialize_plan(plan: Path, plugin_libs: tuple[Path, ...] = (),
                     errors: list[str] | None = None) -> tuple[trt.Runtime, trt.ICudaEngine]:
    """The engine of `plan` and the runtime that owns it, with `plugin_libs` loaded first; the
    runtime's errors (also later ones, e.g. during execution) are appended to `errors`."""
    require_tensorrt()
    import tensorrt as trt

    errors = [] if errors is None else errors
    runtime = trt.Runtime(make_logger(errors))
    runtime.engine_host_code_allowed = True  # version-compatible plans embed a lean runtime
    for lib in plugin_libs:
        runtime.get_plugin_registry().load_library(str(Path(lib).absolute()))
    engine = runtime.deserialize_cuda_engine(Path(plan).read_bytes())
    if engine is None:
        raise BuildFailure(f"{plan}: does not deserialize with TensorRT {tensorrt_version()}: "
                           f"{'; '.join(errors[-3:])}")
    return runtime, engine

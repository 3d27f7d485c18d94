"""Run a real tritonserver on a model repository: choose models, start, wait, stop.

`repo-gen serve`, the tests, bench and tune all start the server through `TritonServer`, so the
argv, the environment and the logs are the same everywhere. The exact argv is logged and the
server's output is kept in a log file (so any failure can be reproduced by hand).

The server runs in its own process group with its python-backend stubs and dies with the process
that started it (`repo_gen.procs`); each start is recorded so that a run killed before it could
stop its server is cleaned up by the next (`repo_gen.triton.leftovers`). Every call to the server
goes through tritonclient's HTTP client.
"""

from __future__ import annotations

import os
import shlex
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from repo_gen import procs
from repo_gen.errors import BuildFailure, UserError
from repo_gen.log import logger
from repo_gen.manifest import ModelEntry, load_manifest
from repo_gen.tools import TritonInstall, cache_dir, find_tritonserver
from repo_gen.triton import leftovers

BACKEND_OF_PLATFORM = {"tensorrt_plan": "tensorrt", "onnxruntime_onnx": "onnxruntime", "pytorch_libtorch": "pytorch",
                       "tensorflow_savedmodel": "tensorflow", "ensemble": "ensemble"}


@dataclass
class ModelChoice:
    name: str
    serve: bool
    reason: str = ""


@dataclass
class ServerPorts:
    http: int = 8000
    grpc: int = 8001
    metrics: int = 8002


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def free_ports(host: str = "127.0.0.1") -> ServerPorts:
    return ServerPorts(free_port(host), free_port(host), free_port(host))


def check_port_free(host: str, port: int, flag: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            raise UserError(f"{flag} {port}: port already in use on {host} ({e.strerror}); pass a free port with {flag}") from e


def _config_backend(model_dir: Path) -> str | None:
    cfg = model_dir / "config.pbtxt"
    if not cfg.is_file():
        return None
    from repo_gen.triton.render import parse_config

    try:
        mc = parse_config(cfg.read_text())
    except BuildFailure:
        return None
    return mc.backend or BACKEND_OF_PLATFORM.get(mc.platform, mc.platform) or None


def _has_plan(model_dir: Path, entry: ModelEntry) -> bool:
    return any((model_dir / str(v) / "model.plan").is_file() for v in entry.versions)


def choose_models(repo: Path, backends: list[str], allow_inaccurate: bool = False) -> list[ModelChoice]:
    """Decide, per model directory, whether this server can serve it, and if not, why.

    Models in repo-gen's manifest follow its status; other model directories are served when
    their backend is present. Ensembles are served when every model they need is served.
    """
    if not repo.is_dir():
        raise UserError(f"--model-repository {repo}: no such directory; run `repo-gen build --output {repo}` first")
    manifest = load_manifest(repo).models
    dirs = sorted(p for p in repo.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not dirs:
        raise UserError(f"--model-repository {repo}: holds no models; run `repo-gen build --output {repo}` first")
    have = set(backends) | {"ensemble"}
    choices: dict[str, ModelChoice] = {}
    ensembles: dict[str, list[str]] = {}
    for d in dirs:
        entry = manifest.get(d.name)
        backend = entry.backend if entry else _config_backend(d)
        if backend is None:
            choices[d.name] = ModelChoice(d.name, False, "no readable config.pbtxt")
            continue
        if entry and entry.status == "not_built" and backend == "tensorrt" and _has_plan(d, entry):
            pass  # built after repo-gen wrote it (rebuild_engine.sh): servable now
        elif entry and entry.status == "not_built":
            choices[d.name] = ModelChoice(d.name, False, f"not built: {entry.status_reason}")
            continue
        if entry and entry.status == "inaccurate" and not allow_inaccurate:
            choices[d.name] = ModelChoice(d.name, False, f"missed its fidelity tolerance ({entry.status_reason}); --allow-inaccurate serves it")
            continue
        if backend not in have:
            choices[d.name] = ModelChoice(d.name, False, f"this tritonserver has no '{backend}' backend")
            continue
        choices[d.name] = ModelChoice(d.name, True)
        if backend == "ensemble":
            ensembles[d.name] = list(entry.extra.get("steps", [])) if entry else []
    for name, steps in ensembles.items():
        missing = [s for s in steps if not choices.get(s, ModelChoice(s, False)).serve]
        if missing:
            choices[name] = ModelChoice(name, False, f"needs {', '.join(missing)}, which this server cannot serve")
    return list(choices.values())


@dataclass
class TritonServer:
    """A tritonserver process bound to `host` (127.0.0.1 unless told otherwise).

    Attributes:
        models: models to load at start (explicit model control); None loads every model
            `choose_models` accepts.
        model_control: "explicit" (default) or "poll" (watches the repository for new versions).
        exit_on_error: stop the server when a model fails to load (serve: yes; tests may say no).
    """

    repo: Path
    host: str = "127.0.0.1"
    ports: ServerPorts = field(default_factory=ServerPorts)
    models: list[str] | None = None
    model_control: str = "explicit"
    exit_on_error: bool = True
    extra_args: list[str] = field(default_factory=list)
    log_path: Path | None = None
    poll_secs: int = 2
    install: TritonInstall | None = None
    proc: subprocess.Popen | None = None
    skipped: list[ModelChoice] = field(default_factory=list)
    # Names of this server's python-backend /dev/shm regions start with it: proof they are ours.
    shm_prefix: str = field(default_factory=leftovers.new_shm_prefix)
    _record: leftovers.ServerRecord | None = field(default=None, repr=False)

    def argv(self) -> list[str]:
        inst = self.install or find_tritonserver()
        self.install = inst
        from repo_gen.triton.argv import ServerOptions, tritonserver_argv
        from repo_gen.trt.serve import tritonserver_args

        opts = ServerOptions(
            repository=str(self.repo.absolute()),
            host=self.host,
            http_port=self.ports.http,
            grpc_port=self.ports.grpc,
            metrics_port=self.ports.metrics,
            model_control=self.model_control,
            models=None if self.models is None else tuple(self.models),
            exit_on_error=self.exit_on_error,
            poll_secs=self.poll_secs,
            backend_directory=str(inst.backend_dir),
            shm_prefix=self.shm_prefix,
        )
        # Every server repo-gen starts (serve, bench, tune, tests) gets what its plan models need:
        # the plugin libraries and the version-compatible flag, read from the manifest.
        return tritonserver_argv(str(inst.binary), opts, tritonserver_args(self.repo, self.models), self.extra_args)

    @property
    def http_url(self) -> str:
        return f"{self.host}:{self.ports.http}"

    @property
    def grpc_url(self) -> str:
        return f"{self.host}:{self.ports.grpc}"

    def start(self, timeout_s: float = 120.0) -> TritonServer:
        inst = self.install or find_tritonserver()
        self.install = inst
        if self.models is None and self.model_control == "explicit":
            choices = choose_models(self.repo, inst.backends)
            self.models = [c.name for c in choices if c.serve]
            self.skipped = [c for c in choices if not c.serve]
        for message in leftovers.clean_leftovers():
            logger.warning(message)
        for port, flag in ((self.ports.http, "--http-port"), (self.ports.grpc, "--grpc-port"), (self.ports.metrics, "--metrics-port")):
            check_port_free(self.host, port, flag)
        if self.log_path is None:
            logs = cache_dir() / "logs"
            logs.mkdir(exist_ok=True)
            self.log_path = logs / f"tritonserver-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
        argv = self.argv()
        logger.debug("starting: " + " ".join(argv))
        env = dict(os.environ)
        env.update(inst.env)
        try:
            with open(self.log_path, "ab") as log:
                log.write(f"$ {shlex.join(argv)}\n".encode())  # the log says how to rerun it by hand
                log.flush()
                self.proc = procs.popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env)
            self._record = leftovers.record(self.proc.pid, argv[0], self.shm_prefix, vars(self.ports), str(self.log_path))
            self.wait_ready(timeout_s)
        except BaseException:
            self.stop()  # interrupted or failed while starting: never leave tritonserver running behind us
            raise
        return self

    def log_tail(self, n: int = 30) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])

    def load_errors(self) -> list[str]:
        if self.log_path is None or not self.log_path.exists():
            return []
        return [ln for ln in self.log_path.read_text(errors="replace").splitlines()
                if "failed to load" in ln or "Invalid argument" in ln or "error:" in ln.lower()]

    def client(self, timeout_s: float = 10.0) -> Any:
        """A tritonclient HTTP client of this server (the caller closes it)."""
        import tritonclient.http as httpclient

        return httpclient.InferenceServerClient(self.http_url, connection_timeout=timeout_s, network_timeout=timeout_s)

    def _ask(self, question: str, timeout_s: float = 2.0) -> bool:
        try:
            client = self.client(timeout_s)
        except Exception:  # noqa: BLE001 - an unreachable server is a "no"
            return False
        try:
            return bool(getattr(client, question)())
        except Exception:  # noqa: BLE001 - tritonclient raises socket and its own errors alike
            return False
        finally:
            client.close()

    def is_ready(self) -> bool:
        return self._ask("is_server_ready")

    def is_live(self) -> bool:
        return self._ask("is_server_live")

    def alive(self) -> bool:
        """The process we started still runs and answers; what measurements ask after a failed point."""
        return self.proc is not None and self.proc.poll() is None and self.is_live()

    def url(self, protocol: str) -> str:
        """host:port of the endpoint for `protocol` ("grpc" or "http")."""
        return self.grpc_url if protocol == "grpc" else self.http_url

    def wait_ready(self, timeout_s: float) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                errors = self.load_errors()
                detail = errors[-1] if errors else self.log_tail(5)
                raise BuildFailure(f"tritonserver exited with code {self.proc.returncode} while starting: {detail} (full log: {self.log_path})")
            if self.is_ready():
                return
            time.sleep(0.25)
        self.stop()
        raise BuildFailure(f"tritonserver not ready after {timeout_s:.0f} s (full log: {self.log_path})")

    def repository_index(self) -> list[dict]:
        """Triton's own view: every model with its state (READY, UNAVAILABLE) and reason."""
        client = self.client()
        try:
            return list(client.get_model_repository_index())
        finally:
            client.close()

    def _control(self, action: str, name: str, timeout_s: float, **kwargs: Any) -> tuple[int, str]:
        """(HTTP status, message) of a repository load/unload; 200 and "" on success."""
        from tritonclient.utils import InferenceServerException

        client = self.client(timeout_s)
        try:
            getattr(client, action)(name, **kwargs)
            return 200, ""
        except InferenceServerException as e:
            status = str(e.status() or "")
            return (int(status) if status.isdigit() else 400), str(e.message())
        finally:
            client.close()

    def load_model(self, name: str, config: str | None = None) -> tuple[int, str]:
        """Load (or reload) `name`, with `config` (JSON) instead of its config.pbtxt when given."""
        return self._control("load_model", name, 300.0, config=config)

    def unload_model(self, name: str) -> tuple[int, str]:
        return self._control("unload_model", name, 120.0)

    def stop(self, timeout_s: float = 30.0) -> int | None:
        """Stop the server and its python-backend stubs (its process group); forget its record."""
        if self.proc is None:
            return None
        # SIGTERM, not SIGINT: a process started from a background shell ignores SIGINT.
        code = procs.stop_group(self.proc, timeout_s)
        if self._record is not None:
            leftovers.kill_proven(self._record)  # stubs that outlived the server
        # Stubs that were killed (not shut down by the server) leave their regions: ours by the prefix.
        for region in leftovers.shm_regions(self.shm_prefix):
            region.unlink(missing_ok=True)
        leftovers.forget(self._record)
        self._record = None
        return code

    def __enter__(self) -> TritonServer:
        if self.proc is None:
            self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

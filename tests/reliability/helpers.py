"""Shared helpers of the reliability tests: the installed CLI, tree snapshots, server probes, metrics."""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tests.conftest import TEST_MAX_BATCH, TEST_MODEL

# The installed entry point, next to the interpreter running the tests (.venv/bin/repo-gen).
REPO_GEN = str(Path(sys.executable).parent / "repo-gen")
PY_MODEL = f"{TEST_MODEL}_py_fp32"
# The options of the session's `fp32_repo` fixture: a rebuild with them hits the stage cache.
BUILD_ARGS = ["--model", TEST_MODEL, "--max-batch", str(TEST_MAX_BATCH), "--precisions", "fp32",
              "--runtimes", "onnx,py", "--no-pipeline"]
# A py-only build of the same model (serves PY_MODEL alone).
PY_ONLY = ["--model", TEST_MODEL, "--max-batch", str(TEST_MAX_BATCH), "--precisions", "fp32", "--runtimes", "py",
           "--no-pipeline"]
STAGING_GLOB = ".repo-gen-staging-*"
FOREIGN = "my_own_model"


# A shell's background job (`cmd &`, nohup) starts with SIGINT ignored, and an ignored signal stays
# ignored across exec: the CLI under test would then install no KeyboardInterrupt handler. Give the
# processes we start the SIGINT a user's terminal would.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


def cli(args: list[str], timeout: float = 300, **kw) -> subprocess.CompletedProcess:
    """Run `repo-gen ARGS` (argv list, never a shell) and capture its output."""
    return subprocess.run([REPO_GEN, *args], capture_output=True, text=True, timeout=timeout, **kw)  # noqa: S603


def popen_cli(args: list[str], **kw) -> subprocess.Popen:
    return subprocess.Popen([REPO_GEN, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)  # noqa: S603


def error_lines(stderr: str) -> list[str]:
    """The lines the CLI prints for a failure ("error: ..." from repo-gen, "repo-gen build: error:" from argparse)."""
    return [ln for ln in stderr.splitlines() if re.match(r"^(error:|repo-gen( \w+)?: error:|interrupted)", ln)]


def tree_state(root: Path, skip: tuple[str, ...] = ()) -> dict[str, tuple[int, str]]:
    """Every file and directory under `root` (relative path -> (mode, sha256 of content or 'dir')).

    `skip`: directory names left out (e.g. "__pycache__", which the python backend's stub writes
    next to model.py when it imports it).
    """
    out: dict[str, tuple[int, str]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in skip)
        for d in dirnames:
            p = os.path.join(dirpath, d)
            out[os.path.relpath(p, root) + "/"] = (os.lstat(p).st_mode, "dir")
        for f in sorted(filenames):
            p = os.path.join(dirpath, f)
            with open(p, "rb") as fh:
                out[os.path.relpath(p, root)] = (os.lstat(p).st_mode, hashlib.sha256(fh.read()).hexdigest())
    return out


def diff_trees(before: dict, after: dict) -> list[str]:
    keys = sorted(set(before) | set(after))
    return [k for k in keys if before.get(k) != after.get(k)]


def add_foreign_model(repo: Path) -> Path:
    """A model directory repo-gen did not create (must never be touched)."""
    d = repo / FOREIGN
    (d / "1").mkdir(parents=True, exist_ok=True)
    (d / "config.pbtxt").write_text(f'name: "{FOREIGN}"\nbackend: "python"\nmax_batch_size: 0\n')
    (d / "1" / "model.py").write_text("# someone else's model\n")
    return d


def staging_dirs(parent: Path) -> list[Path]:
    return sorted(parent.glob(STAGING_GLOB))


class StderrWatch:
    """Collect a process's stderr lines in a thread, so a test can wait for a line and still read the rest."""

    def __init__(self, proc: subprocess.Popen):
        self.proc = proc
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._pump, daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def wait_for(self, pattern: str, timeout: float) -> bool:
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        seen = 0
        with self._cond:
            while True:
                if any(rx.search(ln) for ln in self.lines[seen:]):
                    return True
                seen = len(self.lines)
                left = deadline - time.monotonic()
                if left <= 0 or (not self._thread.is_alive()):
                    return False
                self._cond.wait(min(left, 0.5))

    def finish(self, timeout: float = 120) -> tuple[int, str]:
        self.proc.wait(timeout)
        self._thread.join(30)
        if self.proc.stdout is not None:
            self.proc.stdout.read()
        return self.proc.returncode, self.text

    @property
    def text(self) -> str:
        with self._cond:
            return "\n".join(self.lines)


# -- mounts (tests run as root: permission bits do not stop root, a read-only mount does) -------------

def can_mount() -> bool:
    return os.geteuid() == 0 and Path("/proc/self/mountinfo").exists()


def mount(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(["mount", *args], capture_output=True, text=True, timeout=30)  # noqa: S603, S607


def umount(path: Path) -> None:
    subprocess.run(["umount", "-l", str(path)], capture_output=True, text=True, timeout=30)  # noqa: S603, S607


# -- server probes ------------------------------------------------------------------------------------

def http_get(url: str, timeout: float = 2.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:  # noqa: S310 - loopback URLs we built
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
        return 0, b""


def http_post(url: str, body: bytes, headers: dict | None = None, timeout: float = 30.0) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=body, method="POST", headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:  # noqa: S310 - loopback URLs we built
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def wait_ready(http_url: str, timeout: float) -> float:
    """Seconds until /v2/health/ready answers 200 (raises TimeoutError)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if http_get(f"http://{http_url}/v2/health/ready", 1.0)[0] == 200:
            return time.monotonic() - t0
        time.sleep(0.1)
    raise TimeoutError(f"{http_url} not ready after {timeout} s")


def metric_sum(metrics_url: str, name: str, model: str) -> float:
    """Sum of Triton metric `name` over all label sets of `model` (e.g. every failure reason)."""
    status, body = http_get(f"http://{metrics_url}/metrics", 5.0)
    assert status == 200, f"metrics endpoint answered {status}"
    total = 0.0
    for ln in body.decode().splitlines():
        if ln.startswith(name + "{") and f'model="{model}"' in ln:
            total += float(ln.rsplit(" ", 1)[1])
    return total


def listening_addresses(port: int) -> set[str]:
    """Local addresses with a TCP socket listening on `port` (from /proc/net/tcp{,6})."""
    out = set()
    for table, v6 in (("/proc/net/tcp", False), ("/proc/net/tcp6", True)):
        with contextlib.suppress(OSError):
            for ln in Path(table).read_text().splitlines()[1:]:
                parts = ln.split()
                local, state = parts[1], parts[3]
                addr_hex, port_hex = local.split(":")
                if state != "0A" or int(port_hex, 16) != port:  # 0A = LISTEN
                    continue
                # /proc prints the address as 32-bit words in host (little-endian) order.
                raw = b"".join(bytes.fromhex(addr_hex[i : i + 8])[::-1] for i in range(0, len(addr_hex), 8))
                if v6:
                    a6 = ipaddress.IPv6Address(raw)
                    out.add(str(a6.ipv4_mapped or a6))
                else:
                    out.add(str(ipaddress.IPv4Address(raw)))
    return out


def child_pids(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            out += [int(x) for x in (task / "children").read_text().split()]
    return out


def kill_quietly(proc: subprocess.Popen | None, sig: int = signal.SIGINT, timeout: float = 30) -> None:
    if proc is None or proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(sig)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


# -- a client loop, counting every outcome ------------------------------------------------------------

@dataclass
class ClientLoop:
    """Infer `model` over gRPC in a thread, as fast as possible or every `period_s`, counting outcomes."""

    grpc_url: str
    model: str
    period_s: float = 0.0
    batch: int = 1
    ok: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def _run(self) -> None:
        import numpy as np
        import tritonclient.grpc as g

        client = g.InferenceServerClient(self.grpc_url)
        x = np.random.default_rng(0).random((self.batch, 3, 256, 256), dtype=np.float32)
        inp = g.InferInput("input", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        while not self._stop.is_set():
            t0 = time.perf_counter()
            try:
                out = client.infer(self.model, [inp], client_timeout=60).as_numpy("logits")
                if out is None or out.shape != (self.batch, 1000):
                    raise RuntimeError(f"bad output {None if out is None else out.shape}")
                self.ok += 1
                self.latencies.append(time.perf_counter() - t0)
            except Exception as e:  # noqa: BLE001 - every failure is counted and kept
                self.failed += 1
                if len(self.errors) < 20:
                    self.errors.append(f"{time.strftime('%H:%M:%S')} {str(e)[:200]}")
                time.sleep(0.05)
            if self.period_s:
                time.sleep(self.period_s)
        client.close()

    def __enter__(self) -> ClientLoop:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(120)


def serve_args(repo: Path, ports, *extra: str) -> list[str]:
    """The argv (after `repo-gen`) of `repo-gen serve` on `repo` at `ports` (http, grpc, metrics)."""
    return ["serve", "--model-repository", str(repo), "--http-port", str(ports.http), "--grpc-port", str(ports.grpc),
            "--metrics-port", str(ports.metrics), *extra]


@contextlib.contextmanager
def served_cli(repo: Path, *extra: str, timeout: float = 180) -> Iterator[tuple[subprocess.Popen, object]]:
    """`repo-gen serve` (the CLI) on free loopback ports; yields (process, ports); stops it with SIGINT."""
    from repo_gen.triton.server import free_ports

    ports = free_ports()
    log = open(repo.parent / f"serve-{ports.http}.log", "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen([REPO_GEN, *serve_args(repo, ports, *extra)],  # noqa: S603
                            stdout=log, stderr=subprocess.STDOUT, text=True)
    proc.log_path = Path(log.name)  # type: ignore[attr-defined]
    try:
        wait_ready(f"127.0.0.1:{ports.http}", timeout)
        yield proc, ports
    finally:
        kill_quietly(proc, signal.SIGINT, 60)
        log.close()


def versions_served(http_url: str) -> list[str]:
    """The versions of PY_MODEL the server at `http_url` reports ([] if it does not answer 200)."""
    status, body = http_get(f"http://{http_url}/v2/models/{PY_MODEL}", 5)
    return json.loads(body).get("versions", []) if status == 200 else []


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


class _Payload:
    """Pickles to "call os.system(...)" when unpickled: a checkpoint that runs code if loaded unsafely."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def write_malicious_checkpoint(path: Path, marker: Path, legacy: bool = False) -> None:
    """A torch.save file whose state dict hides a payload that would create `marker`."""
    import torch

    obj = {"state_dict": {"head.fc.weight": torch.zeros(2, 2), "evil": _Payload(marker)}}
    torch.save(obj, path, _use_new_zipfile_serialization=not legacy)
    assert not marker.exists()


def stub_processes_of(server_pid: int) -> list[tuple[int, str]]:
    """(pid, shared-memory region name) of the python backend stubs a tritonserver started."""
    out = []
    for pid in child_pids(server_pid):
        with contextlib.suppress(OSError):
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
            if argv and argv[0].endswith("triton_python_backend_stub"):
                out.append((pid, argv[2] if len(argv) > 2 else ""))
    return out


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def reap_orphan_stubs(stubs: list[tuple[int, str]]) -> list[tuple[int, str]]:
    """SIGKILL the python backend stubs of `stubs` still alive and unlink their /dev/shm regions.

    Upstream (python backend 2.51), the stubs of a SIGKILLed tritonserver live on as orphans (they
    ignore SIGTERM) and keep their shared memory. Returns the (pid, region) of those found alive.
    """
    orphans = [(pid, shm) for pid, shm in stubs if alive(pid)]
    for pid, shm in orphans:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        if shm:
            with contextlib.suppress(OSError):
                os.unlink(f"/dev/shm/{shm}")
    return orphans

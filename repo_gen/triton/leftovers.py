"""What a killed repo-gen run left behind: its tritonserver, python-backend stubs, /dev/shm regions.

Every tritonserver repo-gen starts is recorded in `<cache>/servers/<pid>.json` (who started it,
its pid, process group, start time, ports, shm prefix, log) and the record is removed when the
server is stopped. A record whose owner is gone means the owner was killed (SIGKILL, OOM) before
it could stop its server. The next start then cleans up only what it can prove is that run's:

- a process is killed only when it is in the recorded process group, started no earlier than the
  recorded server, and is either the recorded tritonserver (same pid, start time and binary) or a
  python-backend stub whose command line carries the run's unique shm prefix;
- a /dev/shm region is removed only when its name starts with that unique prefix (given to the
  python backend with `shm-region-prefix-name`).

Anything else (other users' servers, servers of runs still alive) is left alone.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

from repo_gen.procs import cmdline, group_members, process_start_ticks

SHM_DIR = Path("/dev/shm")
STUB_NAME = "triton_python_backend_stub"


def state_dir() -> Path:
    from repo_gen.tools import cache_dir

    d = cache_dir() / "servers"
    d.mkdir(parents=True, exist_ok=True)
    return d


def new_shm_prefix() -> str:
    """A prefix no other server uses: proof, later, that a /dev/shm region is ours."""
    return f"repo_gen_{uuid.uuid4().hex[:12]}_"


@dataclass
class ServerRecord:
    pid: int
    pgid: int
    start_ticks: int
    binary: str
    shm_prefix: str
    ports: dict[str, int] = field(default_factory=dict)
    owner_pid: int = 0
    owner_start_ticks: int = 0
    log: str = ""
    started_at: str = ""

    @property
    def path(self) -> Path:
        return state_dir() / f"{self.pid}.json"


def record(pid: int, binary: str, shm_prefix: str, ports: dict[str, int], log: str) -> ServerRecord | None:
    """Write the record of a server just started (None when the process is already gone)."""
    ticks = process_start_ticks(pid)
    if ticks is None:
        return None
    rec = ServerRecord(pid=pid, pgid=pid, start_ticks=ticks, binary=binary, shm_prefix=shm_prefix, ports=ports,
                       owner_pid=os.getpid(), owner_start_ticks=process_start_ticks(os.getpid()) or 0,
                       log=log, started_at=time.strftime("%Y-%m-%dT%H:%M:%S"))
    save(rec)
    return rec


def save(rec: ServerRecord) -> None:
    tmp = rec.path.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(rec)))
    tmp.replace(rec.path)


def forget(rec: ServerRecord | None) -> None:
    if rec is not None:
        rec.path.unlink(missing_ok=True)


def _load(path: Path) -> ServerRecord | None:
    try:
        return ServerRecord(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        return None


def _alive(pid: int, start_ticks: int) -> bool:
    return pid > 0 and process_start_ticks(pid) == start_ticks


def proven_processes(rec: ServerRecord) -> list[int]:
    """Pids of `rec`'s run still alive, each proven as described in the module docstring."""
    out = []
    for pid in group_members(rec.pgid):
        ticks = process_start_ticks(pid)
        if ticks is None or ticks < rec.start_ticks:
            continue
        argv = cmdline(pid)
        is_server = pid == rec.pid and ticks == rec.start_ticks and argv[:1] == [rec.binary]
        is_stub = bool(argv) and argv[0].endswith(STUB_NAME) and any(a.startswith(rec.shm_prefix) for a in argv)
        if is_server or is_stub:
            out.append(pid)
    return out


def kill_proven(rec: ServerRecord, wait_s: float = 10.0) -> list[int]:
    """SIGKILL the proven processes of `rec`, wait until they are gone; returns their pids."""
    pids = proven_processes(rec)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + wait_s
    while pids and proven_processes(rec) and time.monotonic() < deadline:  # a zombie has no cmdline
        time.sleep(0.1)
    return pids


def shm_regions(prefix: str) -> list[Path]:
    if not prefix or not SHM_DIR.is_dir():
        return []
    return sorted(p for p in SHM_DIR.iterdir() if p.name.startswith(prefix))


def clean_leftovers() -> list[str]:
    """Clean up after repo-gen runs that died without stopping their servers; one message per run
    saying what was found and what was done (empty: nothing found). Runs still alive are skipped."""
    messages = []
    for path in sorted(state_dir().glob("*.json")):
        rec = _load(path)
        if rec is None:
            path.unlink(missing_ok=True)
            continue
        if _alive(rec.owner_pid, rec.owner_start_ticks):
            continue  # its owner still runs and will stop it
        pids = kill_proven(rec)
        regions = shm_regions(rec.shm_prefix)
        for r in regions:
            r.unlink(missing_ok=True)
        ports = ", ".join(f"{k} {v}" for k, v in rec.ports.items())
        found = []
        if pids:
            found.append(f"stopped {len(pids)} of its process(es) (pids {', '.join(map(str, pids))})")
        if regions:
            found.append(f"removed {len(regions)} /dev/shm region(s) {rec.shm_prefix}*")
        messages.append(f"a repo-gen run (pid {rec.owner_pid}) ended without stopping its tritonserver (pid {rec.pid}, "
                        f"ports {ports}, started {rec.started_at}): "
                        + ("; ".join(found) if found else "nothing of it was left running") + f"; its log: {rec.log}")
        path.unlink(missing_ok=True)
    return messages


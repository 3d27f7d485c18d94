"""`repo-gen bench` / `tune` stopped by SIGTERM, SIGINT or SIGKILL leave no tritonserver, python-backend
stub, perf_analyzer or /dev/shm region of theirs behind, and a run after a SIGKILL cleans up only what
it can prove was the killed run's.

Every check looks at the processes the command under test started (its children and their process
group), never at processes by name: other tritonservers may run on this machine.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from repo_gen.procs import cmdline, group_members, process_start_ticks
from tests.reliability.helpers import PY_MODEL, REPO_GEN, child_pids

pytestmark = [pytest.mark.server]


def _alive(pid: int, ticks: int) -> bool:
    """`pid` is still the process that had start time `ticks`, and not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z" and process_start_ticks(pid) == ticks


def _wait_for_children(proc: subprocess.Popen, timeout: float) -> dict[str, list[int]]:
    """Wait until `proc` runs both a tritonserver and a perf_analyzer; return {"server", "stubs", "perf"}."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"the command ended early ({proc.returncode}): {proc.stderr.read() if proc.stderr else ''}"
        kids = {pid: cmdline(pid) for pid in child_pids(proc.pid)}
        server = [p for p, a in kids.items() if a and a[0].endswith("tritonserver")]
        perf = [p for p, a in kids.items() if a and a[0].endswith("perf_analyzer")]
        if server and perf:
            stubs = [p for p in group_members(server[0]) if p != server[0]
                     and cmdline(p)[:1] and cmdline(p)[0].endswith("triton_python_backend_stub")]
            return {"server": server, "stubs": stubs, "perf": perf}
        time.sleep(0.2)
    raise AssertionError("no tritonserver + perf_analyzer started within the timeout")


def _signal_mid_run(args: list[str], sig: int, tmp_path: Path) -> tuple[int, dict[str, list[int]], dict[int, int], str]:
    log = open(tmp_path / "cli.log", "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen([REPO_GEN, *args], stdout=log, stderr=subprocess.STDOUT)  # noqa: S603
    try:
        found = _wait_for_children(proc, timeout=240)
        assert found["stubs"], "no python-backend stub in the server's process group"
        ticks = {p: process_start_ticks(p) or 0 for ps in found.values() for p in ps}
        time.sleep(1.0)  # mid-measurement
        proc.send_signal(sig)
        rc = proc.wait(120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
        log.close()
    return rc, found, ticks, (tmp_path / "cli.log").read_text()


def _bench_args(repo: Path, out: Path) -> list[str]:
    return ["bench", "--model-repository", str(repo), "--models", PY_MODEL, "--concurrency", "1,2",
            "--input-data", "random", "--output", str(out), "--measurement-interval-ms", "3000"]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_bench_stopped_by_signal_stops_server_stubs_and_perf_analyzer(repo_copy, perf_analyzer, tmp_path, sig):
    rc, found, ticks, log = _signal_mid_run(_bench_args(repo_copy, tmp_path / "bench"), sig, tmp_path)
    assert rc == 130, log[-2000:]
    time.sleep(0.5)
    left = [p for p, t in ticks.items() if _alive(p, t)]
    assert not left, f"still running after {signal.Signals(sig).name}: {[(p, cmdline(p)[:1]) for p in left]}"
    assert (tmp_path / "bench" / "report.md").is_file()  # what was measured is still written


def test_tune_stopped_by_sigterm_stops_server_stubs_and_perf_analyzer(repo_copy, perf_analyzer, tmp_path):
    args = ["tune", "--model-repository", str(repo_copy), "--model", PY_MODEL, "--instance-counts", "1,2",
            "--concurrency", "1", "--input-data", "random", "--work-dir", str(tmp_path / "work"),
            "--measurement-interval-ms", "3000", "--dry-run"]
    rc, found, ticks, log = _signal_mid_run(args, signal.SIGTERM, tmp_path)
    assert rc == 130, log[-2000:]
    time.sleep(0.5)
    left = [p for p, t in ticks.items() if _alive(p, t)]
    assert not left, f"still running after SIGTERM: {[(p, cmdline(p)[:1]) for p in left]}"


def test_after_sigkill_nothing_keeps_running_and_the_next_run_cleans_up(repo_copy, perf_analyzer, tmp_path):
    """SIGKILL leaves no handler a chance: the kernel kills the server and perf_analyzer (parent-death
    signal); the stubs and /dev/shm regions of that run are found and removed by the next start."""
    from repo_gen.triton import leftovers
    from repo_gen.triton.server import TritonServer, free_ports

    rc, found, ticks, log = _signal_mid_run(_bench_args(repo_copy, tmp_path / "bench"), signal.SIGKILL, tmp_path)
    assert rc == -signal.SIGKILL
    server, perf = found["server"][0], found["perf"][0]
    deadline = time.monotonic() + 15
    while (_alive(server, ticks[server]) or _alive(perf, ticks[perf])) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _alive(server, ticks[server]), "tritonserver outlived the SIGKILLed repo-gen"
    assert not _alive(perf, ticks[perf]), "perf_analyzer outlived the SIGKILLed repo-gen"
    records = [r for r in (leftovers._load(p) for p in leftovers.state_dir().glob("*.json")) if r and r.pid == server]
    assert records, "the killed run's server was not recorded"
    prefix = records[0].shm_prefix

    # The next start says what it found and cleans up the killed run's stubs and shared memory.
    with TritonServer(repo_copy, ports=free_ports(), models=[PY_MODEL]) as second:
        assert second.is_ready()
    stubs = [p for p in found["stubs"] if _alive(p, ticks[p])]
    assert not stubs, f"stubs of the killed run still alive: {stubs}"
    assert not leftovers.shm_regions(prefix)
    assert not (leftovers.state_dir() / f"{server}.json").exists()
    assert not leftovers.shm_regions(second.shm_prefix)  # and the second run left nothing either


def test_cleanup_kills_only_what_it_can_prove(fp32_repo, tmp_path):
    """A record of a dead run: its real tritonserver (and stubs, and shm) are removed; a process that
    merely reuses a recorded pid slot (other binary, later start, another group) is left alone."""
    from repo_gen.tools import find_tritonserver
    from repo_gen.triton import leftovers
    from repo_gen.triton.server import TritonServer, free_ports

    inst = find_tritonserver()
    srv = TritonServer(fp32_repo, ports=free_ports(), models=[PY_MODEL], install=inst)
    env = dict(os.environ)
    env.update(inst.env)
    # Started without repo-gen's parent-death signal, as a server on a system without one would be.
    with open(tmp_path / "server.log", "wb") as log:
        orphan = subprocess.Popen(srv.argv(), stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)  # noqa: S603
    decoy = subprocess.Popen(["sleep", "300"], start_new_session=True)  # noqa: S603, S607
    dead_owner = subprocess.Popen(["true"])  # noqa: S603, S607
    dead_owner.wait()
    try:
        srv.proc = orphan
        srv.wait_ready(180)
        stubs = [p for p in group_members(orphan.pid) if p != orphan.pid]
        assert stubs and leftovers.shm_regions(srv.shm_prefix)
        rec = leftovers.record(orphan.pid, srv.argv()[0], srv.shm_prefix, vars(srv.ports), str(tmp_path / "server.log"))
        assert rec is not None
        rec.owner_pid, rec.owner_start_ticks = dead_owner.pid, 1
        leftovers.save(rec)
        # The decoy claims to be a server of a dead run too, but its binary is not the recorded one.
        fake = leftovers.record(decoy.pid, srv.argv()[0], "repo_gen_decoy_", {}, "")
        assert fake is not None
        fake.owner_pid, fake.owner_start_ticks = dead_owner.pid, 1
        leftovers.save(fake)

        messages = leftovers.clean_leftovers()
        assert any(f"tritonserver (pid {orphan.pid}" in m and "stopped" in m and "/dev/shm" in m for m in messages), messages
        assert orphan.wait(15) == -signal.SIGKILL
        assert not [p for p in stubs if Path(f"/proc/{p}").exists() and cmdline(p)]
        assert not leftovers.shm_regions(srv.shm_prefix)
        assert decoy.poll() is None, "a process that was not provably ours was killed"
        assert any(f"pid {decoy.pid}" in m and "nothing of it was left running" in m for m in messages), messages
    finally:
        for p in (orphan, decoy):
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(10)

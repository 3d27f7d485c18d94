"""Faults and updates on a real tritonserver started by `repo-gen serve` (the CLI):

- SIGKILL of tritonserver under load: `repo-gen serve` reports it and exits 1, the repository is
  untouched, a new `repo-gen serve` loads it and requests succeed again (restart-to-ready time);
- SIGTERM of `repo-gen serve` (docker stop, systemd) stops tritonserver with it;
- hot update: `repo-gen build --version 2` into a repository served in poll mode goes live with no
  failed request, and version 1 is retired by the version policy (latest 1).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.reliability.helpers import (
    PY_MODEL,
    PY_ONLY,
    REPO_GEN,
    ClientLoop,
    child_pids,
    cli,
    http_get,
    kill_quietly,
    listening_addresses,
    reap_orphan_stubs,
    serve_args,
    served_cli,
    stub_processes_of,
    tree_state,
    versions_served,
    wait_ready,
)

pytestmark = [pytest.mark.server]
PYCACHE = ("__pycache__",)  # written next to model.py by the python backend's stub, not by repo-gen


def _tritonserver_of(serve_proc: subprocess.Popen) -> int:
    kids = child_pids(serve_proc.pid)
    assert len(kids) == 1, f"expected one tritonserver child of repo-gen serve, found {kids}"
    assert "tritonserver" in Path(f"/proc/{kids[0]}/cmdline").read_bytes().decode(errors="replace")
    return kids[0]


def _first_success_s(grpc_url: str, timeout: float) -> float:
    """Seconds until a fresh client's request succeeds."""
    import numpy as np
    import tritonclient.grpc as g

    x = np.zeros((1, 3, 256, 256), np.float32)
    inp = g.InferInput("input", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        try:
            with g.InferenceServerClient(grpc_url) as c:
                c.infer(PY_MODEL, [inp], client_timeout=30)
            return time.monotonic() - t0
        except Exception:  # noqa: BLE001 - not up yet
            time.sleep(0.1)
    raise TimeoutError("no successful request")


def _pid_gone(pid: int, timeout: float = 30) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        # a zombie still answers kill(0): check its state
        try:
            if Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z":
                return True
        except OSError:
            return True
        time.sleep(0.1)
    return False


def test_sigkill_under_load_then_restart(repo_copy, tmp_path):
    repo = repo_copy
    before = tree_state(repo, skip=PYCACHE)
    figures = {}
    with served_cli(repo) as (serve, ports):
        grpc_url = f"127.0.0.1:{ports.grpc}"
        for port in (ports.http, ports.grpc, ports.metrics):  # `repo-gen serve` default host
            assert listening_addresses(port) == {"127.0.0.1"}
        loops = [ClientLoop(grpc_url, PY_MODEL) for _ in range(3)]
        for lp in loops:
            lp.__enter__()
        try:
            deadline = time.monotonic() + 60
            while sum(lp.ok for lp in loops) < 6 and time.monotonic() < deadline:
                time.sleep(0.1)
            ok_before_kill = sum(lp.ok for lp in loops)
            assert ok_before_kill >= 6, [lp.errors for lp in loops]
            server_pid = _tritonserver_of(serve)
            stubs = stub_processes_of(server_pid)
            assert stubs, "no python backend stub found under tritonserver"
            os.kill(server_pid, signal.SIGKILL)
            rc = serve.wait(60)
            log = serve.log_path.read_text()  # type: ignore[attr-defined]
            assert rc == 1, log[-2000:]
            assert "tritonserver exited with code -9" in log, log[-2000:]
            assert tree_state(repo, skip=PYCACHE) == before, "the crash changed the repository"
            # Upstream behaviour (python backend 2.51): the stubs of a SIGKILLed server live on as
            # orphans (they ignore SIGTERM) and keep their /dev/shm regions. Count them, then clean up.
            time.sleep(3.0)
            orphans = reap_orphan_stubs(stubs)
            figures["orphaned_stubs_after_sigkill"] = f"{len(orphans)} of {len(stubs)}"

            # Restart with the same CLI and ports; the client loops keep running throughout.
            t0 = time.monotonic()
            log2 = open(tmp_path / "restart.log", "w")  # noqa: SIM115
            restarted = subprocess.Popen([REPO_GEN, *serve_args(repo, ports)],  # noqa: S603
                                         stdout=log2, stderr=subprocess.STDOUT)
            try:
                wait_ready(f"127.0.0.1:{ports.http}", 180)
                figures["restart_to_ready_s"] = round(time.monotonic() - t0, 2)
                figures["restart_to_first_success_s"] = round(figures["restart_to_ready_s"] + _first_success_s(grpc_url, 60), 2)
                ok_after = sum(lp.ok for lp in loops)
                deadline = time.monotonic() + 60
                while sum(lp.ok for lp in loops) < ok_after + 6 and time.monotonic() < deadline:
                    time.sleep(0.1)
                assert sum(lp.ok for lp in loops) >= ok_after + 6, "existing clients did not recover"
                status, body = http_get(f"http://127.0.0.1:{ports.http}/v2/models/{PY_MODEL}/ready")
                assert status == 200
                new_pid = _tritonserver_of(restarted)
                # repo-gen serve's own start summary (its per-model answer check) can finish after the
                # server answers ready; a signal inside server.start() is "interrupted" (130), after it a stop (0).
                deadline = time.monotonic() + 60
                while "Ctrl-C to stop" not in (tmp_path / "restart.log").read_text() and time.monotonic() < deadline:
                    time.sleep(0.1)
                # SIGTERM (docker stop / systemd) to repo-gen serve stops tritonserver too.
                restarted.send_signal(signal.SIGTERM)
                assert restarted.wait(60) == 0
                assert _pid_gone(new_pid), "tritonserver outlived repo-gen serve after SIGTERM"
            finally:
                kill_quietly(restarted, signal.SIGKILL)
                log2.close()
        finally:
            for lp in loops:
                lp.__exit__(None, None, None)
    figures["failed_requests_during_outage"] = sum(lp.failed for lp in loops)
    assert tree_state(repo, skip=PYCACHE) == before
    print(f"\nfault figures: {json.dumps(figures)}")
    (tmp_path / "figures.json").write_text(json.dumps(figures))


@pytest.mark.slow
def test_hot_update_in_poll_mode_has_no_failed_request(tmp_path):
    repo = tmp_path / "model_repository"
    r = cli(["build", *PY_ONLY, "--output", str(repo)])
    assert r.returncode == 0, r.stderr[-3000:]
    with served_cli(repo, "--model-control", "poll") as (_serve, ports):
        http_url, grpc_url = f"127.0.0.1:{ports.http}", f"127.0.0.1:{ports.grpc}"
        assert versions_served(http_url) == ["1"]
        with ClientLoop(grpc_url, PY_MODEL, period_s=0.01) as loop:
            time.sleep(1.0)
            t_start = time.monotonic()
            r = cli(["build", *PY_ONLY, "--version", "2", "--output", str(repo)])
            assert r.returncode == 0, r.stderr[-3000:]
            built_s = time.monotonic() - t_start
            while versions_served(http_url) != ["2"] and time.monotonic() - t_start < 90:
                time.sleep(0.05)
            live_s = time.monotonic() - t_start
            ok_at_switch = loop.ok
            time.sleep(2.0)
        assert versions_served(http_url) == ["2"], versions_served(http_url)
        assert loop.failed == 0, f"{loop.failed} failed requests during the hot update: {loop.errors}"
        assert loop.ok > ok_at_switch > 0
        # Version 1 is retired by version_policy { latest { num_versions: 1 } }, though still on disk.
        assert (repo / PY_MODEL / "1").is_dir() and (repo / PY_MODEL / "2").is_dir()
        status, _ = http_get(f"http://{http_url}/v2/models/{PY_MODEL}/versions/1/ready")
        assert status != 200
        status, _ = http_get(f"http://{http_url}/v2/models/{PY_MODEL}/versions/2/ready")
        assert status == 200
        print(f"\nhot update: {loop.ok} requests, {loop.failed} failed; build took {built_s:.1f} s, "
              f"version 2 served {live_s:.1f} s after the build started")

"""Child processes that must not outlive repo-gen: tritonserver (with its python-backend stubs) and
perf_analyzer.

Each child starts in its own process group (its stubs inherit it), so stopping it is one
`killpg` that takes the stubs too, and a Ctrl-C typed at the terminal reaches repo-gen only,
which then stops its children in order instead of racing them. On Linux each child also gets
PR_SET_PDEATHSIG(SIGKILL): when repo-gen itself is SIGKILLed (no handler can run) the kernel
kills the child. The stubs a SIGKILLed tritonserver leaves behind are found by the next run
(`repo_gen.triton.leftovers`).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

_PR_SET_PDEATHSIG = 1
# Loaded here, in the parent: the preexec hook runs between fork and exec, where loading a
# library is not safe.
_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None


def _die_with_parent(parent: int) -> None:
    """preexec_fn: SIGKILL this child when the process that started it dies."""
    if _LIBC is not None:
        _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


def popen(argv: list[str], **kwargs) -> subprocess.Popen:
    """`subprocess.Popen(argv)` in a new process group that dies with this process (Linux)."""
    parent = os.getpid()
    return subprocess.Popen(argv, start_new_session=True,  # noqa: S603 - argv lists built by callers, no shell
                            preexec_fn=lambda: _die_with_parent(parent), **kwargs)


def signal_group(pgid: int, sig: int) -> bool:
    """Send `sig` to process group `pgid`; False when no process of it is left."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    return True


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold SIGINT/SIGTERM/SIGHUP until the block ends, so a second Ctrl-C does not cut a cleanup
    short; a signal that arrived meanwhile is delivered (and raises) right after."""
    sigs = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}
    try:
        old = signal.pthread_sigmask(signal.SIG_BLOCK, sigs)
    except (AttributeError, ValueError, OSError):
        yield
        return
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def stop_group(proc: subprocess.Popen, timeout_s: float = 30.0) -> int | None:
    """SIGTERM the group of `proc` (a `popen` child), wait, then SIGKILL the group; returns the exit code.

    The group is signalled only while its leader is not reaped yet: until then its pid (the group
    id) cannot belong to anyone else. Members that outlive the leader (python-backend stubs) are
    the caller's to find (`repo_gen.triton.leftovers.proven_processes`).
    """
    with signals_deferred():
        if proc.poll() is None:
            signal_group(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                signal_group(proc.pid, signal.SIGKILL)
                proc.wait(10)
        return proc.returncode


def run(argv: list[str], timeout_s: float, env: dict[str, str] | None = None) -> tuple[int, str, bool]:
    """Run `argv` to completion (own group, dies with us); returns (exit code, stdout+stderr, timed out).

    On any exception (KeyboardInterrupt from Ctrl-C or SIGTERM included) the child's whole group
    is killed before the exception goes on.
    """
    proc = popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    try:
        out, _ = proc.communicate(timeout=timeout_s)
        return proc.returncode, out.decode(errors="replace"), False
    except subprocess.TimeoutExpired:
        stop_group(proc, timeout_s=5)
        out, _ = proc.communicate()
        return -1, out.decode(errors="replace"), True
    except BaseException:
        stop_group(proc, timeout_s=5)
        raise


def process_start_ticks(pid: int) -> int | None:
    """The start time of `pid` in clock ticks since boot (/proc/PID/stat field 22); None if gone.

    With the pid, it names one process for good: a reused pid has a later start time.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])


def process_group_of(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[2])


def cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def group_members(pgid: int) -> list[int]:
    """Live pids whose process group is `pgid` (zombies included until reaped)."""
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit() and process_group_of(int(d.name)) == pgid:
            out.append(int(d.name))
    return sorted(out)

"""`repo-gen serve`: a healthy start prints what a user needs (models ready, URLs, the server's log)
and nothing alarming; tritonserver's own output goes to that log."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.reliability.helpers import PY_MODEL, served_cli

pytestmark = [pytest.mark.server]


def test_healthy_start_prints_ready_models_urls_and_log_only(repo_copy):
    # repo_copy holds an onnx model too, which this tritonserver (python backend only) cannot serve:
    # an expected, calm "not served here", not a warning.
    with served_cli(repo_copy) as (proc, ports):
        log_path: Path = proc.log_path  # type: ignore[attr-defined]
        deadline = time.monotonic() + 60
        while "Ctrl-C to stop" not in log_path.read_text() and time.monotonic() < deadline:
            time.sleep(0.2)
        out = log_path.read_text()
    lines = [ln for ln in out.splitlines() if ln.strip()]
    start = lines[: next(i for i, ln in enumerate(lines) if "Ctrl-C to stop" in ln) + 1]
    alarming = [ln for ln in start if ln.lstrip().startswith(("WARNING", "ERROR", "INFO", "E1", "W1", "I1"))]
    assert not alarming, "\n".join(start)
    assert len(start) <= 8, "\n".join(start)
    assert f"ready: 1 model(s): {PY_MODEL}" in out
    assert "not served here:" in out and "_onnx_fp32" in out and "no 'onnxruntime' backend" in out
    assert f"http://127.0.0.1:{ports.http}/v2/health/ready" in out and f"127.0.0.1:{ports.grpc}" in out
    assert f"http://127.0.0.1:{ports.metrics}/metrics" in out
    server_log = Path(next(ln for ln in start if ln.startswith("server log: ")).split("server log: ", 1)[1])
    first = server_log.read_text().splitlines()[0]
    assert first.startswith("$ ") and "tritonserver" in first and f"--http-port={ports.http}" in first
    assert "READY" in server_log.read_text()  # tritonserver's own table went to the log, not the terminal

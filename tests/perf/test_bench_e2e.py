"""`repo-gen bench` against a real tritonserver and the real perf_analyzer."""

import csv
import json
import os
import signal
import threading
import time

import numpy as np
import pytest
from PIL import Image

from repo_gen.cli import main
from repo_gen.errors import BuildFailure, UserError
from repo_gen.perf.bench import BenchConfig, run_bench
from tests.conftest import LOOSE_PERF_ARGS, TEST_MODEL, loose_perf_settings

pytestmark = pytest.mark.server
PY_MODEL = f"{TEST_MODEL}_py_fp32"
# Count windows, loose stability (tests/conftest.py): these tests check the plumbing, not the machine.
FAST = LOOSE_PERF_ARGS


def _png_ok(path):
    img = Image.open(path)
    img.verify()
    arr = np.asarray(Image.open(path).convert("L"), dtype=np.float32)
    assert arr.shape[0] > 100 and arr.shape[1] > 100 and arr.std() > 5  # not blank


@pytest.mark.slow
def test_bench_cli_starts_server_and_writes_csv_report_plots(repo_copy, perf_analyzer, tmp_path):
    out = tmp_path / "bench"
    code = main(["bench", "--model-repository", str(repo_copy), "--models", PY_MODEL, "--concurrency", "1:2",
                 "--batch-sizes", "1,2", "--output", str(out), "--latency-budget-ms", "10000", *FAST])
    assert code == 0
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert {(r["batch_size"], r["concurrency"]) for r in rows} == {("1", "1"), ("1", "2"), ("2", "1"), ("2", "2")}
    for r in rows:
        assert float(r["throughput"]) > 0 and float(r["p99_ms"]) >= float(r["p50_ms"]) > 0
        assert float(r["server_compute_infer_us"]) > 0
    assert len(list((out / "raw").glob("*.csv"))) == 4
    for png in ("throughput_vs_p99.png", "throughput_vs_concurrency.png"):
        _png_ok(out / png)
    summary = json.loads((out / "results.json").read_text())
    want = {f"{PY_MODEL} b1", f"{PY_MODEL} b2"}
    assert set(summary["plots"]["throughput_vs_p99"]) == want
    assert set(summary["plots"]["throughput_vs_concurrency"]) == want
    assert all(len(v) == 2 for v in summary["plots"]["throughput_vs_p99"].values())
    report = (out / "report.md").read_text()
    assert f"| {PY_MODEL} | fp32 | python | 1 |" in report and "throughput_vs_p99.png" in report
    commands = (out / "commands.txt").read_text()
    assert "tritonserver" in commands and commands.count("perf_analyzer") >= 4 and "--input-data" in commands


def test_bench_against_running_server_random_data(triton, perf_analyzer, fp32_repo, tmp_path):
    s = loose_perf_settings()
    res = run_bench(BenchConfig(fp32_repo, models=[PY_MODEL], url=triton.grpc_url, concurrency=[1], batch_sizes=[1],
                                output=tmp_path / "b", input_data="random", settings=s))
    assert len(res.points) == 1 and res.complete
    assert "--input-data random" in res.points[0].command


def test_bench_with_system_shared_memory(triton, perf_analyzer, fp32_repo, tmp_path):
    """The real perf_analyzer registers system shared memory with the real server for inputs and outputs."""
    s = loose_perf_settings(shared_memory="system")
    res = run_bench(BenchConfig(fp32_repo, models=[PY_MODEL], url=triton.grpc_url, concurrency=[2], batch_sizes=[2],
                                output=tmp_path / "b", input_data="real", settings=s))
    assert len(res.points) == 1 and res.complete and res.points[0].throughput > 0
    assert "--shared-memory system" in res.points[0].command
    assert "tensors in system shared memory" in res.report.read_text()
    with pytest.raises(UserError, match="--shared-memory system with --url 10.0.0.5:8001"):
        BenchConfig(fp32_repo, models=[PY_MODEL], url="10.0.0.5:8001", output=tmp_path / "c", settings=s)


@pytest.mark.slow
def test_server_dying_mid_bench_is_reported_and_measurements_kept(repo_copy, perf_analyzer, tmp_path):
    from repo_gen.triton.server import TritonServer, free_ports

    server = TritonServer(repo_copy, ports=free_ports(), models=[PY_MODEL], exit_on_error=False)
    server.start(timeout_s=180)
    out = tmp_path / "bench"

    def kill_after_first_point():
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            results = out / "results.csv"
            if results.exists() and len(results.read_text().splitlines()) >= 2:
                os.killpg(server.proc.pid, signal.SIGKILL)
                return
            time.sleep(0.1)

    killer = threading.Thread(target=kill_after_first_point, daemon=True)
    killer.start()
    s = loose_perf_settings(timeout_s=60)
    try:
        with pytest.raises(BuildFailure, match="stopped answering.*kept the 1 point"):
            run_bench(BenchConfig(repo_copy, models=[PY_MODEL], url=server.grpc_url, concurrency=[1, 2, 4],
                                  output=out, input_data="random", settings=s))
    finally:
        killer.join(5)
        server.stop()
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert len(rows) == 1 and float(rows[0]["throughput"]) > 0
    from repo_gen.triton.leftovers import shm_regions

    assert not shm_regions(server.shm_prefix), "the killed server's stubs left shared memory behind"
    report = (out / "report.md").read_text()
    assert "INCOMPLETE" in report and "stopped answering" in report

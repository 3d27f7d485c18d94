"""Unit tests of the perf_analyzer driver: CSV parsing, argv, concurrency specs, settings."""

from pathlib import Path

import pytest

from repo_gen.errors import BuildFailure, UserError
from repo_gen.perf.analyzer import (
    Analyzer,
    PerfSettings,
    format_command,
    parse_concurrency,
    parse_int_list,
    parse_perf_csv,
    perf_argv,
)
from repo_gen.tools import PerfAnalyzer

# Captured from perf_analyzer 2.48 (-f with --verbose-csv) against mobilevit_xxs_py_fp32 on this machine.
CSV = """Concurrency,Inferences/Second,Client Send,Network+Server Send/Recv,Server Queue,Server Compute Input,Server Compute Infer,Server Compute Output,Client Recv,p50 latency,p90 latency,p95 latency,p99 latency,request/response,response wait
1,32.6345,75,1049,251,117,28478,285,3,30563,32679,33468,34216,78,30152
4,40.5,80,1100,50000,120,60000,290,4,99000,120000,125000,131000,85,98000
"""


def test_parse_csv_reads_latency_and_server_breakdown():
    pts = parse_perf_csv(CSV, "m", 2)
    assert [p.concurrency for p in pts] == [1, 4]
    p = pts[0]
    assert p.model == "m" and p.batch_size == 2
    assert p.throughput == pytest.approx(32.6345)
    assert (p.p50_ms, p.p90_ms, p.p95_ms, p.p99_ms) == pytest.approx((30.563, 32.679, 33.468, 34.216))
    assert p.server_queue_us == 251 and p.server_compute_input_us == 117
    assert p.server_compute_infer_us == 28478 and p.server_compute_output_us == 285
    assert p.network_us == 1049 and p.client_send_us == 75 and p.client_recv_us == 3


def test_parse_csv_column_order_does_not_matter_and_missing_columns_are_named():
    cols = CSV.splitlines()[0].split(",")
    row = CSV.splitlines()[1].split(",")
    order = list(reversed(range(len(cols))))
    text = ",".join(cols[i] for i in order) + "\n" + ",".join(row[i] for i in order) + "\n"
    assert parse_perf_csv(text, "m", 1)[0].p99_ms == pytest.approx(34.216)
    with pytest.raises(BuildFailure, match="p99 latency"):
        parse_perf_csv("Concurrency,Inferences/Second,p50 latency,p90 latency\n1,2,3,4\n", "m", 1)
    assert parse_perf_csv("", "m", 1) == []


def test_argv_is_a_list_with_windows_stability_and_csv(tmp_path):
    s = PerfSettings(protocol="http", measurement_interval_ms=1500, stability_percentage=15, max_trials=8)
    argv = perf_argv("/pa", "model_a", "127.0.0.1:8000", s, 4, 8, tmp_path / "x.csv", "/data.json")
    assert argv[0] == "/pa"
    flags = {a: argv[i + 1] for i, a in enumerate(argv[:-1]) if a.startswith("-") and a != "--verbose-csv"}
    assert flags["-m"] == "model_a" and flags["-u"] == "127.0.0.1:8000" and flags["-i"] == "http"
    assert flags["-b"] == "4" and flags["--concurrency-range"] == "8"
    assert flags["--measurement-mode"] == "time_windows" and flags["--measurement-interval"] == "1500"
    assert flags["--stability-percentage"] == "15" and flags["--max-trials"] == "8" and flags["--percentile"] == "99"
    assert flags["--input-data"] == "/data.json" and flags["-f"] == str(tmp_path / "x.csv")
    assert "--verbose-csv" in argv
    count = perf_argv("/pa", "m", "h:1", PerfSettings(measurement_mode="count_windows", request_count=30), 1, 1,
                      tmp_path / "y.csv", stability_percentage=40)
    assert "--measurement-request-count" in count and "30" in count and "--measurement-interval" not in count
    assert count[count.index("--stability-percentage") + 1] == "40"
    line = format_command(["/pa", "-m", "a b"], {"LD_LIBRARY_PATH": "/x y"})
    assert line == "LD_LIBRARY_PATH='/x y' /pa -m 'a b'"


def test_shared_memory_argv_sizes_the_output_region_by_batch(tmp_path):
    plain = perf_argv("/pa", "m", "h:1", PerfSettings(), 1, 1, tmp_path / "x.csv")
    assert "--shared-memory" not in plain and "--output-shared-memory-size" not in plain
    for batch, size in ((1, 102400), (64, 64 * 16 * 1024)):
        argv = perf_argv("/pa", "m", "h:1", PerfSettings(shared_memory="system"), batch, 1, tmp_path / "x.csv")
        assert argv[argv.index("--shared-memory") + 1] == "system"
        assert int(argv[argv.index("--output-shared-memory-size") + 1]) == size >= batch * 1000 * 4


def test_settings_validate_and_relax_only_looser_thresholds():
    with pytest.raises(UserError, match="--protocol"):
        PerfSettings(protocol="tcp")
    with pytest.raises(UserError, match="--shared-memory"):
        PerfSettings(shared_memory="gpu")
    assert PerfSettings(shared_memory="cuda").shared_memory == "cuda"  # CUDA memory on the client's GPU
    with pytest.raises(UserError, match="--max-trials"):
        PerfSettings(max_trials=2)
    assert PerfSettings(stability_percentage=30, relax=(20, 40, 60)).relax == (40.0, 60.0)


@pytest.mark.parametrize(("spec", "want"), [
    ("8", [8]), ("1:32", [1, 2, 4, 8, 16, 32]), ("1:12", [1, 2, 4, 8, 12]), ("2:8:2", [2, 4, 6, 8]),
    ("8,1,4,4", [1, 4, 8]),
])
def test_parse_concurrency(spec, want):
    assert parse_concurrency(spec) == want


@pytest.mark.parametrize("spec", ["0", "4:2", "a", "1:2:3:4", "0:4", ""])
def test_parse_concurrency_rejects_with_flag(spec):
    with pytest.raises(UserError, match="--concurrency"):
        parse_concurrency(spec)


def test_parse_int_list():
    assert parse_int_list("1,8,1", "--batch-sizes") == [1, 8]
    with pytest.raises(UserError, match="--batch-sizes"):
        parse_int_list("0,8", "--batch-sizes")
    with pytest.raises(UserError, match="--batch-sizes"):
        parse_int_list("x", "--batch-sizes")


def test_a_lost_connection_waits_for_a_dying_server_before_calling_it_alive(tmp_path):
    # A SIGKILLed tritonserver resets its connections a moment before the kernel reports the process
    # gone; CI once saw "Connection reset by peer" answered by a still-alive check, and a plain
    # perf_analyzer failure was reported instead of ServerDied.
    answers = iter([True, True, False])
    analyzer = Analyzer("127.0.0.1:1", tmp_path, server_alive=lambda: next(answers),
                        perf=PerfAnalyzer(Path("/nonexistent/perf_analyzer"), {}))
    out = "error: unable to get server metadata: recvmsg:Connection reset by peer"
    assert analyzer._server_gone(out)


def test_a_failure_without_a_lost_connection_asks_the_server_once(tmp_path):
    calls = []
    analyzer = Analyzer("127.0.0.1:1", tmp_path, server_alive=lambda: calls.append(1) or True,
                        perf=PerfAnalyzer(Path("/nonexistent/perf_analyzer"), {}))
    assert not analyzer._server_gone("error: input IMAGE: not an image Pillow can read")
    assert calls == [1]

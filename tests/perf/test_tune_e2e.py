"""`repo-gen tune` on a real tritonserver: a 2x2 grid writes a config that Triton loads."""

import json

import pytest

from repo_gen.cli import main
from repo_gen.perf.tune import candidate_of
from repo_gen.triton.render import parse_config
from tests.conftest import LOOSE_PERF_ARGS, TEST_MODEL

pytestmark = [pytest.mark.server, pytest.mark.slow]
PY_MODEL = f"{TEST_MODEL}_py_fp32"


def test_tune_2x2_writes_a_config_triton_loads(repo_copy, perf_analyzer, tmp_path):
    cfg_path = repo_copy / PY_MODEL / "config.pbtxt"
    # A deliberately bad starting point: every lone request waits 200 ms for a batch that never
    # forms, so any grid point with a delay of 0 or 100 us wins by far and the config must change.
    slow = cfg_path.read_text().replace("max_queue_delay_microseconds: 100", "max_queue_delay_microseconds: 200000")
    assert slow != cfg_path.read_text()
    cfg_path.write_text(slow)
    code = main(["tune", "--model-repository", str(repo_copy), "--model", PY_MODEL, "--instance-counts", "1,2",
                 "--queue-delays-us", "0,100", "--max-batch-sizes", "8", "--preferred-batch-sizes", "none",
                 "--concurrency", "1", "--input-data", "random", "--work-dir", str(tmp_path / "work"),
                 *LOOSE_PERF_ARGS])
    assert code == 0
    assert (repo_copy / PY_MODEL / "config.pbtxt.orig").read_text() == slow
    tuned = parse_config(cfg_path.read_text())
    cand = candidate_of(tuned)
    assert cand.max_queue_delay_us in (0, 100) and cand.instance_count in (1, 2)
    assert cfg_path.read_text().startswith("# Tuned by repo-gen tune")
    record = json.loads((repo_copy / "repo-gen.json").read_text())["models"][PY_MODEL]
    tuning = record["extra"]["tuning"]
    assert tuning["changed"] and tuning["after"]["throughput"] > tuning["before"]["throughput"]
    assert f"{PY_MODEL}/config.pbtxt.orig" in record["files"]
    details = json.loads((tmp_path / "work" / "tune.json").read_text())
    # the start, the other instance count at the start's delay, then the 2x2 grid from the best two
    assert 3 <= len(details["trials"]) <= 6
    decision = details["decision"]  # the leaders were measured again and a named rule decided
    assert decision["rule"] and decision["detail"] and all(len(ld["samples"]) >= 1 for ld in decision["leaders"])
    assert tuning["rule"] == decision["rule"]

    # A fresh server loads the written file (not an override): the model is READY.
    from repo_gen.triton.server import TritonServer, free_ports

    with TritonServer(repo_copy, ports=free_ports(), models=[PY_MODEL], exit_on_error=True) as server:
        index = {m["name"]: m for m in server.repository_index()}
        assert index[PY_MODEL]["state"] == "READY"

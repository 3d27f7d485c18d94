"""Unit tests of tune's pure logic: config <-> candidate, limits, and the early-stopping grid."""

import pytest

from repo_gen.errors import UserError
from repo_gen.perf.tune import (
    Candidate,
    Trial,
    TuneGrid,
    apply_candidate,
    candidate_of,
    config_json,
    config_text,
    coordinate_search,
    dimension_values,
    leaders_of,
    max_batch_limit,
)
from repo_gen.perf.tune_rules import Sample
from repo_gen.triton.render import parse_config

CONFIG = """
name: "m_py_fp32"
backend: "python"
max_batch_size: 16
input { name: "input" data_type: TYPE_FP32 dims: [ 3, 256, 256 ] }
output { name: "logits" data_type: TYPE_FP32 dims: [ 1000 ] }
dynamic_batching { max_queue_delay_microseconds: 100 }
instance_group { count: 1 kind: KIND_CPU }
model_warmup { name: "w16" batch_size: 16 inputs { key: "input" value { data_type: TYPE_FP32 dims: [ 3, 256, 256 ] random_data: true } } }
version_policy { latest { num_versions: 1 } }
parameters { key: "intra_op_threads" value { string_value: "0" } }
"""


def test_candidate_roundtrip_and_clamping():
    cfg = parse_config(CONFIG)
    start = candidate_of(cfg)
    assert start == Candidate(1, 0, 100, 16, ())
    new = apply_candidate(cfg, Candidate(3, 1, 0, 8, (8, 16)))
    assert candidate_of(new) == Candidate(3, 1, 0, 8, (8,))  # preferred above max dropped
    assert new.model_warmup[0].batch_size == 8  # warm-up clamped to the new max
    assert cfg.instance_group[0].count == 1  # the original is untouched
    # both serializations parse back with Triton's schema to the same config
    text = config_text(new, "tuned\nsecond line")
    assert text.startswith("# tuned\n# second line\n")
    assert candidate_of(parse_config(text)) == candidate_of(new)
    from google.protobuf import json_format
    from tritonclient.grpc import model_config_pb2

    again = json_format.Parse(config_json(new), model_config_pb2.ModelConfig())
    assert again == new
    off = apply_candidate(cfg, Candidate(1, None, None, 16))
    assert not off.HasField("dynamic_batching")
    # tune's loads warm up only the batches its measurement forms; the written config keeps its own
    capped = apply_candidate(cfg, Candidate(2, 0, 100, 16), warmup_cap=4)
    assert capped.model_warmup[0].batch_size == 4 and candidate_of(capped).max_batch_size == 16
    assert apply_candidate(cfg, Candidate(2, 0, 100, 16)).model_warmup[0].batch_size == 16


def test_tune_measures_fixed_windows_unless_a_stability_gate_is_asked_for():
    import argparse

    from repo_gen.commands import tune as tune_cmd
    from repo_gen.perf.analyzer import UNGATED_STABILITY
    from repo_gen.perf.tune import TuneConfig

    parser = argparse.ArgumentParser()
    tune_cmd.add_parser(parser.add_subparsers())
    args = parser.parse_args(["tune", "--model", "m"])
    s = tune_cmd.tune_settings(args)
    assert (s.stability_percentage, s.max_trials, s.relax, s.measurement_interval_ms) == (UNGATED_STABILITY, 3, (), 1000)
    assert TuneConfig.__dataclass_fields__["settings"].default_factory().max_trials == 3  # type: ignore[misc]
    gated = tune_cmd.tune_settings(parser.parse_args(["tune", "--model", "m", "--stability-percentage", "10"]))
    assert (gated.stability_percentage, gated.max_trials, gated.relax) == (10.0, 10, (20.0, 40.0))
    with pytest.raises(UserError, match="--max-trials 2"):
        tune_cmd.tune_settings(parser.parse_args(["tune", "--model", "m", "--max-trials", "2"]))


def test_max_batch_limit_respects_manifest_and_plan_profile():
    assert max_batch_limit(None, 16) == 16
    from repo_gen.manifest import ModelEntry

    def entry(**kw):
        return ModelEntry("m_trt_fp16", "m", "trt", "tensorrt", "fp16", [1], [], **kw)

    assert max_batch_limit(entry(max_batch_size=8), 16) == 8
    assert max_batch_limit(entry(max_batch_size=64, extra={"profile": {"max": [32, 3, 256, 256]}}), 64) == 32
    start = Candidate(1, 0, 100, 16)
    with pytest.raises(UserError, match="--max-batch-sizes 32"):
        dimension_values("max_batch_size", TuneGrid(max_batch_sizes=[8, 32]), start, 16, 2)
    assert dimension_values("max_batch_size", TuneGrid(), start, 16, 2) == [1, 8, 16]  # 1: batching off
    assert dimension_values("intra_op_threads", TuneGrid(), start, 16, 2) == []  # tied to instances by default
    assert dimension_values("max_queue_delay_us", TuneGrid(), Candidate(1, None, None, 16), 16, 2) == []
    assert dimension_values("preferred_batch_sizes", TuneGrid(), Candidate(2, 0, 100, 1), 16, 2) == []  # batching off


START = Candidate(1, 0, 100, 16)


def _search(scores, grid, start=START, objective="throughput", p99=lambda c: 100.0):
    """Search with a throughput table `scores(c)` and p99 `p99(c)` standing in for measurements."""
    calls = []

    def measure(c):
        calls.append(c)
        return Sample(scores(c), p99(c))

    best, seen = coordinate_search(start, grid, 16, 2, measure, objective)
    return best, seen, calls


def test_grid_2x2_visits_each_candidate_once_and_picks_the_best():
    grid = TuneGrid(instance_counts=[1, 2], max_queue_delays_us=[0, 100], max_batch_sizes=[16], preferred_batch_sizes=[()],
                    beam=1)
    table = {(1, 100): 10.0, (2, 100): 20.0, (2, 0): 25.0}
    best, seen, calls = _search(lambda c: table[(c.instance_count, c.max_queue_delay_us)], grid)
    # threads 0 is model.py's "cores // instances": already tied, so it stays 0
    assert best == Candidate(2, 0, 0, 16)
    assert len(seen) == 3  # start, 2 instances; then delay 0 (delay 100 is the current best, scored already)
    assert calls[0] == Candidate(1, 0, 100, 16)  # the current config is measured first (the "before")
    # explicit threads are re-tied to the instance count: 2 cores // 2 instances
    best, _, _ = _search(lambda c: table[(c.instance_count, c.max_queue_delay_us)], grid, start=Candidate(1, 2, 100, 16))
    assert best == Candidate(2, 1, 0, 16)


def test_grid_stops_growing_a_dimension_when_gain_below_5_percent():
    grid = TuneGrid(instance_counts=[1, 2, 3, 4], max_queue_delays_us=[100], max_batch_sizes=[16], preferred_batch_sizes=[()])
    scores = {1: 30.0, 2: 31.0, 3: 60.0, 4: 90.0}  # 2 gains 3%: stop, never try 3 or 4
    best, seen, _ = _search(lambda c: scores[c.instance_count], grid)
    assert [c.instance_count for c in seen] == [1, 2]
    assert best.instance_count == 1  # a 3% lead at the same p99 is a tie: the current config stays
    grows = {1: 30.0, 2: 40.0, 3: 41.0, 4: 90.0}
    _, seen, _ = _search(lambda c: grows[c.instance_count], grid)
    assert [c.instance_count for c in seen] == [1, 2, 3]


def test_current_config_wins_when_nothing_beats_it():
    grid = TuneGrid(instance_counts=[1, 2], max_queue_delays_us=[0, 100], max_batch_sizes=[16], preferred_batch_sizes=[()])
    best, _, _ = _search(lambda c: 50.0 if c == Candidate(1, 0, 100, 16) else 40.0, grid)
    assert best == Candidate(1, 0, 100, 16)


def test_explicit_threads_are_their_own_dimension():
    grid = TuneGrid(instance_counts=[1], intra_op_threads=[1, 2], max_queue_delays_us=[100], max_batch_sizes=[16],
                    preferred_batch_sizes=[()])
    best, seen, _ = _search(lambda c: {0: 10.0, 1: 12.0, 2: 20.0}[c.intra_op_threads], grid)
    assert best.intra_op_threads == 2 and {c.intra_op_threads for c in seen} == {0, 1, 2}


def test_grid_validation_names_the_flag():
    with pytest.raises(UserError, match="--instance-counts"):
        TuneGrid(instance_counts=[0, 1])
    with pytest.raises(UserError, match="--queue-delays-us"):
        TuneGrid(max_queue_delays_us=[-1])


def test_search_prefers_lower_p99_when_throughput_is_within_5_percent():
    # Issue 16's case: 2 instances / max batch 1 serve as much as the batching default (1% less,
    # inside one window's noise) at a much lower p99: the search must keep it, not the 1% lead.
    grid = TuneGrid(instance_counts=[1, 2], max_queue_delays_us=[100], max_batch_sizes=[1, 16], preferred_batch_sizes=[()])
    thr = {(1, 16): 110.0, (2, 16): 110.4, (2, 1): 109.0, (1, 1): 80.0}
    p99 = {(1, 16): 146.0, (2, 16): 149.0, (2, 1): 92.0, (1, 1): 120.0}

    def key(c):
        return (c.instance_count, c.max_batch_size)

    best, seen, _ = _search(lambda c: thr[key(c)], grid, p99=lambda c: p99[key(c)])
    assert key(best) == (2, 1)
    assert (2, 1) in [key(c) for c in seen]  # max batch 1 (batching off) is a candidate
    # with the latency objective the same table picks it as well, by p99 alone
    best, _, _ = _search(lambda c: thr[key(c)], grid, objective="latency", p99=lambda c: p99[key(c)])
    assert key(best) == (2, 1)


def test_leaders_are_the_current_config_then_the_best_under_the_objective():
    def trial(n, thr, p99):
        from repo_gen.perf.analyzer import PerfPoint

        c = Candidate(n, 0, 100, 16)
        return Trial(c, thr, PerfPoint("m", 1, 8, thr, p99 / 2, p99, p99, p99), [])

    trials = [trial(1, 100, 150), trial(2, 120, 90), trial(3, 118, 200), trial(4, 50, 40)]
    start = trials[0].candidate
    assert [c.instance_count for c in leaders_of(trials, start, "throughput", 2)] == [1, 2, 3]
    assert [c.instance_count for c in leaders_of(trials, start, "latency", 2)] == [1, 4, 2]
    assert [c.instance_count for c in leaders_of(trials, trials[1].candidate, "throughput", 2, per_class=False)] == [2, 3]
    # per shape: 1 instance (100 infer/s, within 2x of the top) joins; 4 instances (50) does not
    assert [c.instance_count for c in leaders_of(trials, trials[1].candidate, "throughput", 2)] == [2, 3, 1]


def test_leaders_include_the_best_of_each_shape_not_only_twins_of_the_top():
    """The Model Analyzer run that tune lost: its winner (1 instance, batching off) had one unlucky
    search window below twins of the default, so it was never re-measured."""
    from repo_gen.perf.analyzer import PerfPoint

    def trial(n, mb, delay, thr):
        c = Candidate(n, 0, delay, mb)
        return Trial(c, thr, PerfPoint("m", 1, 8, thr, 100, 200, 200, 200), [])

    start = trial(2, 64, 100, 18.0)
    trials = [start, trial(2, 64, 0, 18.8), trial(2, 64, 500, 17.5), trial(1, 1, 100, 12.8), trial(1, 64, 100, 11.0),
              trial(4, 64, 100, 5.0)]
    leaders = leaders_of(trials, start.candidate, "throughput", 2)
    assert leaders[:2] == [start.candidate, trials[1].candidate]  # the current config + the top 2 (it is one)
    assert trials[2].candidate not in leaders  # a third twin of the same shape adds nothing
    assert trials[3].candidate in leaders  # 1 instance, batching off: a shape of its own, within 2x
    assert trials[4].candidate in leaders  # 1 instance, batching on
    assert trials[5].candidate not in leaders  # 4 instances at 5 infer/s: more than 2x below the top

"""tune's decision rules on measured-looking numbers: objectives, budget, run-to-run spread, ties."""

import pytest

from repo_gen.perf.tune_rules import Sample, better, contenders, decide, pick_point, relative_spread


def runs(thr, p99):
    """Repeated measurements of one config: paired throughputs and p99s."""
    return [Sample(t, p, p / 2, 8) for t, p in zip(thr, p99, strict=True)]


# Issue 16, mobilevit_xxs python backend, concurrency 8: the batching default against Model
# Analyzer's pick (2 instances, max batch 1), three alternating rounds each.
DEFAULT = runs([108.9, 111.0, 106.5], [145.9, 150.2, 141.0])
TWO_INST_MB1 = runs([109.0, 107.2, 110.8], [92.3, 95.0, 90.1])


def test_relative_spread_is_range_over_median():
    assert relative_spread([98.0, 100.0, 102.0]) == pytest.approx(0.04)
    assert relative_spread([100.0]) == 0.0


def test_throughput_tie_within_spread_goes_to_lower_p99():
    d = decide("throughput", {"default": DEFAULT, "2x mb1": TWO_INST_MB1}, "default")
    assert d.winner == "2x mb1"
    assert d.rule == "lower-p99-within-throughput-spread"
    assert d.spread_throughput == pytest.approx((111.0 - 106.5) / 108.9)  # reported; ties are overlapping runs
    assert "p99 92.3 vs 145.9 ms (-36.7%)" in d.detail
    assert set(d.tied) == {"default", "2x mb1"}


def test_throughput_lead_beyond_spread_wins_even_at_higher_p99():
    faster = runs([130.0, 131.0, 129.0], [160.0, 158.0, 162.0])
    d = decide("throughput", {"default": DEFAULT, "faster": faster, "2x mb1": TWO_INST_MB1}, "default")
    assert d.winner == "faster" and d.rule == "highest-throughput"
    assert "+19.3%" in d.detail  # 130 vs the runner-up's 109.0 median


def test_difference_inside_the_spread_keeps_the_current_config():
    twin = runs([109.5, 110.5, 107.0], [143.0, 148.0, 146.0])  # p99 median 146.0 vs 145.9: noise
    d = decide("throughput", {"default": DEFAULT, "twin": twin}, "default")
    assert d.winner == "default" and d.rule == "no-measurable-difference"


def test_latency_budget_is_a_constraint():
    fast_slow = runs([150.0, 151.0, 149.0], [130.0, 131.0, 129.0])
    d = decide("throughput", {"default": DEFAULT, "fast": fast_slow, "2x mb1": TWO_INST_MB1}, "default", budget_ms=120)
    assert d.winner == "2x mb1" and d.rule == "highest-throughput"  # the others break the 120 ms budget
    d = decide("throughput", {"default": DEFAULT, "fast": fast_slow}, "default", budget_ms=100)
    assert d.winner == "default" and d.rule == "none-within-budget"


def test_latency_objective_ties_go_to_throughput():
    a = runs([100.0, 101.0, 99.0], [50.0, 52.0, 48.0])  # p99 spread 8%
    b = runs([120.0, 121.0, 119.0], [51.0, 52.0, 50.0])  # 2% higher p99: a tie; 20% more throughput
    c = runs([200.0, 201.0, 199.0], [80.0, 81.0, 79.0])
    d = decide("latency", {"a": a, "b": b, "c": c}, "c")
    assert d.winner == "b" and d.rule == "higher-throughput-within-p99-spread"
    d = decide("latency", {"a": a, "c": c}, "c")
    assert d.winner == "a" and d.rule == "lowest-p99"


def test_balanced_weighs_throughput_against_p99():
    a = runs([100.0, 101.0, 99.0], [100.0, 101.0, 99.0])  # 1.0 infer/s per ms
    b = runs([90.0, 91.0, 89.0], [60.0, 61.0, 59.0])  # 10% less throughput, 40% lower p99: 1.5
    d = decide("balanced", {"a": a, "b": b}, "a")
    assert d.winner == "b" and d.rule == "best-balance"
    assert decide("throughput", {"a": a, "b": b}, "a").winner == "a"


def test_search_comparisons_and_operating_point():
    assert better("throughput", Sample(104.0, 90.0), Sample(100.0, 140.0))  # within 5%: lower p99
    assert not better("throughput", Sample(104.0, 150.0), Sample(100.0, 140.0))
    assert better("throughput", Sample(106.0, 150.0), Sample(100.0, 140.0))  # beyond 5%: throughput
    sweep = [Sample(80.0, 20.0, concurrency=1), Sample(100.0, 60.0, concurrency=4), Sample(104.0, 150.0, concurrency=8)]
    assert pick_point("throughput", sweep, None).concurrency == 4  # 104 vs 100 is a tie; p99 60 < 150
    assert pick_point("throughput", sweep, 50.0).concurrency == 1
    assert pick_point("throughput", sweep, 10.0) is None
    assert pick_point("latency", sweep, None).concurrency == 1


def test_current_config_must_be_measured():
    with pytest.raises(ValueError):
        decide("throughput", {"a": DEFAULT}, "b")


def test_a_noisy_leader_does_not_make_a_5x_lead_a_tie():
    # Seen under load: one leader's runs spread over 118% of its median; its worst run is still
    # twice the current config's best, so it wins on throughput and is no tie.
    current = runs([2.7, 3.0, 3.5], [543.0, 416.0, 316.0])
    noisy = runs([7.9, 14.9, 25.5], [300.0, 184.0, 93.0])
    d = decide("throughput", {"current": current, "noisy": noisy}, "current")
    assert d.spread_throughput > 1.0
    assert d.winner == "noisy" and d.rule == "highest-throughput"


def test_contenders_drop_only_leaders_beaten_beyond_overlap():
    # After two measurements each: "slow" is beaten by the default beyond overlap on throughput, so
    # a third run cannot make it win; the tied leaders and the current config stay.
    slow = runs([70.0, 72.0], [200.0, 190.0])
    two = {"default": DEFAULT[:2], "2x mb1": TWO_INST_MB1[:2], "slow": slow}
    assert contenders("throughput", two, "default") == ["default", "2x mb1"]
    # the current config stays even when it is the one beaten
    assert contenders("throughput", {"slow": slow, "default": DEFAULT[:2]}, "slow") == ["slow", "default"]
    # latency objective: "slow" has the higher p99 ranges than both, dropped as well
    assert contenders("latency", two, "default") == ["default", "2x mb1"]
    # a leader whose p99 runs straddle the budget may come within it on one more run: kept
    straddle = runs([70.0, 71.0], [95.0, 130.0])
    budget = {"default": DEFAULT[:2], "2x mb1": TWO_INST_MB1[:2], "straddle": straddle}
    assert "straddle" in contenders("throughput", budget, "default", budget_ms=100.0)
    assert "straddle" not in contenders("throughput", budget, "default")

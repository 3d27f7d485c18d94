"""How `repo-gen tune` judges measurements: objectives, the latency budget, run-to-run spread.

Pure functions of measured numbers (no server, no perf_analyzer), so every rule is unit-tested.

Objectives (Model Analyzer names them perf_throughput / perf_latency_p99 / a weighted mix):
  throughput  the highest throughput; candidates whose repeated throughputs overlap the best's
              are a tie, and the tie goes to the lowest p99.
  latency     the lowest p99; candidates whose repeated p99 overlap the best's are a tie, and the
              tie goes to the highest throughput.
  balanced    the highest throughput per millisecond of p99 (equal weight on both: a config with
              10% less throughput wins when its p99 is more than 10% lower); ties (overlapping
              repeated measurements) go to the lowest p99.
The latency budget is a constraint for every objective: a point whose p99 exceeds it does not count.

A tie: the leaders' repeated measurements of the objective's figure overlap (one's range reaches
the other's); the tie-breaker counts only when its ranges do not overlap. The spread (range over
median, the largest among leaders) is reported with every decision.

Why ties matter: one perf_analyzer window on a shared machine moves by several percent, so a
"winner" picked on a 1% throughput lead is a coin toss, while a 37% lower p99 at the same
throughput is real (issue 16: Model Analyzer's 2-instance, max-batch-1 pick had the same
throughput as our batching default and a p99 of 92 ms instead of 146 ms). `decide` therefore
works on several alternating re-measurements of the leaders and measures the spread itself.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

OBJECTIVES = ("throughput", "latency", "balanced")
# While searching, each candidate has one measurement: a lead smaller than this is a tie (it is
# Model Analyzer's "gain < 5% is no gain" threshold, applied to comparisons as well as growth).
SEARCH_TIE = 0.05


@dataclass(frozen=True)
class Sample:
    """One measurement of one config at one load."""

    throughput: float  # infer/s
    p99_ms: float
    p50_ms: float = 0.0
    concurrency: int = 0


def within_budget(s: Sample, budget_ms: float | None) -> bool:
    return budget_ms is None or s.p99_ms <= budget_ms


def primary(objective: str, s: Sample) -> float:
    """The objective's own figure, larger is better."""
    if objective == "throughput":
        return s.throughput
    if objective == "latency":
        return 1000.0 / s.p99_ms if s.p99_ms > 0 else float("inf")
    if objective == "balanced":
        return s.throughput / s.p99_ms if s.p99_ms > 0 else float("inf")
    raise ValueError(f"objective {objective!r}")


def gain(objective: str, new: Sample, old: Sample) -> float:
    """Relative improvement of `new` over `old` on the objective's figure (0.05 = 5% better)."""
    o = primary(objective, old)
    return primary(objective, new) / o - 1.0 if o > 0 else float("inf")


def better(objective: str, a: Sample, b: Sample, tie: float = SEARCH_TIE) -> bool:
    """Does `a` beat `b`? A lead within `tie` (relative) on the objective's figure is a tie,
    settled by the tie-breaker (latency objective: throughput; the others: p99)."""
    pa, pb = primary(objective, a), primary(objective, b)
    if pa > pb * (1 + tie):
        return True
    if pb > pa * (1 + tie):
        return False
    if objective == "latency":
        return a.throughput > b.throughput
    return a.p99_ms < b.p99_ms


def pick_point(objective: str, points: Sequence[Sample], budget_ms: float | None) -> Sample | None:
    """A candidate's operating point among its concurrency sweep: the best under the objective
    among points within the budget (ties within SEARCH_TIE broken as in `better`); None: none fits."""
    best: Sample | None = None
    for p in points:
        if within_budget(p, budget_ms) and (best is None or better(objective, p, best)):
            best = p
    return best


def relative_spread(values: Sequence[float]) -> float:
    """(max - min) / median of repeated measurements of one config: its run-to-run spread."""
    if len(values) < 2:
        return 0.0
    med = statistics.median(values)
    return (max(values) - min(values)) / med if med > 0 else 0.0


@dataclass
class Leader:
    """Repeated measurements of one candidate, with their medians."""

    key: Any
    samples: list[Sample]
    throughput: float = 0.0
    p99_ms: float = 0.0
    p50_ms: float = 0.0

    def __post_init__(self) -> None:
        if not self.samples:
            raise ValueError("a leader needs at least one sample")
        self.throughput = statistics.median(s.throughput for s in self.samples)
        self.p99_ms = statistics.median(s.p99_ms for s in self.samples)
        self.p50_ms = statistics.median(s.p50_ms for s in self.samples)

    @property
    def median(self) -> Sample:
        return Sample(self.throughput, self.p99_ms, self.p50_ms, self.samples[0].concurrency)

    def span(self, metric: str) -> tuple[float, float]:
        """(min, max) over the samples of `metric`: throughput, p99_ms or balanced (throughput / p99)."""
        values = [primary("balanced", x) if metric == "balanced" else getattr(x, metric) for x in self.samples]
        return min(values), max(values)


@dataclass
class Decision:
    """Which leader won, by which rule, and by how much.

    Attributes:
        rule: a short name: highest-throughput, lower-p99-within-throughput-spread, lowest-p99,
            higher-throughput-within-p99-spread, best-balance, no-measurable-difference,
            none-within-budget.
        detail: one sentence with the numbers that decided.
        spread_throughput / spread_p99: the run-to-run spread used (the largest among leaders).
        tied: keys of the leaders that were a tie on the objective's own figure.
    """

    winner: Any
    rule: str
    detail: str
    spread_throughput: float
    spread_p99: float
    leaders: list[Leader] = field(default_factory=list)
    tied: list[Any] = field(default_factory=list)


def _pct(x: float) -> str:
    return f"{x * 100:.1f}%"


def decide(objective: str, measurements: Mapping[Any, Sequence[Sample]], current: Any,
           budget_ms: float | None = None, names: Mapping[Any, str] | None = None) -> Decision:
    """Choose among leaders measured several times each (alternating rounds).

    Args:
        measurements: candidate key -> its samples (at least one each; two or more to see a spread).
        current: the key of the config in use now; it wins unless another leader is measurably
            better (a difference inside the noise is not a reason to change a config).
        names: key -> description for the detail sentence; None: str(key).
    """
    if objective not in OBJECTIVES:
        raise ValueError(f"objective {objective!r}")
    if current not in measurements:
        raise ValueError("the current config must be among the leaders")
    def name(k: Any) -> str:
        return (names or {}).get(k, str(k))

    leaders = [Leader(k, list(v)) for k, v in measurements.items()]
    spread_t = max(relative_spread([s.throughput for s in ld.samples]) for ld in leaders)
    spread_p = max(relative_spread([s.p99_ms for s in ld.samples]) for ld in leaders)
    by_key = {ld.key: ld for ld in leaders}
    cur = by_key[current]

    feasible = [ld for ld in leaders if within_budget(ld.median, budget_ms)]
    if not feasible:
        best_p = min(leaders, key=lambda ld: ld.p99_ms)
        return Decision(current, "none-within-budget",
                        f"no leader's median p99 is within the {budget_ms:g} ms budget (lowest: {best_p.p99_ms:.1f} ms, "
                        f"{name(best_p.key)}); kept the current config", spread_t, spread_p, leaders, [])

    # A tie: the leaders' repeated measurements of the objective's figure overlap (the best one's
    # worst run is no better than the other's best run). Ranges, not a relative spread: one noisy
    # leader must not make a 5x difference a tie.
    if objective == "latency":
        best = min(feasible, key=lambda ld: ld.p99_ms)
        tied = [ld for ld in feasible if ld.span("p99_ms")[0] <= best.span("p99_ms")[1]]
        win = max(tied, key=lambda ld: ld.throughput)
        spread_obj = spread_p
    else:
        if objective == "throughput":
            best = max(feasible, key=lambda ld: ld.throughput)
            tied = [ld for ld in feasible if ld.span("throughput")[1] >= best.span("throughput")[0]]
            spread_obj = spread_t
        else:  # balanced: throughput / p99; its spread compounds both
            best = max(feasible, key=lambda ld: primary("balanced", ld.median))
            spread_obj = (1 + spread_t) * (1 + spread_p) - 1
            tied = [ld for ld in feasible if ld.span("balanced")[1] >= best.span("balanced")[0]]
        win = min(tied, key=lambda ld: ld.p99_ms)
    tied_keys = [ld.key for ld in tied]

    def measurable(a: Leader, b: Leader) -> bool:
        """Is `a`'s edge over `b` on the tie-breaker beyond the noise (their ranges do not overlap)?"""
        if objective == "latency":
            return a.span("throughput")[0] > b.span("throughput")[1]
        return a.span("p99_ms")[1] < b.span("p99_ms")[0]

    def both(a: Leader, b: Leader) -> str:
        return (f"throughput {a.throughput:.1f} vs {b.throughput:.1f} infer/s, p99 {a.p99_ms:.1f} vs {b.p99_ms:.1f} ms, "
                f"repeated measurements overlapping on both "
                f"(spread {_pct(spread_t)} throughput, {_pct(spread_p)} p99)")

    # A change needs a measurable reason: the current config stays when the winner's edge over it
    # is inside the spread on both figures.
    if win is not cur and cur in tied and not measurable(win, cur):
        return Decision(current, "no-measurable-difference", f"{name(win.key)} vs the current config: {both(win, cur)}; "
                        "kept the current config", spread_t, spread_p, leaders, tied_keys)

    if len(tied) == 1:
        others = [ld for ld in feasible if ld is not win]
        runner = max(others, key=lambda ld: primary(objective, ld.median)) if others else None
        if runner is None:
            rule = {"throughput": "highest-throughput", "latency": "lowest-p99", "balanced": "best-balance"}[objective]
            return Decision(win.key, rule, f"throughput {win.throughput:.1f} infer/s, p99 {win.p99_ms:.1f} ms (the only "
                            "leader within budget)", spread_t, spread_p, leaders, tied_keys)
        if objective == "throughput":
            rule, detail = "highest-throughput", (
                f"throughput {win.throughput:.1f} vs {runner.throughput:.1f} infer/s ({name(runner.key)}, "
                f"{(win.throughput / runner.throughput - 1) * 100:+.1f}%), no overlap in repeated measurements (spread {_pct(spread_t)})")
        elif objective == "latency":
            rule, detail = "lowest-p99", (
                f"p99 {win.p99_ms:.1f} vs {runner.p99_ms:.1f} ms ({name(runner.key)}, "
                f"{(win.p99_ms / runner.p99_ms - 1) * 100:+.1f}%), no overlap in repeated measurements (spread {_pct(spread_p)})")
        else:
            rule, detail = "best-balance", (
                f"throughput/p99 {primary('balanced', win.median):.2f} vs {primary('balanced', runner.median):.2f} "
                f"({name(runner.key)}, {gain('balanced', win.median, runner.median) * 100:+.1f}%), no overlap in "
                f"repeated measurements (spread {_pct(spread_obj)})")
        return Decision(win.key, rule, detail, spread_t, spread_p, leaders, tied_keys)

    # Several leaders tie on the objective's figure: the tie-breaker decided.
    rival = max((ld for ld in tied if ld is not win), key=lambda ld: primary(objective, ld.median))
    if win is cur and not measurable(win, rival):
        return Decision(current, "no-measurable-difference", f"{name(rival.key)} vs the current config: "
                        f"{both(rival, cur)}; kept the current config", spread_t, spread_p, leaders, tied_keys)
    if objective == "latency":
        rule = "higher-throughput-within-p99-spread"
        detail = (f"p99 {win.p99_ms:.1f} vs {rival.p99_ms:.1f} ms ({name(rival.key)}) overlap in repeated measurements "
                  f"(spread {_pct(spread_p)}); throughput {win.throughput:.1f} vs {rival.throughput:.1f} infer/s "
                  f"({(win.throughput / rival.throughput - 1) * 100:+.1f}%)")
    else:
        rule = "lower-p99-within-throughput-spread" if objective == "throughput" else "best-balance"
        fig = (f"throughput {win.throughput:.1f} vs {rival.throughput:.1f} infer/s ({name(rival.key)}) overlap in "
               f"repeated measurements (spread {_pct(spread_obj)})" if objective == "throughput" else
               f"throughput/p99 {primary('balanced', win.median):.2f} vs {primary('balanced', rival.median):.2f} "
               f"({name(rival.key)}) overlap in repeated measurements (spread {_pct(spread_obj)})")
        detail = f"{fig}; p99 {win.p99_ms:.1f} vs {rival.p99_ms:.1f} ms ({(win.p99_ms / rival.p99_ms - 1) * 100:+.1f}%)"
    return Decision(win.key, rule, detail, spread_t, spread_p, leaders, tied_keys)


def contenders(objective: str, measurements: Mapping[Any, Sequence[Sample]], current: Any,
               budget_ms: float | None = None) -> list[Any]:
    """The leaders that can still win when measured again: the current config, `decide`'s winner and
    every leader tied with the best on the objective's figure (repeated measurements overlapping), plus
    any leader whose p99 range straddles the budget (one more run may bring it within). The others are
    beaten beyond the overlap of their repeated measurements; measuring them again costs search time
    and cannot change the pick unless the machine changes under us. Keys in `measurements` order."""
    d = decide(objective, measurements, current, budget_ms)
    keep = {current, d.winner, *d.tied}
    if budget_ms is not None:
        keep |= {ld.key for ld in d.leaders if ld.span("p99_ms")[0] <= budget_ms < ld.span("p99_ms")[1]}
    return [k for k in measurements if k in keep]

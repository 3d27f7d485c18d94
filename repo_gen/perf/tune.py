"""`repo-gen tune`: find the model config that serves best under an objective and a p99 budget.

Search space (each a dimension; `TuneGrid`):
  instance_count        1..4 by default
  intra_op_threads      ONNX Runtime threads per instance (python-backend models that read the
                        `intra_op_threads` parameter); by default tied to the instance count as
                        max(1, cores // instances), so instances x threads never oversubscribes
  max_queue_delay_us    0, 100, 500, 2000 (dynamic batcher)
  max_batch_size        1 (batching off: every request runs alone, as Model Analyzer also tries),
                        half the config's own and the config's own; never above the manifest's
                        max_batch_size, which for a TensorRT plan is the profile max (the backend
                        refuses a larger one)
  preferred_batch_size  none (largest batch the delay allows) or [max_batch_size]
Model Analyzer's quick search covers instance count and max batch size only; threads, queue delay
and preferred sizes are ours.

Objectives and rules (`repo_gen.perf.tune_rules`): throughput, latency or balanced, with
`--latency-budget-ms` as a p99 constraint for all three; a lead whose repeated runs overlap the
other's is a tie, settled by p99 (latency objective: by throughput).

Search: Model Analyzer's brute force with early stop, one dimension at a time in the order
above. Starting from the current config (measured first), each dimension's values are tried in
ascending order from each of the `beam` (default 2) best candidates so far; growing stops at the
first value that improves the objective's figure by less than 5% over the best so far. Each candidate is
measured over a concurrency sweep, and its operating point is the best point under the objective
among points with p99 <= budget; the sweep also stops when throughput gains < 5% or p99 leaves the
budget. During the search a lead below 5% is a tie (one measurement cannot tell more apart).

Measurements: each is three 1 s perf_analyzer windows with no stability gate. Why: the gate (the last
three windows within 10%, retried at 20% and 40%) cost 10-30 windows per point on this 2-core machine,
and the search time was 3x Model Analyzer's (benchmarks/RESULTS.md); what tells a real difference from
noise here is the repeated, alternating measurement of the leaders below, not the agreement of three
consecutive windows of one run. `--stability-percentage` brings the gate back.

Decision: one measurement is not trusted. The leaders (the current config, the best `leaders`
candidates, and the best of every other shape -- instance count x batching on/off -- within 2x of
the top, so that one unlucky window cannot drop a whole shape) are measured up to `rounds` times in
all, the search's measurement being the first, the others in alternating rounds (order reversed every
other round, so a drift of the machine does not favour one), each at its operating concurrency; after
each round a leader whose repeated figures are beaten beyond overlap is not measured again
(`tune_rules.contenders`). The spread of each config's repeated throughput and p99 is the run-to-run
spread, and `tune_rules.decide` picks on the medians, counting a lead only where the repeated runs do
not overlap. The current config is kept unless another is measurably better. The report and
tune.json say which rule decided and by how much.

Cost of a candidate: its load (warm-ups capped at the largest batch the measurement forms, i.e. the
largest concurrency with batch-1 clients) and one measurement; a candidate measured again right after
itself is not reloaded, and the server, which starts with the current config, is not reloaded for it.

Live server, repository API: candidates are loaded with Triton's model load API and a config
override (`POST /v2/repository/models/<name>/load` with `{"parameters": {"config": <JSON>}}`),
on a tritonserver that tune starts on free loopback ports in explicit model-control mode. We
chose this over restarting the server per candidate because:
  - a reload replaces one model in a few seconds; a restart pays the server start and every
    python-backend stub again;
  - nothing on disk changes while searching: an interrupted tune leaves config.pbtxt as it was;
  - Triton itself validates each candidate as it loads it (a bad combination fails its load,
    is reported and skipped, instead of failing a server start).
We do not tune on a server someone else runs: overriding its config would disturb its traffic.
At the end the winner is rendered by the build's own templates (`repo_gen.triton.config_spec`),
written to config.pbtxt atomically (previous file kept as config.pbtxt.orig) and loaded from the
file, without override, to prove Triton accepts it; if it does not, the previous file is restored.

Output (raw perf_analyzer files, server log, tune.json): `--output DIR`, else
`$XDG_CACHE_HOME/repo-gen/tune/<model>-<time>/` (`~/.cache/...`): never the working directory.
"""

from __future__ import annotations

import copy
import datetime as _dt
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from repo_gen.errors import BuildFailure, UserError
from repo_gen.fileio import write_atomic, write_json_atomic
from repo_gen.log import console, logger
from repo_gen.manifest import MANIFEST_NAME, ModelEntry, load_manifest
from repo_gen.perf.analyzer import (
    UNGATED_STABILITY,
    Analyzer,
    PerfPoint,
    PerfSettings,
    ServerDied,
    UnstableMeasurement,
)
from repo_gen.perf.tune_rules import (
    OBJECTIVES,
    Decision,
    Sample,
    better,
    contenders,
    decide,
    gain,
    pick_point,
    primary,
)

MIN_GAIN = 0.05  # Model Analyzer's rule: stop growing a dimension when the objective gains < 5%
DIMENSIONS = ("instance_count", "intra_op_threads", "max_queue_delay_us", "max_batch_size", "preferred_batch_sizes")


@dataclass(frozen=True)
class Candidate:
    """The tuned fields of one config. `intra_op_threads` None: the model has no such parameter."""

    instance_count: int
    intra_op_threads: int | None
    max_queue_delay_us: int | None  # None: dynamic batching off
    max_batch_size: int
    preferred_batch_sizes: tuple[int, ...] = ()

    def describe(self) -> str:
        t = f", {self.intra_op_threads} thr" if self.intra_op_threads is not None else ""
        d = "off" if self.max_queue_delay_us is None else f"{self.max_queue_delay_us} us"
        pref = f", preferred {list(self.preferred_batch_sizes)}" if self.preferred_batch_sizes else ""
        return f"{self.instance_count} inst{t}, delay {d}, max batch {self.max_batch_size}{pref}"


@dataclass
class TuneGrid:
    """Values tried per dimension. None: the default described in the module docstring.

    Attributes:
        intra_op_threads: explicit thread counts to try as their own dimension; None ties
            threads to instances (cores // instances) and does not search them separately.
        max_batch_sizes: None resolves to 1 (batching off), max/2 and the config's max, capped
            by the manifest's max_batch_size.
        preferred_batch_sizes: None resolves to [(), (max_batch_size,)].
        concurrency: client concurrency levels of each candidate's sweep.
        beam: how many of the best candidates so far each dimension is searched from (1: plain
            coordinate search).
    """

    instance_counts: list[int] = field(default_factory=lambda: [1, 2, 3, 4])
    intra_op_threads: list[int] | None = None
    max_queue_delays_us: list[int] = field(default_factory=lambda: [0, 100, 500, 2000])
    max_batch_sizes: list[int] | None = None
    preferred_batch_sizes: list[tuple[int, ...]] | None = None
    concurrency: list[int] = field(default_factory=lambda: [1, 2, 4, 8, 16])
    beam: int = 2

    def __post_init__(self) -> None:
        for flag, values in (("--instance-counts", self.instance_counts), ("--queue-delays-us", self.max_queue_delays_us),
                             ("--concurrency", self.concurrency)):
            if not values:
                raise UserError(f"{flag}: give at least one value")
        if min(self.instance_counts) < 1 or max(self.instance_counts) > 64:
            raise UserError(f"--instance-counts {self.instance_counts}: values must be from 1 to 64")
        if self.beam < 1:
            raise UserError(f"--beam {self.beam}: must be >= 1")
        if min(self.max_queue_delays_us) < 0:
            raise UserError(f"--queue-delays-us {self.max_queue_delays_us}: values must be >= 0")
        if self.intra_op_threads is not None and (not self.intra_op_threads or min(self.intra_op_threads) < 1):
            raise UserError(f"--threads {self.intra_op_threads}: values must be >= 1")
        if self.max_batch_sizes is not None and (not self.max_batch_sizes or min(self.max_batch_sizes) < 1):
            raise UserError(f"--max-batch-sizes {self.max_batch_sizes}: values must be >= 1")
        self.instance_counts = sorted(set(self.instance_counts))
        self.max_queue_delays_us = sorted(set(self.max_queue_delays_us))
        self.concurrency = sorted(set(self.concurrency))


def sample_of(p: PerfPoint) -> Sample:
    return Sample(p.throughput, p.p99_ms, p.p50_ms, p.concurrency)


@dataclass
class Trial:
    candidate: Candidate
    score: float  # throughput at the operating point (0 when no point is within budget)
    best: PerfPoint | None  # the operating point under the objective
    points: list[PerfPoint]
    error: str = ""

    @property
    def sample(self) -> Sample | None:
        return sample_of(self.best) if self.best else None

    def row(self) -> dict:
        return {"candidate": asdict(self.candidate), "describe": self.candidate.describe(), "score": self.score,
                "best": self.best.to_row() if self.best else None, "error": self.error,
                "points": [p.to_row() for p in self.points]}


@dataclass
class TuneResult:
    model: str
    before: Trial
    after: Trial
    trials: list[Trial]
    config_path: Path
    changed: bool
    work_dir: Path
    wall_s: float = 0.0
    objective: str = "throughput"
    decision: Decision | None = None  # None: no re-measurement (--rounds 0)

    @property
    def gain(self) -> float:
        """Throughput after / before - 1, on the figures the decision used."""
        b, a = self.measured("before"), self.measured("after")
        if a is None or b is None:
            return 0.0
        return a.throughput / b.throughput - 1.0 if b.throughput > 0 else float("inf")

    def measured(self, which: str) -> Sample | None:
        """`before` / `after` as the decision saw them: re-measured medians when there are some."""
        trial = self.before if which == "before" else self.after
        if self.decision is not None:
            for ld in self.decision.leaders:
                if ld.key == trial.candidate:
                    return ld.median
        return trial.sample


# -- config <-> candidate ------------------------------------------------------------------

def candidate_of(cfg: Any) -> Candidate:
    """The tuned fields of a parsed ModelConfig."""
    count = cfg.instance_group[0].count if cfg.instance_group else 1
    threads = int(cfg.parameters["intra_op_threads"].string_value or 0) if "intra_op_threads" in cfg.parameters else None
    has_db = cfg.HasField("dynamic_batching")
    return Candidate(
        instance_count=max(1, int(count)),
        intra_op_threads=threads,
        max_queue_delay_us=int(cfg.dynamic_batching.max_queue_delay_microseconds) if has_db else None,
        max_batch_size=int(cfg.max_batch_size),
        preferred_batch_sizes=tuple(int(b) for b in cfg.dynamic_batching.preferred_batch_size) if has_db else (),
    )


def apply_candidate(cfg: Any, cand: Candidate, warmup_cap: int | None = None) -> Any:
    """A copy of `cfg` with `cand`'s fields; warm-ups and preferred sizes above the new
    max_batch_size are clamped so Triton accepts the config.

    `warmup_cap`: warm-ups are also clamped to this batch size. tune loads its candidates so: batch-1
    clients at concurrency C never form a batch above C, and warming a CPU model at max batch 64
    made a candidate's load 6-11 s instead of 3 (2 cores, mobilevit_xxs, 2-3 instances).
    """
    out = copy.deepcopy(cfg)
    if not out.instance_group:
        out.instance_group.add()
    for g in out.instance_group:
        g.count = cand.instance_count
    if cand.intra_op_threads is not None:
        out.parameters["intra_op_threads"].string_value = str(cand.intra_op_threads)
    out.max_batch_size = cand.max_batch_size
    if cand.max_queue_delay_us is None:
        out.ClearField("dynamic_batching")
    else:
        out.dynamic_batching.max_queue_delay_microseconds = cand.max_queue_delay_us
        del out.dynamic_batching.preferred_batch_size[:]
        out.dynamic_batching.preferred_batch_size.extend(b for b in cand.preferred_batch_sizes if b <= cand.max_batch_size)
    for w in out.model_warmup:
        if cand.max_batch_size > 0 and w.batch_size > cand.max_batch_size:
            w.batch_size = cand.max_batch_size
        if warmup_cap is not None and w.batch_size > warmup_cap:
            w.batch_size = max(1, warmup_cap)
    return out


def config_json(cfg: Any) -> str:
    from google.protobuf import json_format

    return json_format.MessageToJson(cfg, preserving_proto_field_name=True, indent=None)


def config_text(cfg: Any, header: str, comment_model_file: str | None = None) -> str:
    """config.pbtxt text through the build's templates (one writer for every config repo-gen writes)."""
    from repo_gen.triton.config_spec import render_model_config

    return render_model_config(cfg, header, comment_model_file)


def max_batch_limit(entry: ModelEntry | None, cfg_max: int) -> int:
    """The largest max_batch_size tune may set: the manifest's (a TensorRT plan's profile max),
    else the config's own."""
    limits = [cfg_max]
    if entry is not None:
        if entry.max_batch_size > 0:
            limits.append(entry.max_batch_size)
        prof = entry.extra.get("profile") or {}
        if isinstance(prof, dict) and isinstance(prof.get("max"), list) and prof["max"]:
            limits.append(int(prof["max"][0]))
    return max(1, min(limits))


def dimension_values(dim: str, grid: TuneGrid, start: Candidate, limit: int, cores: int) -> list[Any]:
    """Values of `dim` to try, ascending (the order growing means)."""
    if dim == "instance_count":
        return list(grid.instance_counts)
    if dim == "intra_op_threads":
        if start.intra_op_threads is None or grid.intra_op_threads is None:
            return []
        return sorted(set(grid.intra_op_threads))
    if dim == "max_queue_delay_us":
        return [] if start.max_queue_delay_us is None or start.max_batch_size == 0 else list(grid.max_queue_delays_us)
    if dim == "max_batch_size":
        if start.max_batch_size == 0:
            return []
        values = grid.max_batch_sizes if grid.max_batch_sizes is not None else [1, max(1, limit // 2), limit]
        bad = [v for v in values if v > limit]
        if bad:
            raise UserError(f"--max-batch-sizes {','.join(map(str, bad))}: above what this model supports ({limit}, "
                            "the manifest's max_batch_size / TensorRT profile max); rebuild with a larger --max-batch")
        return sorted(set(values))
    if dim == "preferred_batch_sizes":
        if start.max_queue_delay_us is None or start.max_batch_size <= 1:  # at max batch 1 every batch is 1
            return []
        if grid.preferred_batch_sizes is not None:
            return list(dict.fromkeys(tuple(p) for p in grid.preferred_batch_sizes))
        return [(), (start.max_batch_size,)]
    raise ValueError(dim)


def with_value(c: Candidate, dim: str, value: Any, tie_threads: bool, cores: int) -> Candidate:
    d = asdict(c)
    d["preferred_batch_sizes"] = tuple(d["preferred_batch_sizes"])
    d[dim] = tuple(value) if dim == "preferred_batch_sizes" else value
    if dim == "instance_count" and tie_threads and c.intra_op_threads is not None:
        # 0 means "the cores shared among the instances" to the generated model.py, i.e. exactly
        # this tie: keep it rather than measure a twin.
        d["intra_op_threads"] = 0 if c.intra_op_threads == 0 else max(1, cores // value)
    if dim == "max_batch_size":
        d["preferred_batch_sizes"] = tuple(b for b in d["preferred_batch_sizes"] if b <= value)
    return Candidate(**d)


def coordinate_search(start: Candidate, grid: TuneGrid, limit: int, cores: int, measure,
                      objective: str = "throughput") -> tuple[Candidate, list]:
    """Model Analyzer's early-stopping brute force, one dimension at a time (module docstring),
    from the `grid.beam` best candidates so far rather than the best alone: dimensions interact
    (max batch 1 loses at 1 instance and can win at 2), and a lead inside one window's noise
    should not prune the branch that wins.

    `measure(candidate) -> Sample | None` measures (or returns the cached result of) a candidate;
    None: it could not be measured or has no point within the budget.
    Returns the best candidate and the candidates in the order they were measured.
    """
    tie = grid.intra_op_threads is None
    seen: list[Candidate] = []
    results: dict[Candidate, Sample] = {}

    def run(c: Candidate) -> Sample | None:
        if c not in seen:
            seen.append(c)
        s = measure(c)
        if s is not None:
            results[c] = s
        return s

    def ranked() -> list[Candidate]:
        measured = [c for c in seen if c in results]  # in measuring order: the current config first
        if not measured:
            return []
        top = measured[0]
        for c in measured[1:]:  # a lead within the search tie goes to the tie-breaker (usually p99)
            if better(objective, results[c], results[top]):
                top = c
        rest = sorted((c for c in measured if c != top), key=lambda c: primary(objective, results[c]), reverse=True)
        return [top] + rest

    run(start)
    beam = [start]
    for dim in DIMENSIONS:
        for base in beam:
            values = dimension_values(dim, grid, base, limit, cores)
            prev: Sample | None = None
            for v in values:
                c = with_value(base, dim, v, tie, cores)
                s = run(c)
                grows = dim != "preferred_batch_sizes"  # preferred sizes are choices, not a growing dimension
                if grows and prev is not None and (s is None or gain(objective, s, prev) < MIN_GAIN):
                    break
                if s is not None and (prev is None or primary(objective, s) > primary(objective, prev)):
                    prev = s
        beam = ranked()[:grid.beam] or [start]
    order = ranked()
    return (order[0] if order else start), seen


LEADER_CLASS_FLOOR = 0.5  # a class's best joins the leaders when its figure is within 2x of the top's


def leader_class(c: Candidate) -> tuple[int, bool]:
    """The shape of a config: instance count and batching on/off (Model Analyzer's quick-search axes)."""
    return c.instance_count, c.max_batch_size > 1


def leaders_of(trials: list[Trial], start: Candidate, objective: str, n: int, per_class: bool = True) -> list[Candidate]:
    """The current config first, then the `n` best measured candidates under the objective, then
    (`per_class`) the best of every other shape (`leader_class`) whose figure is within
    LEADER_CLASS_FLOOR of the top's.

    Why the shapes: each candidate's search figure is one window, and on a busy machine one window
    moves by 2-3x, so the top `n` alone can be `n` twins of one shape while another shape (1
    instance with batching off, say) loses its only window by chance and is never measured again.
    Re-measuring the best of each shape lets the repeated rounds, not one window, decide between
    shapes.
    """
    measured = [(t.candidate, t.sample) for t in trials if t.sample is not None]
    ranked = sorted(measured, key=lambda cs: primary(objective, cs[1]), reverse=True)
    out = [start] + [c for c, _ in ranked[:n] if c != start]
    if per_class and ranked:
        floor = LEADER_CLASS_FLOOR * primary(objective, ranked[0][1])
        have = {leader_class(c) for c in out}
        for c, s in ranked[n:]:
            if leader_class(c) not in have and primary(objective, s) >= floor:
                out.append(c)
                have.add(leader_class(c))
    return out


# -- measuring on the live server ----------------------------------------------------------

@dataclass
class TuneConfig:
    """Everything `repo-gen tune` needs.

    Attributes:
        latency_budget_ms: p99 budget, a constraint for every objective; None means no budget.
        objective: throughput, latency or balanced (`repo_gen.perf.tune_rules`).
        leaders: how many of the best candidates are re-measured beside the current config.
        rounds: measurements of each leader in all, its search measurement counted as the first; the
            others are taken in alternating rounds, and a leader that can no longer win after two
            (`tune_rules.contenders`) is dropped. 0 decides on the search's single measurements (no
            spread is measured then).
        settings: how perf_analyzer measures; by default each measurement is three 1 s windows with
            no stability gate (`UNGATED_STABILITY`): the repeats measure the run-to-run spread.
        work_dir: raw perf_analyzer outputs, server log and tune.json (`--output`); None resolves
            to `$XDG_CACHE_HOME/repo-gen/tune/<model>-<time>` (`~/.cache` without XDG_CACHE_HOME).
        cores: CPU cores the server may use (threads x instances); None: this process's CPUs.
        dry_run: measure and report, but leave config.pbtxt and the manifest untouched.
    """

    repo: Path
    model: str
    latency_budget_ms: float | None = None
    objective: str = "throughput"
    leaders: int = 2
    rounds: int = 3
    grid: TuneGrid = field(default_factory=TuneGrid)
    settings: PerfSettings = field(default_factory=lambda: PerfSettings(
        measurement_interval_ms=1000, stability_percentage=UNGATED_STABILITY, max_trials=3, relax=()))
    work_dir: Path | None = None
    input_data: str = "real"
    cores: int | None = None
    dry_run: bool = False
    server_timeout_s: float = 300.0

    def __post_init__(self) -> None:
        self.repo = Path(self.repo)
        if not (self.repo / self.model / "config.pbtxt").is_file():
            have = sorted(p.name for p in self.repo.iterdir() if (p / "config.pbtxt").is_file()) if self.repo.is_dir() else []
            if not self.repo.is_dir():
                raise UserError(f"--model-repository {self.repo}: no such directory; run `repo-gen build --output {self.repo}` first")
            raise UserError(f"--model {self.model}: no such model in {self.repo}; choose from {','.join(have) or 'none'}")
        if self.latency_budget_ms is not None and self.latency_budget_ms <= 0:
            raise UserError(f"--latency-budget-ms {self.latency_budget_ms}: must be > 0")
        if self.objective not in OBJECTIVES:
            raise UserError(f"--objective {self.objective}: choose {', '.join(OBJECTIVES)}")
        if self.leaders < 1:
            raise UserError(f"--leaders {self.leaders}: must be >= 1")
        if self.rounds < 0 or self.rounds == 1:
            raise UserError(f"--rounds {self.rounds}: 0 (trust the search's single windows) or >= 2 (a spread needs two)")
        self.cores = self.cores or len(os.sched_getaffinity(0))
        if self.work_dir is None:
            self.work_dir = default_output(self.model)


def default_output(model: str) -> Path:
    """Where tune writes when no --output is given: the user's cache, never the working directory."""
    from repo_gen.tools import cache_dir

    return cache_dir() / "tune" / f"{model}-{time.strftime('%Y%m%d-%H%M%S')}"


def sweep(analyzer: Analyzer, model: str, concurrency: list[int], budget_ms: float | None, input_data: str,
          objective: str = "throughput") -> tuple[float, PerfPoint | None, list[PerfPoint]]:
    """Measure growing concurrency; stop when p99 leaves the budget or throughput gains < 5%.
    Returns (throughput at the operating point, the operating point, every point)."""
    points: list[PerfPoint] = []
    prev = 0.0
    for c in concurrency:
        try:
            p = analyzer.measure(model, 1, c, input_data)
        except UnstableMeasurement as e:
            logger.warning(str(e))
            continue
        points.append(p)
        within = budget_ms is None or p.p99_ms <= budget_ms
        if not within or (prev > 0 and p.throughput < prev * (1 + MIN_GAIN)):
            break
        prev = max(prev, p.throughput)
    chosen = pick_point(objective, [sample_of(p) for p in points], budget_ms)
    best = next((p for p in points if chosen is not None and sample_of(p) == chosen), None)
    return (best.throughput if best else 0.0), best, points


def run_tune(cfg: TuneConfig) -> TuneResult:
    from repo_gen.perf.input_data import write_input_data
    from repo_gen.triton.render import parse_config
    from repo_gen.triton.server import TritonServer, free_ports

    t0 = time.perf_counter()
    work = cfg.work_dir
    assert work is not None and cfg.cores is not None
    model_dir = cfg.repo / cfg.model
    cfg_path = model_dir / "config.pbtxt"
    original_text = cfg_path.read_text()
    base_cfg = parse_config(original_text, str(cfg_path))
    if not cfg.dry_run:  # refuse before measuring anything if the winner could not be written back
        config_text(base_cfg, "", _model_file(model_dir))
    work.mkdir(parents=True, exist_ok=True)
    entry = load_manifest(cfg.repo).models.get(cfg.model)
    limit = max_batch_limit(entry, int(base_cfg.max_batch_size))
    start = candidate_of(base_cfg)
    if start.max_batch_size > limit:
        logger.warning(f"{cfg.model}: config max_batch_size {start.max_batch_size} is above the manifest's limit {limit}")
    data_arg = write_input_data(work / "input_data.json", model_dir, entry.data if entry else None, cfg.input_data)
    console.print(f"tune output: {work}")

    warm_cap = max(cfg.grid.concurrency)  # batch-1 clients: no batch is larger than the concurrency
    server = TritonServer(cfg.repo, ports=free_ports(), models=[cfg.model], exit_on_error=False,
                          log_path=work / "tritonserver.log")
    trials: dict[Candidate, Trial] = {}
    decision: Decision | None = None
    server.start(timeout_s=cfg.server_timeout_s)
    try:
        analyzer = Analyzer(server.url(cfg.settings.protocol), work / "raw", cfg.settings, server_alive=server.alive)

        loaded: list[Candidate | None] = [start]  # the server starts with the file's config

        def load(c: Candidate) -> str:
            if loaded[0] == c:  # measured again back to back (rounds reverse their order): no reload
                return ""
            loaded[0] = None
            status, body = server.load_model(cfg.model, config_json(apply_candidate(base_cfg, c, warm_cap)))
            if status != 200:
                return f"Triton refused this config: {body.strip()[:300]}"
            loaded[0] = c
            return ""

        def measure(c: Candidate) -> Sample | None:
            if c in trials:
                return trials[c].sample
            console.print(f"[bold]{cfg.model}[/]: {c.describe()}")
            refused = load(c)
            if refused:
                logger.warning(f"{c.describe()}: {refused}")
                trials[c] = Trial(c, 0.0, None, [], refused)
                return None
            try:
                score, best, points = sweep(analyzer, cfg.model, cfg.grid.concurrency, cfg.latency_budget_ms, data_arg,
                                            cfg.objective)
            except ServerDied:
                raise
            except BuildFailure as e:  # one candidate perf_analyzer cannot measure does not end the search
                logger.warning(f"{c.describe()}: not measured: {e}")
                trials[c] = Trial(c, 0.0, None, [], str(e))
                return None
            trials[c] = Trial(c, score, best, points)
            where = (f"{score:.1f} infer/s, p99 {best.p99_ms:.1f} ms at c{best.concurrency}" if best else
                     "no point within budget" if points else "no stable measurement (machine busy?)")
            console.print(f"    -> {where}")
            write_json_atomic(work / "tune.json", {"model": cfg.model, "trials": [t.row() for t in trials.values()]})
            return trials[c].sample

        searched, _ = coordinate_search(start, cfg.grid, limit, cfg.cores, measure, cfg.objective)
        winner = searched
        if cfg.rounds >= 2:
            leaders = leaders_of(list(trials.values()), start, cfg.objective, cfg.leaders)
            if len(leaders) > 1:
                samples = remeasure(leaders, trials, load, analyzer, cfg, data_arg)
                if start in samples:
                    names = {c: c.describe() for c in samples}
                    decision = decide(cfg.objective, samples, start, cfg.latency_budget_ms, names)
                    winner = decision.winner
                    console.print(f"decided by [bold]{decision.rule}[/]: {decision.detail}")
                else:
                    logger.warning("the current config could not be re-measured; deciding on the search's windows")
        before, after = trials[start], trials[winner]
        changed = winner != start and not cfg.dry_run
        result = TuneResult(cfg.model, before, after, list(trials.values()), cfg_path, changed, work,
                            objective=cfg.objective, decision=decision)
        if changed:  # (unchanged: nothing to load back, the server stops here)
            write_winner(cfg, server, base_cfg, result, original_text)
    finally:
        server.stop()
    result.wall_s = round(time.perf_counter() - t0, 1)
    write_json_atomic(work / "tune.json", tune_record(cfg, result))
    if not cfg.dry_run:
        record_in_manifest(cfg, result)
    return result


def remeasure(leaders: list[Candidate], trials: dict[Candidate, Trial], load, analyzer: Analyzer, cfg: TuneConfig,
              data_arg: str) -> dict[Candidate, list[Sample]]:
    """Up to `cfg.rounds` measurements of each leader, its search measurement being the first: the
    others in alternating rounds (order reversed every other round, so a drift of the machine does not
    favour one; the reversal also measures the round's last leader again without a reload), each at
    its operating concurrency. The current config (leaders[0]) without one (nothing within budget)
    runs at the best leader's. After each round, leaders that can no longer win
    (`tune_rules.contenders`: their repeated figures are beaten beyond overlap) are not measured again.
    A leader that fails a round just has fewer samples."""
    ops = {c: trials[c].sample for c in leaders}
    fallback = next((s.concurrency for s in ops.values() if s is not None), cfg.grid.concurrency[0])
    conc = {c: s.concurrency if s is not None else fallback for c, s in ops.items()}
    out: dict[Candidate, list[Sample]] = {c: [s] if s is not None else [] for c, s in ops.items()}
    start = leaders[0]
    active = list(leaders)
    console.print(f"re-measuring {len(leaders)} leaders, up to {cfg.rounds - 1} more alternating rounds")
    for r in range(1, cfg.rounds):
        order = active if r % 2 == 0 else active[::-1]
        for c in order:
            refused = load(c)
            if refused:
                logger.warning(f"{c.describe()}: {refused}")
                continue
            try:
                p = analyzer.measure(cfg.model, 1, conc[c], data_arg)
            except ServerDied:
                raise
            except BuildFailure as e:
                logger.warning(f"{c.describe()}: round {r + 1} not measured: {e}")
                continue
            out[c].append(sample_of(p))
            console.print(f"  round {r + 1}: {c.describe()}: {p.throughput:.1f} infer/s, p50 {p.p50_ms:.1f} ms, "
                          f"p99 {p.p99_ms:.1f} ms (c{conc[c]})")
        if not out[start] or r + 1 >= cfg.rounds:
            continue
        measured = {c: v for c, v in out.items() if v}
        keep = set(contenders(cfg.objective, {c: measured[c] for c in active if c in measured}, start,
                              cfg.latency_budget_ms))
        dropped = [c for c in active if c not in keep]
        if dropped:
            console.print(f"  no longer able to win, not measured again: {'; '.join(c.describe() for c in dropped)}")
        active = [c for c in active if c in keep]
        if len(active) < 2:
            break
    return {c: v for c, v in out.items() if v or c == start} if out[start] else {}


def _model_file(model_dir: Path) -> str | None:
    """The model file the python template's header comment names (model.onnx when one is there)."""
    return "model.onnx" if any(model_dir.glob("*/model.onnx")) else None


def write_winner(cfg: TuneConfig, server: Any, base_cfg: Any, result: TuneResult, original_text: str) -> None:
    """config.pbtxt.orig <- previous file; config.pbtxt <- winner (atomic, through the build's
    templates); reload from file."""
    from repo_gen.triton.render import parse_config

    model_dir = cfg.repo / cfg.model
    cfg_path = model_dir / "config.pbtxt"
    budget = f"{cfg.latency_budget_ms:g} ms" if cfg.latency_budget_ms is not None else "none"
    a, b = result.measured("after"), result.measured("before")
    figs = (f"{a.throughput:.1f} infer/s, p99 {a.p99_ms:.1f} ms vs {b.throughput:.1f} infer/s, p99 {b.p99_ms:.1f} ms before"
            if a and b else "")
    rule = f"\nrule {result.decision.rule}: {result.decision.detail}" if result.decision else ""
    header = (f"Tuned by repo-gen tune on {_dt.date.today().isoformat()} (objective {cfg.objective}, p99 budget {budget}): "
              f"{result.after.candidate.describe()}\n{figs}; previous config: config.pbtxt.orig{rule}")
    text = config_text(apply_candidate(base_cfg, result.after.candidate), header, _model_file(model_dir))
    parse_config(text, "tuned config")  # our own check before Triton's
    write_atomic(model_dir / "config.pbtxt.orig", original_text)
    write_atomic(cfg_path, text)
    status, body = server.load_model(cfg.model)
    if status != 200:
        write_atomic(cfg_path, original_text)
        server.load_model(cfg.model)
        raise BuildFailure(f"{cfg.model}: Triton refused the tuned config.pbtxt ({body.strip()[:300]}); the previous "
                           "config was restored")


def _sample_row(s: Sample | None) -> dict | None:
    return asdict(s) if s else None


def decision_row(d: Decision | None) -> dict | None:
    if d is None:
        return None
    return {"winner": asdict(d.winner) if isinstance(d.winner, Candidate) else str(d.winner),
            "rule": d.rule, "detail": d.detail, "spread_throughput": d.spread_throughput, "spread_p99": d.spread_p99,
            "leaders": [{"candidate": asdict(ld.key) if isinstance(ld.key, Candidate) else str(ld.key),
                         "median": asdict(ld.median), "samples": [asdict(s) for s in ld.samples]} for ld in d.leaders]}


def tune_record(cfg: TuneConfig, result: TuneResult) -> dict:
    return {"model": cfg.model, "objective": cfg.objective, "latency_budget_ms": cfg.latency_budget_ms,
            "before": result.before.row(), "after": result.after.row(), "changed": result.changed,
            "before_measured": _sample_row(result.measured("before")), "after_measured": _sample_row(result.measured("after")),
            "decision": decision_row(result.decision), "wall_s": result.wall_s,
            "trials": [t.row() for t in result.trials]}


def record_in_manifest(cfg: TuneConfig, result: TuneResult) -> None:
    if not (cfg.repo / MANIFEST_NAME).exists():
        return
    from repo_gen.triton.repository import locked_manifest

    b, a = result.measured("before"), result.measured("after")
    with locked_manifest(cfg.repo) as manifest:
        entry = manifest["models"].get(cfg.model)
        if entry is None:
            return
        entry.setdefault("extra", {})["tuning"] = {
            "date": _dt.datetime.now().isoformat(timespec="seconds"),
            "objective": cfg.objective,
            "latency_budget_ms": cfg.latency_budget_ms,
            "changed": result.changed,
            "rule": result.decision.rule if result.decision else "single-window",
            "detail": result.decision.detail if result.decision else "",
            "before": {"config": asdict(result.before.candidate), "throughput": b.throughput if b else 0.0,
                       "p99_ms": b.p99_ms if b else None},
            "after": {"config": asdict(result.after.candidate), "throughput": a.throughput if a else 0.0,
                      "p99_ms": a.p99_ms if a else None, "concurrency": a.concurrency if a else None},
            "candidates_measured": len(result.trials),
            "details": str(result.work_dir / "tune.json"),
        }
        orig = f"{cfg.model}/config.pbtxt.orig"
        if result.changed and orig not in entry.get("files", []):
            entry.setdefault("files", []).append(orig)


def before_after_rows(result: TuneResult) -> list[tuple[str, str, str]]:
    bc, ac = result.before.candidate, result.after.candidate
    rows = [
        ("instance count", str(bc.instance_count), str(ac.instance_count)),
        ("intra-op threads / instance", str(bc.intra_op_threads), str(ac.intra_op_threads)),
        ("max_queue_delay_microseconds", str(bc.max_queue_delay_us), str(ac.max_queue_delay_us)),
        ("max_batch_size", str(bc.max_batch_size), str(ac.max_batch_size)),
        ("preferred_batch_size", str(list(bc.preferred_batch_sizes)), str(list(ac.preferred_batch_sizes))),
    ]
    what = "median of re-measurements" if result.decision else "one measurement"
    b, a = result.measured("before"), result.measured("after")

    def f(s: Sample | None, attr: str, fmt: str) -> str:
        return format(getattr(s, attr), fmt) if s else "-"

    rows += [(f"throughput (infer/s, {what})", f(b, "throughput", ".1f"), f(a, "throughput", ".1f")),
             ("p50 (ms)", f(b, "p50_ms", ".1f"), f(a, "p50_ms", ".1f")),
             ("p99 (ms)", f(b, "p99_ms", ".1f"), f(a, "p99_ms", ".1f")),
             ("at concurrency", f(b, "concurrency", "d"), f(a, "concurrency", "d"))]
    return rows

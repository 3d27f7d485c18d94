"""`repo-gen tune`: find the model config with the highest throughput whose p99 stays in budget.

Search space (each a dimension; `TuneGrid`):
  instance_count        1..4 by default
  intra_op_threads      ONNX Runtime threads per instance (python-backend models that read the
                        `intra_op_threads` parameter); by default tied to the instance count as
                        max(1, cores // instances), so instances x threads never oversubscribes
  max_queue_delay_us    0, 100, 500, 2000 (dynamic batcher)
  max_batch_size        the config's own and smaller powers of two; never above the manifest's
                        max_batch_size, which for a TensorRT plan is the profile max (the backend
                        refuses a larger one)
  preferred_batch_size  none (largest batch the delay allows) or [max_batch_size]

Search: Model Analyzer's brute force with early stop, one dimension at a time in the order
above. Starting from the current config (measured first: the "before" row), each dimension's
values are tried in ascending order with the other dimensions at their best so far; growing
stops at the first value whose score gains less than 5% over the best so far. Each candidate's
score is the highest throughput over a concurrency sweep among points with p99 <= budget (no
budget: the highest throughput); the sweep also stops when the gain is < 5% or p99 leaves the
budget. The winner is the best-scoring candidate; the current config is a candidate, so the
tuned throughput is never below it (within the noise of one measurement).

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
At the end the winner is written to config.pbtxt atomically (previous file kept as
config.pbtxt.orig) and loaded from the file, without override, to prove Triton accepts it;
if it does not, the previous file is restored.
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
from repo_gen.perf.analyzer import Analyzer, PerfPoint, PerfSettings, ServerDied, UnstableMeasurement
from repo_gen.triton.repository import MANIFEST_NAME, read_manifest

MIN_GAIN = 0.05  # Model Analyzer's rule: stop growing a dimension when throughput gains < 5%
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
        max_batch_sizes: None resolves to the config's max and max/2 (not below 1), capped by
            the manifest's max_batch_size.
        preferred_batch_sizes: None resolves to [(), (max_batch_size,)].
        concurrency: client concurrency levels of each candidate's sweep.
    """

    instance_counts: list[int] = field(default_factory=lambda: [1, 2, 3, 4])
    intra_op_threads: list[int] | None = None
    max_queue_delays_us: list[int] = field(default_factory=lambda: [0, 100, 500, 2000])
    max_batch_sizes: list[int] | None = None
    preferred_batch_sizes: list[tuple[int, ...]] | None = None
    concurrency: list[int] = field(default_factory=lambda: [1, 2, 4, 8, 16])

    def __post_init__(self) -> None:
        for flag, values in (("--instance-counts", self.instance_counts), ("--queue-delays-us", self.max_queue_delays_us),
                             ("--concurrency", self.concurrency)):
            if not values:
                raise UserError(f"{flag}: give at least one value")
        if min(self.instance_counts) < 1 or max(self.instance_counts) > 64:
            raise UserError(f"--instance-counts {self.instance_counts}: values must be from 1 to 64")
        if min(self.max_queue_delays_us) < 0:
            raise UserError(f"--queue-delays-us {self.max_queue_delays_us}: values must be >= 0")
        if self.intra_op_threads is not None and (not self.intra_op_threads or min(self.intra_op_threads) < 1):
            raise UserError(f"--threads {self.intra_op_threads}: values must be >= 1")
        if self.max_batch_sizes is not None and (not self.max_batch_sizes or min(self.max_batch_sizes) < 1):
            raise UserError(f"--max-batch-sizes {self.max_batch_sizes}: values must be >= 1")
        self.instance_counts = sorted(set(self.instance_counts))
        self.max_queue_delays_us = sorted(set(self.max_queue_delays_us))
        self.concurrency = sorted(set(self.concurrency))


@dataclass
class Trial:
    candidate: Candidate
    score: float  # best throughput within budget (0 when none)
    best: PerfPoint | None
    points: list[PerfPoint]
    error: str = ""

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

    @property
    def gain(self) -> float:
        return self.after.score / self.before.score - 1.0 if self.before.score > 0 else float("inf")


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


def apply_candidate(cfg: Any, cand: Candidate) -> Any:
    """A copy of `cfg` with `cand`'s fields; warm-ups and preferred sizes above the new
    max_batch_size are clamped so Triton accepts the config."""
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
    return out


def config_json(cfg: Any) -> str:
    from google.protobuf import json_format

    return json_format.MessageToJson(cfg, preserving_proto_field_name=True, indent=None)


def config_text(cfg: Any, header: str) -> str:
    from google.protobuf import text_format

    body = text_format.MessageToString(cfg)
    return "".join(f"# {line}\n" for line in header.splitlines()) + body


def max_batch_limit(entry: dict | None, cfg_max: int) -> int:
    """The largest max_batch_size tune may set: the manifest's (a TensorRT plan's profile max),
    else the config's own."""
    limits = [cfg_max]
    if entry:
        if int(entry.get("max_batch_size") or 0) > 0:
            limits.append(int(entry["max_batch_size"]))
        extra = entry.get("extra") or {}
        for key in ("profile_max_batch", "max_batch"):
            if isinstance(extra.get(key), int) and extra[key] > 0:
                limits.append(int(extra[key]))
        prof = extra.get("profile") or {}
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
        values = grid.max_batch_sizes if grid.max_batch_sizes is not None else [max(1, limit // 2), limit]
        bad = [v for v in values if v > limit]
        if bad:
            raise UserError(f"--max-batch-sizes {','.join(map(str, bad))}: above what this model supports ({limit}, "
                            "the manifest's max_batch_size / TensorRT profile max); rebuild with a larger --max-batch")
        return sorted(set(values))
    if dim == "preferred_batch_sizes":
        if start.max_queue_delay_us is None or start.max_batch_size == 0:
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


def coordinate_search(start: Candidate, grid: TuneGrid, limit: int, cores: int, score_of) -> tuple[Candidate, list]:
    """Model Analyzer's early-stopping brute force, one dimension at a time (module docstring).

    `score_of(candidate) -> float` measures (or returns the cached score of) a candidate.
    Returns the best candidate and the candidates in the order they were scored.
    """
    tie = grid.intra_op_threads is None
    seen: list[Candidate] = []

    def score(c: Candidate) -> float:
        if c not in seen:
            seen.append(c)
        return score_of(c)

    best, best_score = start, score(start)
    for dim in DIMENSIONS:
        values = dimension_values(dim, grid, best, limit, cores)
        if not values:
            continue
        base = best
        prev_score: float | None = None
        for v in values:
            c = with_value(base, dim, v, tie, cores)
            s = score(c)
            if s > best_score:
                best, best_score = c, s
            grows = dim != "preferred_batch_sizes"  # preferred sizes are choices, not a growing dimension
            if grows and prev_score is not None and s < prev_score * (1 + MIN_GAIN):
                break
            prev_score = s if prev_score is None else max(prev_score, s)
    return best, seen


# -- measuring on the live server ----------------------------------------------------------

@dataclass
class TuneConfig:
    """Everything `repo-gen tune` needs.

    Attributes:
        latency_budget_ms: p99 budget; None means no budget (highest throughput).
        work_dir: raw perf_analyzer outputs and tune.json; None resolves to
            `<repo's parent>/tune-<model>-<time>`.
        cores: CPU cores the server may use (threads x instances); None: this process's CPUs.
        dry_run: measure and report, but leave config.pbtxt and the manifest untouched.
    """

    repo: Path
    model: str
    latency_budget_ms: float | None = None
    grid: TuneGrid = field(default_factory=TuneGrid)
    settings: PerfSettings = field(default_factory=lambda: PerfSettings(measurement_interval_ms=1500))
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
        self.cores = self.cores or len(os.sched_getaffinity(0))
        if self.work_dir is None:
            self.work_dir = self.repo.absolute().parent / f"tune-{self.model}-{time.strftime('%Y%m%d-%H%M%S')}"


def sweep(analyzer: Analyzer, model: str, concurrency: list[int], budget_ms: float | None, input_data: str) -> tuple[float, PerfPoint | None, list[PerfPoint]]:
    """Measure growing concurrency; stop when p99 leaves the budget or throughput gains < 5%."""
    points: list[PerfPoint] = []
    best: PerfPoint | None = None
    prev = 0.0
    for c in concurrency:
        try:
            p = analyzer.measure(model, 1, c, input_data)
        except UnstableMeasurement as e:
            logger.warning(str(e))
            continue
        points.append(p)
        within = budget_ms is None or p.p99_ms <= budget_ms
        if within and (best is None or p.throughput > best.throughput):
            best = p
        if not within or (prev > 0 and p.throughput < prev * (1 + MIN_GAIN)):
            break
        prev = max(prev, p.throughput)
    return (best.throughput if best else 0.0), best, points


def run_tune(cfg: TuneConfig) -> TuneResult:
    from repo_gen.perf.input_data import write_input_data
    from repo_gen.triton.render import parse_config
    from repo_gen.triton.server import TritonServer, free_ports

    t0 = time.perf_counter()
    work = cfg.work_dir
    assert work is not None and cfg.cores is not None
    work.mkdir(parents=True, exist_ok=True)
    model_dir = cfg.repo / cfg.model
    cfg_path = model_dir / "config.pbtxt"
    original_text = cfg_path.read_text()
    base_cfg = parse_config(original_text, str(cfg_path))
    manifest = read_manifest(cfg.repo)
    entry = manifest["models"].get(cfg.model)
    limit = max_batch_limit(entry, int(base_cfg.max_batch_size))
    start = candidate_of(base_cfg)
    if start.max_batch_size > limit:
        logger.warning(f"{cfg.model}: config max_batch_size {start.max_batch_size} is above the manifest's limit {limit}")
    data_arg = write_input_data(work / "input_data.json", model_dir, (entry or {}).get("data"), cfg.input_data)

    server = TritonServer(cfg.repo, ports=free_ports(), models=[cfg.model], exit_on_error=False,
                          log_path=work / "tritonserver.log")
    trials: dict[Candidate, Trial] = {}
    server.start(timeout_s=cfg.server_timeout_s)
    try:
        analyzer = Analyzer(server.url(cfg.settings.protocol), work / "raw", cfg.settings, server_alive=server.alive)

        def score_of(c: Candidate) -> float:
            if c in trials:
                return trials[c].score
            console.print(f"[bold]{cfg.model}[/]: {c.describe()}")
            status, body = server.load_model(cfg.model, config_json(apply_candidate(base_cfg, c)))
            if status != 200:
                msg = f"Triton refused this config: {body.strip()[:300]}"
                logger.warning(f"{c.describe()}: {msg}")
                trials[c] = Trial(c, 0.0, None, [], msg)
                return 0.0
            try:
                score, best, points = sweep(analyzer, cfg.model, cfg.grid.concurrency, cfg.latency_budget_ms, data_arg)
            except ServerDied:
                raise
            except BuildFailure as e:  # one candidate perf_analyzer cannot measure does not end the search
                logger.warning(f"{c.describe()}: not measured: {e}")
                trials[c] = Trial(c, 0.0, None, [], str(e))
                return 0.0
            trials[c] = Trial(c, score, best, points)
            where = f" at c{best.concurrency}, p99 {best.p99_ms:.1f} ms" if best else " (no point within budget)"
            console.print(f"    -> {score:.1f} infer/s{where}")
            write_json_atomic(work / "tune.json", {"model": cfg.model, "trials": [t.row() for t in trials.values()]})
            return score

        winner, _ = coordinate_search(start, cfg.grid, limit, cfg.cores, score_of)
        before, after = trials[start], trials[winner]
        changed = winner != start and not cfg.dry_run
        if changed:
            write_winner(cfg, server, base_cfg, winner, after, before, original_text)
        else:
            server.load_model(cfg.model)  # back to the file's config
    finally:
        server.stop()
    result = TuneResult(cfg.model, before, after, list(trials.values()), cfg_path, changed, work,
                        round(time.perf_counter() - t0, 1))
    write_json_atomic(work / "tune.json", {"model": cfg.model, "latency_budget_ms": cfg.latency_budget_ms,
                                     "before": before.row(), "after": after.row(), "changed": changed,
                                     "wall_s": result.wall_s, "trials": [t.row() for t in trials.values()]})
    if not cfg.dry_run:
        record_in_manifest(cfg, result)
    return result


def write_winner(cfg: TuneConfig, server: Any, base_cfg: Any, winner: Candidate, after: Trial, before: Trial,
                 original_text: str) -> None:
    """config.pbtxt.orig <- previous file; config.pbtxt <- winner (atomic); reload from file."""
    from repo_gen.triton.render import parse_config

    model_dir = cfg.repo / cfg.model
    cfg_path = model_dir / "config.pbtxt"
    budget = f"{cfg.latency_budget_ms:g} ms" if cfg.latency_budget_ms is not None else "none"
    header = (f"Tuned by repo-gen tune on {_dt.date.today().isoformat()}: {winner.describe()}\n"
              f"{after.score:.1f} infer/s vs {before.score:.1f} before (p99 budget {budget}); previous config: config.pbtxt.orig")
    text = config_text(apply_candidate(base_cfg, winner), header)
    parse_config(text, "tuned config")  # our own check before Triton's
    write_atomic(model_dir / "config.pbtxt.orig", original_text)
    write_atomic(cfg_path, text)
    status, body = server.load_model(cfg.model)
    if status != 200:
        write_atomic(cfg_path, original_text)
        server.load_model(cfg.model)
        raise BuildFailure(f"{cfg.model}: Triton refused the tuned config.pbtxt ({body.strip()[:300]}); the previous "
                           "config was restored")


def record_in_manifest(cfg: TuneConfig, result: TuneResult) -> None:
    if not (cfg.repo / MANIFEST_NAME).exists():
        return
    from repo_gen.triton.repository import locked_manifest

    with locked_manifest(cfg.repo) as manifest:
        entry = manifest["models"].get(cfg.model)
        if entry is None:
            return
        entry.setdefault("extra", {})["tuning"] = {
            "date": _dt.datetime.now().isoformat(timespec="seconds"),
            "latency_budget_ms": cfg.latency_budget_ms,
            "changed": result.changed,
            "before": {"config": asdict(result.before.candidate), "throughput": result.before.score,
                       "p99_ms": result.before.best.p99_ms if result.before.best else None},
            "after": {"config": asdict(result.after.candidate), "throughput": result.after.score,
                      "p99_ms": result.after.best.p99_ms if result.after.best else None,
                      "concurrency": result.after.best.concurrency if result.after.best else None},
            "candidates_measured": len(result.trials),
            "details": str(result.work_dir / "tune.json"),
        }
        orig = f"{cfg.model}/config.pbtxt.orig"
        if result.changed and orig not in entry.get("files", []):
            entry.setdefault("files", []).append(orig)


def before_after_rows(result: TuneResult) -> list[tuple[str, str, str]]:
    b, a = result.before, result.after

    def fmt_t(t: Trial) -> tuple[str, str, str]:
        if t.best is None:
            return f"{t.score:.1f}", "-", "-"
        return f"{t.score:.1f}", f"{t.best.p99_ms:.1f}", str(t.best.concurrency)

    bc, ac = b.candidate, a.candidate
    rows = [
        ("instance count", str(bc.instance_count), str(ac.instance_count)),
        ("intra-op threads / instance", str(bc.intra_op_threads), str(ac.intra_op_threads)),
        ("max_queue_delay_microseconds", str(bc.max_queue_delay_us), str(ac.max_queue_delay_us)),
        ("max_batch_size", str(bc.max_batch_size), str(ac.max_batch_size)),
        ("preferred_batch_size", str(list(bc.preferred_batch_sizes)), str(list(ac.preferred_batch_sizes))),
    ]
    (bt, bp, bcc), (at, ap, acc) = fmt_t(b), fmt_t(a)
    rows += [("throughput within budget (infer/s)", bt, at), ("p99 there (ms)", bp, ap), ("at concurrency", bcc, acc)]
    return rows

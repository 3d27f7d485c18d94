"""`repo-gen bench`: perf_analyzer sweeps over models x batch sizes x concurrency, with a report.

    BenchConfig
      -> select models     (manifest + what the server can serve / has READY)
      -> server            (started here on free loopback ports when no --url, stopped after)
      -> input data        (repo_gen.perf.input_data: real photos, preprocessed per the manifest)
      -> points            (repo_gen.perf.analyzer: one perf_analyzer process per point)
      -> outputs           results.csv (all points), raw/ (perf_analyzer's own CSV and log per
                           point), commands.txt, results.json, throughput_vs_p99.png,
                           throughput_vs_concurrency.png, report.md

Every output is rewritten after each point, so when the server dies mid-sweep (or Ctrl-C) what
was measured is on disk, with the report saying it is incomplete and why.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import shlex
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from repo_gen.errors import BuildFailure, UserError
from repo_gen.fileio import write_atomic, write_json_atomic
from repo_gen.log import console, logger
from repo_gen.manifest import load_manifest
from repo_gen.perf.analyzer import (
    CSV_FIELDS,
    Analyzer,
    PerfPoint,
    PerfSettings,
    ServerDied,
    UnstableMeasurement,
)


@dataclass
class BenchConfig:
    """Everything `repo-gen bench` needs.

    Attributes:
        models: Triton model names (a pipeline brings its classifier along); None means every model
            of the manifest that the server can serve and that takes a tensor, plus the pipelines.
        url: host:port of a running server (its gRPC or HTTP port, per `settings.protocol`); None
            starts tritonserver on free loopback ports and stops it afterwards.
        output: directory for every output; None resolves to `<repo's parent>/bench-<time>`.
        input_data: "real" (photos preprocessed per the manifest) or "random".
        latency_budget_ms: p99 budget for the "throughput at budget" column; None: no column value.
        images_dir: user images for real input data; None: scikit-image's bundled photos.
    """

    repo: Path
    models: list[str] | None = None
    url: str | None = None
    concurrency: list[int] = field(default_factory=lambda: [1, 2, 4, 8])
    batch_sizes: list[int] = field(default_factory=lambda: [1])
    output: Path | None = None
    input_data: str = "real"
    latency_budget_ms: float | None = None
    images_dir: Path | None = None
    settings: PerfSettings = field(default_factory=PerfSettings)
    server_timeout_s: float = 300.0

    def __post_init__(self) -> None:
        self.repo = Path(self.repo)
        if not self.repo.is_dir():
            raise UserError(f"--model-repository {self.repo}: no such directory; run `repo-gen build --output {self.repo}` first")
        if self.input_data not in ("real", "random"):
            raise UserError(f"--input-data {self.input_data}: choose real or random")
        if self.latency_budget_ms is not None and self.latency_budget_ms <= 0:
            raise UserError(f"--latency-budget-ms {self.latency_budget_ms}: must be > 0")
        if not self.concurrency or min(self.concurrency) < 1:
            raise UserError("--concurrency: values must be >= 1")
        if not self.batch_sizes or min(self.batch_sizes) < 1:
            raise UserError("--batch-sizes: values must be >= 1")
        if self.url is not None and ":" not in self.url:
            raise UserError(f"--url {self.url}: expected HOST:PORT of the server's {self.settings.protocol} endpoint, e.g. 127.0.0.1:8001")
        if self.url is not None and self.settings.shared_memory != "none" \
                and self.url.rsplit(":", 1)[0] not in ("127.0.0.1", "localhost", "[::1]"):
            raise UserError(f"--shared-memory {self.settings.shared_memory} with --url {self.url}: shared memory "
                            "works only with a server on this host; use --shared-memory none for a remote server")
        if self.output is None:
            self.output = self.repo.absolute().parent / f"bench-{time.strftime('%Y%m%d-%H%M%S')}"
        self.output = Path(self.output)
        if self.output.exists() and not self.output.is_dir():
            raise UserError(f"--output {self.output}: is a file; pass a directory")


@dataclass
class Variant:
    """One model as the report shows it."""

    model: str
    precision: str = "?"
    backend: str = "?"
    runtime: str = "?"
    max_batch_size: int = 0


@dataclass
class BenchResult:
    output: Path
    points: list[PerfPoint]
    variants: dict[str, Variant]
    report: Path
    plots: dict[str, dict[str, list[list[float]]]] = field(default_factory=dict)
    pipelines: dict[str, str] = field(default_factory=dict)  # measured pipeline -> its classifier
    wall_s: float = 0.0
    complete: bool = True
    problems: list[str] = field(default_factory=list)


def series_label(model: str, batch_size: int) -> str:
    return f"{model} b{batch_size}"


def best_point(points: list[PerfPoint], budget_ms: float | None = None) -> PerfPoint | None:
    """Highest throughput among `points` with p99 <= `budget_ms` (None: no budget)."""
    ok = [p for p in points if budget_ms is None or p.p99_ms <= budget_ms]
    return max(ok, key=lambda p: p.throughput) if ok else None


def _variants(repo: Path, models: list[str]) -> dict[str, Variant]:
    manifest = load_manifest(repo).models
    out = {}
    for m in models:
        e = manifest.get(m)
        out[m] = Variant(m, e.precision, e.backend, e.runtime, e.max_batch_size) if e else Variant(m)
        if not e:
            from repo_gen.triton.render import parse_config

            try:
                cfg = parse_config((repo / m / "config.pbtxt").read_text())
                out[m].backend = cfg.backend or cfg.platform or "?"
                out[m].max_batch_size = int(cfg.max_batch_size)
            except (OSError, BuildFailure):
                pass
    return out


def manifest_steps(repo: Path, model: str) -> list[str]:
    """The models an ensemble of the manifest runs, in order; [] for other models."""
    entry = load_manifest(repo).models.get(model)
    if entry is None or entry.backend != "ensemble":
        return []
    return [str(s) for s in entry.extra.get("steps") or []]


def pipeline_classifier(repo: Path, model: str) -> str | None:
    """The classifier a `<model>_pipeline` ensemble runs (its last step); None for other models."""
    steps = manifest_steps(repo, model)
    return steps[-1] if steps else None


def select_models(repo: Path, requested: list[str] | None, servable: list[str]) -> list[str]:
    """The models to measure.

    `requested` (each must be servable), each pipeline followed by its classifier so the report shows
    them side by side; or, when None, every servable model fed by a numeric tensor plus the pipelines
    (a preprocess step alone is measured only when named).
    """
    from repo_gen.perf.input_data import measurable_input, takes_image_bytes

    if requested:
        unknown = [m for m in requested if not (repo / m).is_dir()]
        if unknown:
            have = sorted(p.name for p in repo.iterdir() if p.is_dir() and not p.name.startswith("."))
            raise UserError(f"--models {','.join(unknown)}: not in {repo}; choose from {','.join(have)}")
        cannot = [m for m in requested if m not in servable]
        if cannot:
            raise UserError(f"--models {','.join(cannot)}: this server cannot serve them (see `repo-gen serve` for why); "
                            f"servable: {','.join(servable) or 'none'}")
        chosen = []
        for m in requested:
            chosen.append(m)
            classifier = pipeline_classifier(repo, m)
            if classifier and classifier in servable:
                chosen.append(classifier)
        return list(dict.fromkeys(chosen))
    chosen = [m for m in servable if measurable_input(repo / m)
              and (not takes_image_bytes(repo / m) or pipeline_classifier(repo, m) is not None)]
    if not chosen:
        raise UserError(f"--model-repository {repo}: no model this server can serve takes a tensor or image bytes; "
                        "name them with --models")
    return chosen


def _ready_on_server(url: str, protocol: str) -> list[str]:
    try:
        if protocol == "grpc":
            import tritonclient.grpc as tc

            client = tc.InferenceServerClient(url)
            index = client.get_model_repository_index(as_json=True).get("models", [])
        else:
            import tritonclient.http as tc  # type: ignore[no-redef]

            client = tc.InferenceServerClient(url)
            index = client.get_model_repository_index()
    except Exception as e:  # tritonclient raises its own exception types per protocol
        raise UserError(f"--url {url}: cannot reach a Triton server over {protocol} ({e}); check the address and --protocol") from e
    return [m["name"] for m in index if m.get("state") == "READY"]


def run_bench(cfg: BenchConfig) -> BenchResult:
    """Run the sweep and write every output (see module docstring). Raises BuildFailure when the
    server dies; what was measured before stays in `cfg.output`."""
    from repo_gen.perf.answer_check import check_answers
    from repo_gen.perf.input_data import write_input_data

    t0 = time.perf_counter()
    out = cfg.output
    assert out is not None
    (out / "raw").mkdir(parents=True, exist_ok=True)
    server = None
    commands: list[str] = []
    if cfg.url is None:
        from repo_gen.tools import find_tritonserver
        from repo_gen.triton.server import TritonServer, choose_models, free_ports

        inst = find_tritonserver()
        servable = [c.name for c in choose_models(cfg.repo, inst.backends) if c.serve]
        models = select_models(cfg.repo, cfg.models, servable)
        steps = [str(st) for m in models for st in (manifest_steps(cfg.repo, m))]
        server = TritonServer(cfg.repo, ports=free_ports(), models=list(dict.fromkeys(models + steps)), install=inst,
                              log_path=out / "tritonserver.log")
        commands.append("# tritonserver (started by repo-gen bench)\n" + shlex.join(server.argv()))
        server.start(timeout_s=cfg.server_timeout_s)
        url = server.url(cfg.settings.protocol)
        alive: Callable[[], bool] | None = server.alive
    else:
        url = cfg.url
        models = select_models(cfg.repo, cfg.models, _ready_on_server(url, cfg.settings.protocol))
        alive = None
    variants = _variants(cfg.repo, models)
    manifest = load_manifest(cfg.repo).models
    result = BenchResult(out, [], variants, out / "report.md")
    for m in models:
        classifier = pipeline_classifier(cfg.repo, m)
        if classifier in models:
            result.pipelines[m] = classifier
    meta = {"date": _dt.datetime.now().isoformat(timespec="seconds"), "url": url, "protocol": cfg.settings.protocol,
            "machine": machine_description(), "settings": asdict(cfg.settings), "input_data": cfg.input_data,
            "latency_budget_ms": cfg.latency_budget_ms, "repository": str(cfg.repo.absolute())}
    try:
        analyzer = Analyzer(url, out / "raw", cfg.settings, server_alive=alive)
        for model in models:
            wrong = check_answers(url, cfg.settings.protocol, model)
            if wrong:  # perf_analyzer never reads answers: measuring this model would measure a broken one
                logger.warning(f"{wrong}; not measured")
                result.problems.append(f"{wrong}; not measured")
                continue
            data_arg = write_input_data(out / "input_data" / f"{model}.json", cfg.repo / model,
                                        manifest[model].data if model in manifest else None, cfg.input_data, images_dir=cfg.images_dir)
            mb = variants[model].max_batch_size
            for b in cfg.batch_sizes:
                if mb and b > mb:
                    msg = f"{model}: batch {b} skipped, above its max_batch_size {mb}"
                    logger.warning(msg)
                    result.problems.append(msg)
                    continue
                for c in cfg.concurrency:
                    try:
                        p = analyzer.measure(model, b, c, data_arg)
                    except UnstableMeasurement as e:
                        logger.warning(str(e))
                        result.problems.append(str(e))
                        continue
                    result.points.append(p)
                    commands.append(p.command)
                    console.print(f"  {model} b{b} c{c}: {p.throughput:8.1f} infer/s  p99 {p.p99_ms:7.1f} ms"
                                  f"{'' if p.stable else f'  (stable within {p.stability_percentage:g}% only)'}")
                    write_outputs(result, cfg, meta, commands, plots=False)
    except ServerDied as e:
        result.complete = False
        result.problems.append(str(e))
        if server is not None:
            code = server.proc.poll() if server.proc else None
            detail = f" (tritonserver exit code {code}; log: {server.log_path})" if code is not None else ""
            result.problems[-1] += detail
        raise BuildFailure(f"{e}; kept the {len(result.points)} point(s) measured before in {out} "
                           f"(report: {result.report})") from e
    except BaseException:
        result.complete = False
        raise
    finally:
        if server is not None:
            server.stop()
        result.wall_s = round(time.perf_counter() - t0, 1)
        meta["wall_s"] = result.wall_s
        write_outputs(result, cfg, meta, commands, plots=True)
    return result


def machine_description() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {len(os.sched_getaffinity(0))} cores usable, {platform.system()} {platform.release()}"


def write_csv(path: Path, points: list[PerfPoint]) -> None:
    import csv
    import io

    buf = io.StringIO(newline="")
    w = csv.DictWriter(buf, fieldnames=CSV_FIELDS)
    w.writeheader()
    for p in points:
        w.writerow(p.to_row())
    write_atomic(path, buf.getvalue())


def write_outputs(result: BenchResult, cfg: BenchConfig, meta: dict, commands: list[str], plots: bool) -> None:
    out = result.output
    write_csv(out / "results.csv", result.points)
    (out / "commands.txt").write_text("\n\n".join(commands) + "\n")
    if plots and result.points:
        result.plots = {
            "throughput_vs_p99": plot_throughput_vs_latency(result.points, out / "throughput_vs_p99.png", cfg.latency_budget_ms),
            "throughput_vs_concurrency": plot_throughput_vs_concurrency(result.points, out / "throughput_vs_concurrency.png"),
        }
    summary = {"meta": meta, "complete": result.complete, "problems": result.problems,
               "variants": {k: asdict(v) for k, v in result.variants.items()}, "pipelines": result.pipelines,
               "points": [p.to_row() for p in result.points], "plots": result.plots}
    write_json_atomic(out / "results.json", summary)
    write_atomic(result.report, render_report(result, cfg, meta, plots and bool(result.points)))


def _series(points: list[PerfPoint]) -> dict[str, list[PerfPoint]]:
    groups: dict[str, list[PerfPoint]] = {}
    for p in points:
        groups.setdefault(series_label(p.model, p.batch_size), []).append(p)
    return {k: sorted(v, key=lambda p: p.concurrency) for k, v in groups.items()}


def plot_throughput_vs_latency(points: list[PerfPoint], path: Path, budget_ms: float | None = None) -> dict[str, list[list[float]]]:
    """One line per variant (model, batch): p99 latency (x) vs throughput (y), points labelled with
    their concurrency. Returns the plotted series {label: [[p99_ms, throughput], ...]}."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5), dpi=110)
    plotted = {}
    for label, ps in _series(points).items():
        xs, ys = [p.p99_ms for p in ps], [p.throughput for p in ps]
        ax.plot(xs, ys, marker="o", label=label)
        for p in ps:
            ax.annotate(f"c{p.concurrency}", (p.p99_ms, p.throughput), textcoords="offset points", xytext=(4, 4), fontsize=7)
        plotted[label] = [[round(x, 3), round(y, 3)] for x, y in zip(xs, ys, strict=True)]
    if budget_ms is not None:
        ax.axvline(budget_ms, color="red", linestyle="--", linewidth=1, label=f"p99 budget {budget_ms:g} ms")
    ax.set_xlabel("p99 latency (ms)")
    ax.set_ylabel("throughput (inferences/s)")
    ax.set_title("Throughput vs p99 latency (one line per variant)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return plotted


def plot_throughput_vs_concurrency(points: list[PerfPoint], path: Path) -> dict[str, list[list[float]]]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5), dpi=110)
    plotted = {}
    for label, ps in _series(points).items():
        xs, ys = [p.concurrency for p in ps], [p.throughput for p in ps]
        ax.plot(xs, ys, marker="o", label=label)
        plotted[label] = [[float(x), round(y, 3)] for x, y in zip(xs, ys, strict=True)]
    ax.set_xscale("log", base=2)
    ax.set_xlabel("concurrency (outstanding requests)")
    ax.set_ylabel("throughput (inferences/s)")
    ax.set_title("Throughput vs concurrency")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return plotted


_TRANSPORT_NOTE = {
    "none": "; tensors inside the protocol messages)",
    "system": ", tensors in system shared memory)",
    # Why gRPC reads lower for a GPU model: benchmarks/RESULTS.md, "Served on a GPU".
    "cuda": ", tensors in CUDA shared memory: a GPU model reads its inputs in place; over the protocol messages "
            "they would be serialized, copied through host memory and up to the GPU, which costs a GPU model "
            "most of its throughput)",
}
def pipeline_section(result: BenchResult, groups: dict[str, list[PerfPoint]]) -> list[str]:
    """Each measured pipeline beside its classifier: what decoding + preprocessing in the server costs."""
    rows = []
    for ps in groups.values():
        classifier = result.pipelines.get(ps[0].model)
        theirs = groups.get(series_label(classifier, ps[0].batch_size)) if classifier else None
        if not theirs:
            continue
        mine_best, their_best = best_point(ps), best_point(theirs)
        assert mine_best is not None and their_best is not None
        mine_c1 = min(ps, key=lambda p: p.concurrency)
        their_c1 = next((p for p in theirs if p.concurrency == mine_c1.concurrency), None)
        ratio = mine_best.throughput / their_best.throughput if their_best.throughput else 0.0
        added = f"{mine_c1.p50_ms - their_c1.p50_ms:+.1f}" if their_c1 else "-"
        rows.append(f"| {ps[0].model} | {classifier} | {ps[0].batch_size} | {mine_best.throughput:.1f} | "
                    f"{their_best.throughput:.1f} | {ratio:.2f} | {mine_c1.concurrency} | {added} |")
    if not rows:
        return []
    return ["", "## Pipeline beside its classifier", "",
            "The pipeline takes encoded photos (JPEG bytes) and decodes + preprocesses them in the server; its "
            "classifier takes the preprocessed tensor. The difference is the cost of doing that work in the server.", "",
            "| pipeline | classifier | batch | pipeline best (infer/s) | classifier best (infer/s) | pipeline / classifier "
            "| at concurrency | p50 added by the pipeline (ms) |",
            "|---|---|---:|---:|---:|---:|---:|---:|", *rows]


def render_report(result: BenchResult, cfg: BenchConfig, meta: dict, with_plots: bool) -> str:
    budget = cfg.latency_budget_ms
    lines = ["# repo-gen bench report", ""]
    if not result.complete:
        lines += ["**INCOMPLETE**: the run stopped early; the numbers below are what was measured before.", ""]
    lines += [f"- date: {meta['date']}", f"- machine: {meta['machine']}", f"- server: {meta['url']} ({meta['protocol']}"
              + _TRANSPORT_NOTE[cfg.settings.shared_memory],
              f"- repository: {meta['repository']}",
              f"- input data: {cfg.input_data}" + (" (photos preprocessed per the manifest's data config)" if cfg.input_data == "real" else ""),
              f"- measurement: {cfg.settings.measurement_mode}, "
              + (f"{cfg.settings.measurement_interval_ms} ms windows" if cfg.settings.measurement_mode == "time_windows"
                 else f">= {cfg.settings.request_count} requests per window")
              + f", stable when the last 3 windows agree within {cfg.settings.stability_percentage:g}% "
              f"(throughput and p{cfg.settings.percentile}), at most {cfg.settings.max_trials} windows",
              f"- latency budget (p99): {f'{budget:g} ms' if budget is not None else 'none given'}"]
    if "wall_s" in meta:
        lines.append(f"- wall time: {meta['wall_s']:.1f} s")
    lines += ["", "## Variants", "",
              "| model | precision | backend | batch | best throughput (infer/s) | at concurrency | p99 there (ms) "
              "| throughput within budget (infer/s) | at concurrency | all points stable |",
              "|---|---|---|---:|---:|---:|---:|---:|---:|---|"]
    groups = _series(result.points)
    for ps in groups.values():
        v = result.variants.get(ps[0].model, Variant(ps[0].model))
        best = best_point(ps)
        assert best is not None
        at = best_point(ps, budget) if budget is not None else None
        within = (f"{at.throughput:.1f} | {at.concurrency}" if at else "none under budget | -") if budget is not None else "- | -"
        lines.append(f"| {v.model} | {v.precision} | {v.backend} | {ps[0].batch_size} | {best.throughput:.1f} | "
                     f"{best.concurrency} | {best.p99_ms:.1f} | {within} | {'yes' if all(p.stable for p in ps) else 'no'} |")
    lines += pipeline_section(result, groups)
    lines += ["", "## Server-side time per request at the best point (ms)", "",
              "| variant | queue | compute input | compute infer | compute output | client p50 | client p99 |",
              "|---|---:|---:|---:|---:|---:|---:|"]
    for label, ps in groups.items():
        b = best_point(ps)
        assert b is not None
        lines.append(f"| {label} c{b.concurrency} | {b.server_queue_us / 1e3:.2f} | {b.server_compute_input_us / 1e3:.2f} | "
                     f"{b.server_compute_infer_us / 1e3:.2f} | {b.server_compute_output_us / 1e3:.2f} | {b.p50_ms:.2f} | {b.p99_ms:.2f} |")
    if with_plots:
        lines += ["", "## Plots", "", "![throughput vs p99 latency](throughput_vs_p99.png)", "",
                  "![throughput vs concurrency](throughput_vs_concurrency.png)"]
    lines += ["", "## All points", "",
              "| variant | concurrency | throughput | p50 ms | p90 ms | p99 ms | queue ms | infer ms | stable within |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for label, ps in groups.items():
        for p in ps:
            lines.append(f"| {label} | {p.concurrency} | {p.throughput:.1f} | {p.p50_ms:.1f} | {p.p90_ms:.1f} | {p.p99_ms:.1f} | "
                         f"{p.server_queue_us / 1e3:.1f} | {p.server_compute_infer_us / 1e3:.1f} | {p.stability_percentage:g}% |")
    if result.problems:
        lines += ["", "## Problems", ""] + [f"- {p}" for p in result.problems]
    lines += ["", "## Reproduce", "",
              "Raw perf_analyzer CSVs and full outputs are in `raw/`; every command line is in `commands.txt`.", "",
              "```sh"] + [c for c in (p.command for p in result.points[:3])] + (["# ... (all in commands.txt)"] if len(result.points) > 3 else []) + ["```", ""]
    return "\n".join(lines)

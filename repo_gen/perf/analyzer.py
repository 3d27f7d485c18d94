"""Drive the real perf_analyzer: build its argv, run one measurement point, parse its CSV.

One perf_analyzer process per (model, batch size, concurrency) point, not one process per
concurrency range, because:

- a point that cannot be made stable does not take the rest of the sweep with it (perf_analyzer
  stops at the first unstable level and silently leaves the later ones out of its CSV);
- when the server dies mid-sweep, every point measured before is already on disk;
- each point's exact command line and full output are kept, so any number can be rerun by hand.

Stability: perf_analyzer measures windows (time or request-count windows) until the last three
agree within `stability_percentage` on throughput and on the p99 latency (we stabilize on p99,
the number the latency budget is about), for at most `max_trials` windows. When a point is not
stable, it is measured again with the threshold doubled (`relax`), and the point is kept with
`stable=False` and the threshold that it met, so a busy machine shows up in the report instead of
failing the whole run. Only when the loosest threshold fails too is the point lost, with a
message that says what to change.
"""

from __future__ import annotations

import csv
import io
import shlex
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from repo_gen import procs
from repo_gen.errors import BuildFailure, UserError
from repo_gen.log import logger
from repo_gen.tools import PerfAnalyzer, find_perf_analyzer

PROTOCOLS = ("grpc", "http")
MEASUREMENT_MODES = ("time_windows", "count_windows")
SHARED_MEMORY = ("none", "system", "cuda")
# perf_analyzer's output region per request is fixed in advance (default 100 KB); per image we
# allow 16 KiB, room for 4000 float32 scores, so a batch-64 request of 1000-class logits fits.
OUTPUT_SHM_BYTES_PER_SAMPLE = 16 * 1024
UNSTABLE_MARK = "Failed to obtain stable measurement"
EMPTY_WINDOW_MARK = "No valid requests recorded"  # a time window shorter than one request
# A stability bound no three windows miss: perf_analyzer then stops after exactly `max_trials` windows.
# `repo-gen tune` measures this way and judges the noise by repeating measurements in alternating
# rounds instead (repo_gen.perf.tune_rules): a gate on three consecutive windows of one run costs
# 10-30 windows per point on a busy machine and says less about run-to-run spread than the repeats do.
UNGATED_STABILITY = 1000.0
# What perf_analyzer prints when it cannot reach the server (or the server went away).
CONNECTION_MARKS = ("failed to connect", "Connection refused", "Socket closed", "connect failed",
                    "failed to get model metadata", "Couldn't connect", "UNAVAILABLE", "Broken pipe",
                    "Stream removed", "server is not live", "Empty reply", "Connection reset by peer",
                    "unable to get server metadata")
# A killed server closes its sockets before the kernel reports the process gone: after perf_analyzer
# lost its connection, the server gets this long to show it is dead before the failure is judged.
DYING_GRACE_S = 3.0


class ServerDied(BuildFailure):
    """The server stopped answering during a measurement (crash, kill, OOM)."""


class UnstableMeasurement(BuildFailure):
    """perf_analyzer could not stabilize a point even at the loosest threshold."""


@dataclass
class PerfSettings:
    """How perf_analyzer measures each point.

    Attributes:
        protocol: "grpc" or "http".
        measurement_mode: "time_windows" (each window lasts `measurement_interval_ms`) or
            "count_windows" (each window holds at least `request_count` requests).
        stability_percentage: max/min of the last 3 windows, in percent, for throughput and p99.
        max_trials: windows measured at most before perf_analyzer gives up on a point.
        relax: thresholds tried, in order, after `stability_percentage` fails; empty: no retry.
        percentile: latency percentile used for stability (and reported as "the" latency).
        timeout_s: wall-clock limit of one perf_analyzer process.
        shared_memory: "none" sends tensors inside the gRPC/HTTP messages; "system" puts inputs and
            outputs in POSIX shared memory registered with the server (a client on the server's own
            host): on a 2-core machine the ~0.8 MB of protobuf per 256x256 image costs ~10% of
            throughput (benchmarks/RESULTS.md, Foundation). "cuda": CUDA memory on the GPU (needs a GPU
            on the client's host); a GPU model (the torch runtime) then reads its inputs in place, while
            over the gRPC messages they arrive in host memory and are copied up (RESULTS.md, GPU serving).
        extra_args: appended verbatim.
    """

    protocol: str = "grpc"
    measurement_mode: str = "time_windows"
    measurement_interval_ms: int = 2000
    request_count: int = 50
    stability_percentage: float = 10.0
    max_trials: int = 10
    relax: tuple[float, ...] = (20.0, 40.0)
    percentile: int = 99
    timeout_s: float = 300.0
    shared_memory: str = "none"
    extra_args: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.protocol = str(self.protocol).lower()
        if self.protocol not in PROTOCOLS:
            raise UserError(f"--protocol {self.protocol}: choose grpc or http")
        if self.shared_memory not in SHARED_MEMORY:
            raise UserError(f"--shared-memory {self.shared_memory}: choose none, system or cuda")
        if self.measurement_mode not in MEASUREMENT_MODES:
            raise UserError(f"measurement mode {self.measurement_mode!r}: choose time_windows or count_windows")
        if self.measurement_interval_ms < 100:
            raise UserError(f"--measurement-interval-ms {self.measurement_interval_ms}: must be >= 100")
        if self.request_count < 1:
            raise UserError(f"--measurement-request-count {self.request_count}: must be >= 1")
        if not 0 < self.stability_percentage <= 1000:
            raise UserError(f"--stability-percentage {self.stability_percentage}: must be in (0, 1000]")
        if self.max_trials < 3:
            raise UserError(f"--max-trials {self.max_trials}: must be >= 3 (stability compares 3 windows)")
        if not 1 <= self.percentile <= 99:
            raise UserError(f"--percentile {self.percentile}: must be from 1 to 99")
        self.relax = tuple(float(r) for r in self.relax if float(r) > self.stability_percentage)


@dataclass
class PerfPoint:
    """One measured point. Latencies in milliseconds; server breakdown in microseconds per request."""

    model: str
    batch_size: int
    concurrency: int
    throughput: float  # inferences (images) per second, = requests/s x batch size
    p50_ms: float
    p90_ms: float
    p95_ms: float
    p99_ms: float
    client_send_us: float = 0.0
    network_us: float = 0.0  # "Network+Server Send/Recv"
    server_queue_us: float = 0.0
    server_compute_input_us: float = 0.0
    server_compute_infer_us: float = 0.0
    server_compute_output_us: float = 0.0
    client_recv_us: float = 0.0
    stable: bool = True
    stability_percentage: float = 10.0
    wall_s: float = 0.0
    command: str = ""

    def to_row(self) -> dict:
        return asdict(self)


CSV_FIELDS = list(PerfPoint.__dataclass_fields__)

# perf_analyzer's -f CSV header -> PerfPoint field (usec unless noted).
_COLUMNS = {
    "Concurrency": "concurrency",
    "Inferences/Second": "throughput",
    "Client Send": "client_send_us",
    "Network+Server Send/Recv": "network_us",
    "Server Queue": "server_queue_us",
    "Server Compute Input": "server_compute_input_us",
    "Server Compute Infer": "server_compute_infer_us",
    "Server Compute Output": "server_compute_output_us",
    "Client Recv": "client_recv_us",
    "p50 latency": "p50_ms",
    "p90 latency": "p90_ms",
    "p95 latency": "p95_ms",
    "p99 latency": "p99_ms",
}


def parse_perf_csv(text: str, model: str, batch_size: int) -> list[PerfPoint]:
    """Rows of perf_analyzer's `-f` CSV as points; columns are found by header name.

    Raises BuildFailure when a column we need is missing (a perf_analyzer we do not know).
    """
    reader = csv.DictReader(io.StringIO(text.strip()))
    if reader.fieldnames is None:
        return []
    header = [h.strip() for h in reader.fieldnames]
    need = ("Concurrency", "Inferences/Second", "p50 latency", "p90 latency", "p99 latency")
    missing = [c for c in need if c not in header]
    if missing:
        raise BuildFailure(f"perf_analyzer CSV lacks columns {missing} (header: {header}); use perf_analyzer >= 2.30")
    points = []
    for raw in reader:
        row = {k.strip(): (v or "").strip() for k, v in raw.items() if k is not None}
        if not row.get("Concurrency"):
            continue
        values: dict = {}
        for col, name in _COLUMNS.items():
            if col not in row or row[col] == "":
                continue
            v = float(row[col])
            values[name] = v / 1000.0 if name.endswith("_ms") else v
        values.setdefault("p95_ms", values["p99_ms"])
        values["concurrency"] = int(values["concurrency"])
        points.append(PerfPoint(model=model, batch_size=batch_size, **values))
    return points


def perf_argv(
    binary: Path | str,
    model: str,
    url: str,
    settings: PerfSettings,
    batch_size: int,
    concurrency: int,
    csv_path: Path,
    input_data: str | Path | None = None,
    stability_percentage: float | None = None,
) -> list[str]:
    """The perf_analyzer command line for one point (a list: it is never run through a shell).

    Args:
        input_data: "random", "zero" or a JSON file written by `repo_gen.perf.input_data`;
            None lets perf_analyzer choose (random).
        stability_percentage: None resolves to `settings.stability_percentage`.
    """
    if batch_size < 1:
        raise UserError(f"--batch-sizes {batch_size}: must be >= 1")
    if concurrency < 1:
        raise UserError(f"--concurrency {concurrency}: must be >= 1")
    stab = settings.stability_percentage if stability_percentage is None else stability_percentage
    argv = [
        str(binary), "-m", model, "-u", url, "-i", settings.protocol,
        "-b", str(batch_size),
        "--concurrency-range", str(concurrency),
        "--measurement-mode", settings.measurement_mode,
    ]
    if settings.measurement_mode == "time_windows":
        argv += ["--measurement-interval", str(settings.measurement_interval_ms)]
    else:
        argv += ["--measurement-request-count", str(settings.request_count)]
    argv += [
        "--stability-percentage", f"{stab:g}",
        "--max-trials", str(settings.max_trials),
        "--percentile", str(settings.percentile),
        "--verbose-csv",
        "-f", str(csv_path),
    ]
    if input_data is not None:
        argv += ["--input-data", str(input_data)]
    if settings.shared_memory != "none":
        argv += ["--shared-memory", settings.shared_memory,
                 "--output-shared-memory-size", str(max(102400, batch_size * OUTPUT_SHM_BYTES_PER_SAMPLE))]
    return argv + list(settings.extra_args)


def format_command(argv: list[str], env: dict[str, str] | None = None) -> str:
    """A shell line anyone can paste to rerun a point (with LD_LIBRARY_PATH where it is needed)."""
    prefix = ""
    if env and env.get("LD_LIBRARY_PATH"):
        prefix = f"LD_LIBRARY_PATH={shlex.quote(env['LD_LIBRARY_PATH'])} "
    return prefix + shlex.join(argv)


@dataclass
class Analyzer:
    """Measures points against one server.

    Attributes:
        url: host:port of the server's gRPC or HTTP endpoint (matching `settings.protocol`).
        work_dir: where each point's CSV and full perf_analyzer output are kept.
        server_alive: called after a failed point; False means the server is gone (ServerDied).
            None: judge by perf_analyzer's output only.
        perf: the perf_analyzer to run; None finds one (`repo_gen.tools.find_perf_analyzer`).
    """

    url: str
    work_dir: Path
    settings: PerfSettings = field(default_factory=PerfSettings)
    server_alive: Callable[[], bool] | None = None
    perf: PerfAnalyzer | None = None

    def __post_init__(self) -> None:
        self.perf = self.perf or find_perf_analyzer()
        self.work_dir.mkdir(parents=True, exist_ok=True)

    def measure(self, model: str, batch_size: int, concurrency: int, input_data: str | Path | None = None) -> PerfPoint:
        """Measure one point, relaxing the stability threshold when needed (see module docstring).

        Raises:
            ServerDied: the server stopped answering.
            UnstableMeasurement: not stable even at the loosest threshold.
            BuildFailure: perf_analyzer failed for another reason (its output is in the message).
        """
        assert self.perf is not None
        thresholds = [self.settings.stability_percentage, *self.settings.relax]
        stem = f"{model}.b{batch_size}.c{concurrency}"
        settings = self.settings
        i = 0
        while i < len(thresholds):
            stab = thresholds[i]
            csv_path = self.work_dir / f"{stem}.csv"
            csv_path.unlink(missing_ok=True)
            argv = perf_argv(self.perf.binary, model, self.url, settings, batch_size, concurrency,
                             csv_path, input_data, stab)
            command = format_command(argv, self.perf.env)
            logger.debug("running: " + command)
            t0 = time.perf_counter()
            # Own process group, killed on Ctrl-C / SIGTERM / any exception, and on Linux with us.
            rc, out, timed_out = procs.run(argv, self.settings.timeout_s, env=self.perf.env)
            if timed_out:
                out += f"\n(killed after {self.settings.timeout_s:.0f} s)"
            wall = time.perf_counter() - t0
            (self.work_dir / f"{stem}.log").write_text(f"$ {command}\n(exit {rc}, {wall:.1f} s)\n{out}")
            rows = parse_perf_csv(csv_path.read_text(), model, batch_size) if csv_path.is_file() else []
            rows = [r for r in rows if r.concurrency == concurrency]
            if rc == 0 and rows:
                point = rows[0]
                point.stable = stab == thresholds[0]
                point.stability_percentage = stab
                point.wall_s = round(wall, 2)
                point.command = command
                if not point.stable:
                    logger.warning(f"{model} b{batch_size} c{concurrency}: not stable within "
                                   f"{self.settings.stability_percentage:g}% (is the machine busy?); kept the "
                                   f"measurement that is stable within {stab:g}%")
                return point
            if self._server_gone(out):
                raise ServerDied(f"the server at {self.url} stopped answering while measuring {model} "
                                 f"(batch {batch_size}, concurrency {concurrency}); perf_analyzer said: "
                                 f"{_last_line(out)} (full output: {self.work_dir / (stem + '.log')})")
            if EMPTY_WINDOW_MARK in out and settings.measurement_mode == "time_windows" \
                    and settings.measurement_interval_ms < 8 * self.settings.measurement_interval_ms:
                # Requests last longer than a window (high concurrency, slow model): double the window.
                settings = replace(settings, measurement_interval_ms=settings.measurement_interval_ms * 2)
                logger.info(f"{model} b{batch_size} c{concurrency}: no request completed within a window; "
                            f"retrying with {settings.measurement_interval_ms} ms windows")
                continue
            if UNSTABLE_MARK not in out:
                raise BuildFailure(f"perf_analyzer failed on {model} (batch {batch_size}, concurrency {concurrency}) "
                                   f"with exit code {rc}: {_last_line(out)} (command and output: "
                                   f"{self.work_dir / (stem + '.log')})")
            logger.info(f"{model} b{batch_size} c{concurrency}: not stable within {stab:g}% after "
                        f"{self.settings.max_trials} windows; retrying")
            i += 1
        raise UnstableMeasurement(
            f"{model} (batch {batch_size}, concurrency {concurrency}): perf_analyzer found no stable "
            f"measurement even within {thresholds[-1]:g}% over {self.settings.max_trials} windows; the machine "
            "is probably busy: stop other work, or pass a longer --measurement-interval-ms / more --max-trials"
        )

    def _server_gone(self, output: str) -> bool:
        lost_connection = any(m.lower() in output.lower() for m in CONNECTION_MARKS)
        if self.server_alive is None:
            return lost_connection
        deadline = time.monotonic() + (DYING_GRACE_S if lost_connection else 0.0)
        while True:
            if not self.server_alive():
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.1)


def _last_line(out: str) -> str:
    lines = [ln.strip() for ln in out.splitlines() if ln.strip()]
    errors = [ln for ln in lines if "error" in ln.lower() or "failed" in ln.lower()]
    return (errors or lines or ["(no output)"])[-1][:400]


def parse_concurrency(spec: str) -> list[int]:
    """`--concurrency`: "8" -> [8]; "1:32" -> powers of two 1,2,4,...,32 (end always included);
    "2:16:2" -> 2,4,...,16 (linear step); "1,3,8" -> as listed."""
    s = str(spec).strip()
    try:
        if "," in s:
            values = [int(v) for v in s.split(",") if v.strip()]
        elif ":" in s:
            parts = [int(v) for v in s.split(":")]
            if len(parts) == 2:
                lo, hi = parts
                if lo < 1 or hi < lo:
                    raise ValueError
                values, c = [], lo
                while c < hi:
                    values.append(c)
                    c *= 2
                values.append(hi)
            elif len(parts) == 3:
                lo, hi, step = parts
                if lo < 1 or hi < lo or step < 1:
                    raise ValueError
                values = list(range(lo, hi + 1, step))
            else:
                raise ValueError
        else:
            values = [int(s)]
    except ValueError:
        raise UserError(f"--concurrency {spec}: use N, START:END (powers of two), START:END:STEP or a comma list "
                        "of integers >= 1, e.g. --concurrency 1:32") from None
    if not values or min(values) < 1 or max(values) > 1024:
        raise UserError(f"--concurrency {spec}: values must be from 1 to 1024")
    return sorted(dict.fromkeys(values))


def parse_int_list(spec: str, flag: str, lo: int = 1, hi: int = 1 << 20) -> list[int]:
    """"1,8" -> [1, 8]; raises UserError naming `flag`."""
    try:
        values = [int(v) for v in str(spec).split(",") if v.strip()]
    except ValueError:
        raise UserError(f"{flag} {spec}: expected a comma list of integers, e.g. {flag} 1,8") from None
    if not values or min(values) < lo or max(values) > hi:
        raise UserError(f"{flag} {spec}: values must be from {lo} to {hi}")
    return list(dict.fromkeys(values))

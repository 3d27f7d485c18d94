"""One logger for the whole tool, plus timed steps for long stages.

Failing is raising a `repo_gen.errors` type; the CLI prints it once and maps it to an exit code.
Messages go to stderr; machine-readable output (JSON, tables meant for piping) goes to stdout.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from collections.abc import Iterator

from rich.console import Console
from rich.logging import RichHandler

# Wide when piped into a log, so tables are not folded at 80 columns.
console = Console(stderr=True, highlight=False, width=None if sys.stderr.isatty() else 150)
logger = logging.getLogger("repo_gen")
_warned: set[str] = set()


def setup(verbose: bool = False, quiet: bool = False) -> None:
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    logger.handlers.clear()
    handler = RichHandler(console=console, show_time=False, show_path=False, markup=False)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False


def warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        logger.warning(message)


@contextlib.contextmanager
def step(name: str, timings: dict[str, float] | None = None) -> Iterator[None]:
    """Time a stage: logs start and finish, records seconds into `timings[name]`."""
    logger.info(f"[{name}] ...")
    t0 = time.perf_counter()
    try:
        yield
    finally:
        dt = time.perf_counter() - t0
        if timings is not None:
            timings[name] = round(timings.get(name, 0.0) + dt, 3)
    logger.info(f"[{name}] done in {dt:.2f} s")


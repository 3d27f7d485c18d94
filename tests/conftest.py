"""Shared fixtures: a real repository built once per session, and a real tritonserver on it.

No test doubles: the server is the tritonserver binary from the nvidia-pytriton wheel (or PATH),
started on free loopback ports. Tests that need a missing tool are skipped with the reason.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

# Small, fast model for most tests; shapes and names are those of every MobileViT.
TEST_MODEL = os.environ.get("REPO_GEN_TEST_MODEL", "mobilevit_xxs")
TEST_MAX_BATCH = 8

# How tests run perf_analyzer: windows of a fixed number of requests (a busy machine makes them
# longer, never empty) and a stability bound no busy machine misses. Tests check that it ran and
# returned sane figures (requests served, p99 >= p50 > 0), never that the machine was quiet.
LOOSE_PERF_ARGS = ["--measurement-mode", "count_windows", "--measurement-request-count", "8",
                   "--stability-percentage", "1000", "--max-trials", "4"]


def loose_perf_settings(**kw):
    """`PerfSettings` equivalent of LOOSE_PERF_ARGS (retries at 10x and 100x the bound)."""
    from repo_gen.perf.analyzer import PerfSettings

    base = dict(measurement_mode="count_windows", request_count=8, stability_percentage=1000, max_trials=4,
                relax=(10000, 100000))
    return PerfSettings(**{**base, **kw})


# Fixtures that export a real MobileViT, build a real repository, compile plugins/ with nvcc or start
# tritonserver. A test that uses one belongs to the full tier: it is marked `slow` (and `server` for
# a running server) here, so the fast tier (`pytest -m "not slow and not server"`) never pays for
# them, whatever file the test is in.
SLOW_FIXTURES = frozenset({"fp32_repo", "repo_copy", "pipeline_repo", "xxs64", "xxs", "xxs_path", "xxs_plugins",
                           "triton", "pipeline_server", "perf_analyzer", "plan_repo", "kernel_lib"})
SERVER_FIXTURES = frozenset({"triton", "pipeline_server"})


def pytest_collection_modifyitems(config, items):  # noqa: ARG001 - pytest hook signature
    for item in items:
        used = set(getattr(item, "fixturenames", ()))
        if used & SLOW_FIXTURES:
            item.add_marker(pytest.mark.slow)
        if used & SERVER_FIXTURES:
            item.add_marker(pytest.mark.server)


def _need_tritonserver():
    from repo_gen.errors import MissingDependency
    from repo_gen.tools import find_tritonserver

    try:
        return find_tritonserver()
    except MissingDependency as e:
        pytest.skip(str(e))


def serve_without_repo_gen(monkeypatch, cwd: Path) -> None:
    """Servers started after this cannot import repo_gen (not from PYTHONPATH, not from the working
    directory), as in the NGC Triton image: a generated model must run from its own folder."""
    kept = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and not (Path(p) / "repo_gen").is_dir()]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(kept))
    monkeypatch.chdir(cwd)


@pytest.fixture(scope="session")
def fp32_repo(tmp_path_factory) -> Path:
    """A repository with `TEST_MODEL` in FP32 for the onnx and py runtimes (no pipeline)."""
    from repo_gen.build import build
    from repo_gen.config import BuildConfig

    out = tmp_path_factory.mktemp("repo") / "model_repository"
    build(BuildConfig(model=TEST_MODEL, output=out, max_batch=TEST_MAX_BATCH, precisions=("fp32",),
                      runtimes=("onnx", "py"), pipeline=False))
    return out


@pytest.fixture()
def repo_copy(fp32_repo, tmp_path) -> Path:
    """A private copy of `fp32_repo` a test may modify."""
    dst = tmp_path / "model_repository"
    shutil.copytree(fp32_repo, dst)
    return dst


@pytest.fixture(scope="session")
def triton(fp32_repo, tmp_path_factory):
    """A tritonserver serving a copy of `fp32_repo` on free loopback ports (session-wide).

    A copy, because the python backend writes __pycache__ into the repository it serves, and
    other tests compare `fp32_repo` byte for byte with fresh builds.
    """
    _need_tritonserver()
    from repo_gen.triton.server import TritonServer, free_ports

    served = tmp_path_factory.mktemp("served") / "model_repository"
    shutil.copytree(fp32_repo, served)
    server = TritonServer(served, ports=free_ports(), exit_on_error=False)
    server.start(timeout_s=180)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def perf_analyzer():
    from repo_gen.errors import MissingDependency
    from repo_gen.tools import find_perf_analyzer

    try:
        return find_perf_analyzer()
    except MissingDependency as e:
        pytest.skip(str(e))

"""builder.py type-checks with `mypy --strict` against tensorrt-stubs, and the check has teeth.

TensorRT cannot be installed here, so this is what stands between a misspelled TensorRT call
and a user's GPU box. The stubs need repairs first (see tools/trt_typecheck.py); the
second test proves the repaired stubs still reject a wrong method and a wrong keyword.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tools import trt_typecheck as typecheck

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def stubs(tmp_path_factory):
    pytest.importorskip("mypy")
    try:
        return typecheck.prepare_stubs(tmp_path_factory.mktemp("trt-stubs"))
    except Exception as e:  # MissingDependency: tensorrt-stubs not installed
        pytest.skip(str(e))


def test_repairs_are_minimal():
    assert typecheck.repair_line("    def f(self, in: list[int], out: list[int]) -> int:") == \
        "    def f(self, in_: list[int], out: list[int]) -> int:"
    assert typecheck.repair_line("    def g(self, a: int = None, b: int) -> X:") == \
        "    def g(self, a: int = None, b: int = ...) -> X:"
    assert typecheck.repair_bool("    def h(self, x: bool, y: list[bool]) -> bool:") == \
        "    def h(self, x: builtins.bool, y: list[builtins.bool]) -> builtins.bool:"
    assert typecheck.repair_bool("bool: DataType  # value = <DataType.BOOL: 4>") == "bool: DataType  # value = <DataType.BOOL: 4>"


@pytest.mark.slow  # mypy --strict over the TensorRT stubs
def test_builder_passes_mypy_strict(stubs):
    res = typecheck.run_mypy(stubs, cwd=ROOT)
    assert res.returncode == 0, res.stdout + res.stderr


@pytest.mark.slow  # mypy --strict over the TensorRT stubs
def test_wrong_names_are_caught(stubs, tmp_path):
    bad = tmp_path / "bad_builder.py"
    bad.write_text(
        "import tensorrt as trt\n\n\n"
        "def f(builder: trt.Builder, config: trt.IBuilderConfig, cache: trt.ITimingCache) -> None:\n"
        "    builder.create_netwrk(0)\n"
        "    config.set_timing_cache(cache, ignore_mismatches=True)\n"
        "    config.builder_optimisation_level = 3\n"
    )
    res = typecheck.run_mypy(stubs, (str(bad),), cwd=tmp_path)
    assert res.returncode == 1
    assert '"Builder" has no attribute "create_netwrk"' in res.stdout
    assert 'Unexpected keyword argument "ignore_mismatches"' in res.stdout
    assert '"IBuilderConfig" has no attribute "builder_optimisation_level"' in res.stdout

#!/usr/bin/env bash
# Set up a fresh clone (scripts/setup.sh) and run every check CI runs:
# ruff, mypy (TensorRT module strict against tensorrt-stubs), then pytest.
# Extra arguments go to pytest, e.g.  bash scripts/test.sh -m "not slow"
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# shellcheck disable=SC1091
source .venv/bin/activate
echo "== ruff"
ruff check repo_gen tests benchmarks scripts tools
echo "== mypy"
mypy repo_gen
# The TensorRT builder, strict, against (repaired) tensorrt-stubs: catches wrong API names.
python -m tools.trt_typecheck
echo "== pytest"
# Tests that need a GPU or TensorRT live in tests/gpu and skip themselves with the reason.
# 1800 s per test: on a fresh machine the first test that needs the trained digits and detection
# fixtures trains them (cached afterwards), which is slow on 2 cores.
python -m pytest -q -p no:cacheprovider --timeout=1800 "$@"

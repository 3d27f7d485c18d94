#!/usr/bin/env bash
# One-shot, idempotent setup of a fresh clone on Debian 12 / Python 3.11:
# apt packages, the .venv with every Python dependency, and the perf_analyzer
# binary taken out of the tritonclient 2.48 wheel (the last one whose binary runs on glibc 2.36).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PY=${PYTHON:-python3}

need_apt=()
dpkg -s libb64-0d >/dev/null 2>&1 || need_apt+=(libb64-0d)
command -v shellcheck >/dev/null 2>&1 || need_apt+=(shellcheck)
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
  else
    echo "setup: apt packages missing: ${need_apt[*]} (run: sudo apt-get install ${need_apt[*]})" >&2
  fi
fi

if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.repo-gen-req-$(sha256sum requirements.txt pyproject.toml | sha256sum | cut -c1-16)
if [ ! -f "$stamp" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -r requirements.txt 2> >(grep -v "^WARNING: Location" >&2)
  # tensorrt-stubs (type stubs for mypy) declares a dependency on the real tensorrt wheel,
  # which is a download stub that cannot install here: take the stubs alone.
  .venv/bin/python -m pip install -q --no-deps "tensorrt-stubs>=10.13" 2> >(grep -v "^WARNING: Location" >&2)
  .venv/bin/python -m pip install -q --no-deps -e .
  rm -f .venv/.repo-gen-req-*
  touch "$stamp"
fi

# perf_analyzer: download the 2.48 wheel without installing it (its pins clash with pytriton's).
PA_DIR=.venv/opt/perf_analyzer
if [ ! -x "$PA_DIR/perf_analyzer" ]; then
  tmp=$(mktemp -d)
  .venv/bin/python -m pip download -q --no-deps --only-binary=:all: \
    --platform manylinux1_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --python-version 3.11 -d "$tmp" tritonclient==2.48.0
  mkdir -p "$PA_DIR"
  (cd "$tmp" && unzip -q -o tritonclient-2.48.0-*.whl '*/bin/perf_analyzer' -d x)
  cp "$(find "$tmp/x" -name perf_analyzer -type f | head -1)" "$PA_DIR/perf_analyzer"
  chmod 755 "$PA_DIR/perf_analyzer"
  rm -rf "$tmp"
fi
# numpy 2 for one test only (tests/triton/test_numpy2_stub.py): the python-backend stub of tritonserver
# 2.51 with numpy 2 in its environment, as on the GPU machine. Downloaded, never installed in .venv.
NP2_DIR=.venv/opt/numpy2
if ! ls "$NP2_DIR"/numpy-2*.whl >/dev/null 2>&1; then
  .venv/bin/python -m pip download -q --no-deps --only-binary=:all: -d "$NP2_DIR" numpy==2.1.3
fi
echo "setup: ok ($ROOT/.venv)"

#!/usr/bin/env bash
# One call on the GPU machine: build plugins/, run the GPU kernel tests, run the benchmark.
# Everything lands in $OUT (default plugins/build/out): log.txt, junit.xml, bench_kernels.{json,md}.
#   bash plugins/run_on_device.sh [extra bench_kernels.py args]
set -o pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-plugins/build/out}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
{
  echo "== $(date -u +%FT%TZ) $(hostname)"
  nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,temperature.gpu --format=csv
  python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())"
  echo "== build"
  cmake -S plugins -B plugins/build -G Ninja -DCMAKE_CUDA_ARCHITECTURES="80;90" >/dev/null &&
    cmake --build plugins/build -j"$(nproc)" || exit 1
  nm -D --defined-only plugins/build/libmobilevit_plugins.so
  echo "== tests"
  python3 -m pytest tests/gpu/test_kernels.py -q -p no:cacheprovider --junitxml="$OUT/junit.xml" 2>&1 | tail -40
  echo "== bench"
  python3 benchmarks/bench_kernels.py --out "$OUT" "$@"
} 2>&1 | tee "$OUT/log.txt"

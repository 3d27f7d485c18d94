#!/usr/bin/env bash
# The whole GPU benchmark of the torch runtime on a machine that cannot install packages (the H200 here):
#   1. here:  python scripts/pack_triton_gpu.py --output .devcarry/triton-gpu.tar.xz   (tritonserver + perf_analyzer)
#             pip download --no-deps tritonclient==2.66.0 onnx_graphsurgeon==0.6.1 python-rapidjson geventhttpclient \
#               gevent greenlet zope.event zope.interface brotli certifi -d .devcarry/whl   (tritonclient.http needs
#               geventhttpclient: without it the server's readiness check never answers)
#             (for the target's Python), and copy repo_gen/ templates/ benchmarks/ plugins/ scripts/ into .devcarry/
#   2. there: cd .devcarry && OUT=/some/dir bash scripts/run_gpu_bench.sh [PHASES]
# PHASES (default all): build,serve,inprocess,plugins,kernels; the serve phase serves SERVE_CONFIGS in turn
# (default 2xhost, the build's own config; e.g. SERVE_CONFIGS=2xhost,1xhost,2xdevice adds 1 instance and outputs
# left on the GPU, ~3 minutes per config). Results: $OUT/gpu_serving.json,
# $OUT/log.txt, $OUT/kernels/ (bench_kernels), server logs. NVLink multicast stays off in every process.
set -o pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-benchmarks/out/gpu}"
PHASES="${1:-build,serve,inprocess,plugins,kernels}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
if ls whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --upgrade --target /tmp/site whl/*.whl || exit 1
  export PYTHONPATH="$PWD:/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
else
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
if [ -f triton-gpu.tar.xz ]; then
  tar xJf triton-gpu.tar.xz -C /tmp && source /tmp/triton/env.sh || exit 1
fi
{
  echo "== $(date -u +%FT%TZ) phases $PHASES"
  nvidia-smi --query-gpu=name,driver_version,clocks.sm,temperature.gpu --format=csv
  lib="$PWD/plugins/build/libmobilevit_plugins.so"
  has() { echo ",$PHASES," | grep -q ",$1,"; }
  if has build || has plugins || has kernels; then  # first: the build measures our kernels with it (~40 s)
    (cmake -S plugins -B plugins/build -G Ninja -DCMAKE_CUDA_ARCHITECTURES=90 && cmake --build plugins/build -j) \
      >/tmp/plugins-build.log 2>&1 || { echo "plugin library build FAILED:"; tail -20 /tmp/plugins-build.log; }
  fi
  main=$(echo "$PHASES" | tr ',' '\n' | grep -v -x -E "plugins|kernels" | paste -sd, -)
  with_lib=(); [ -f "$lib" ] && with_lib=(--plugin-lib "$lib")
  if [ -n "$main" ]; then
    timeout "${BENCH_TIMEOUT:-400}" python3 benchmarks/bench_gpu_serving.py --out "$OUT" --phases "$main" "${with_lib[@]}" \
      --serve-configs "${SERVE_CONFIGS:-2xhost}"
  fi
  if has plugins && [ -f "$lib" ]; then
    timeout "${PLUGINS_TIMEOUT:-90}" python3 benchmarks/bench_gpu_serving.py --out "$OUT" --phases plugins --plugin-lib "$lib"
  fi
  if has kernels && [ -f "$lib" ]; then
    echo "== bench_kernels"
    timeout "${KERNELS_TIMEOUT:-100}" python3 benchmarks/bench_kernels.py --out "$OUT/kernels" --lib "$lib" --no-compile
  fi
  python3 benchmarks/bench_gpu_serving.py --out "$OUT" --table
} 2>&1 | tee "$OUT/log.txt"

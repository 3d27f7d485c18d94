#!/usr/bin/env bash
# Tuning experiment on the GPU machine: compile the variant library (sm_90 only) and time it.
#   bash benchmarks/experiments/run_variants.sh [ln] [attn]
set -o pipefail
cd "$(dirname "$0")/../.."
OUT="${OUT:-benchmarks/out}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
{
  nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,temperature.gpu --format=csv
  nvcc -O3 -std=c++17 -arch=sm_90 --expt-relaxed-constexpr -Xptxas -v -shared -Xcompiler -fPIC -I plugins \
    -o /tmp/exp_kernels.so benchmarks/experiments/exp_attention.cu benchmarks/experiments/exp_layernorm.cu \
    > "$OUT/ptxas.txt" 2>&1 || { tail -50 "$OUT/ptxas.txt"; exit 1; }
  grep -A2 "SingleTile\|layerNormVec" "$OUT/ptxas.txt" | grep -E "registers|spill" | sort | uniq -c | head -40
  cuobjdump -sass /tmp/exp_kernels.so | awk '/Function :/{keep = ($3 ~ /SingleTileKernelILi48ELi(4ELi1|1ELi4)ELi8/ || $3 ~ /attentionF16KernelILi48ELi4ELi8ELi1E/)} keep' \
    > "$OUT/sass_attention.txt"
  EXP_LIB=/tmp/exp_kernels.so python3 benchmarks/experiments/kernel_variants.py "$@"
} 2>&1 | tee "$OUT/variants_log.txt"

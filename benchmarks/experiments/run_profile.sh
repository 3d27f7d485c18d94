#!/usr/bin/env bash
# Tuning experiment on the GPU machine: Nsight Compute on chosen attention variants + SASS sizes.
#   bash benchmarks/experiments/run_profile.sh "VARIANT GRID B N HD" ...
cd "$(dirname "$0")/../.."
OUT="${OUT:-benchmarks/out}"
mkdir -p "$OUT"
lib=/tmp/exp_kernels.so
[ -f $lib ] || nvcc -O3 -std=c++17 -arch=sm_90 --expt-relaxed-constexpr -shared -Xcompiler -fPIC -I plugins \
    -o $lib benchmarks/experiments/exp_attention.cu benchmarks/experiments/exp_layernorm.cu || exit 1
cuobjdump -sass $lib > /tmp/sass.txt
awk '/Function :/{name=$3} /^        \/\*[0-9a-f]+\*\//{n[name]++} END{for (k in n) print n[k], k}' /tmp/sass.txt \
  | grep -i attentionF16 | sort -k2 > "$OUT/sass_sizes.txt"
for cfg in "$@"; do
  set -- $cfg
  echo "=== variant $1 grid $2 B=$3 N=$4 hd=$5"
  EXP_LIB=$lib ncu --clock-control none --cache-control none -k regex:attentionF16 --launch-skip 4 --launch-count 1 \
    --section SpeedOfLight --section WarpStateStats --section Occupancy --section LaunchStats \
    --section SchedulerStats --section MemoryWorkloadAnalysis \
    --metrics regex:smsp__average_warps_issue_stalled_.*_per_issue_active\.ratio,smsp__inst_executed.sum,smsp__cycles_active.avg \
    python3 benchmarks/experiments/profile_variants.py "$@" 2>&1 \
    | grep -E "Duration|Elapsed Cycles|SM Frequency|DRAM Throughput|Memory Throughput|Compute \(SM\)|Achieved Occupancy|Registers Per|Issued Warp|No Eligible|Active Warps Per|Eligible Warps|Warp Cycles Per Issued|Stall|stall|L1/TEX Hit|L2 Hit|Mem Busy|Max Bandwidth|Block Limit|Waves|issue_stalled|inst_executed|cycles_active" \
    | sed 's/^ *//' | grep -v " 0$" | head -60
done

#!/usr/bin/env bash
# The main job on a fresh clone, one command:
#   set up (scripts/setup.sh) -> train mobilevit_xxs on scikit-learn's digits (or reuse it from the
#   cache) -> repo-gen build of that TRAINED model with its own labels (fp32/fp16/int8) -> repo-gen
#   build of the performance demo (default: mobilevit_s, UNTRAINED random weights) -> repo-gen serve
#   -> classify held-out digits through mobilevit_xxs_pipeline -> served top-1 per precision over the
#   whole held-out split next to ONNX Runtime's -> a photo through the demo's pipeline -> short
#   perf_analyzer measurement (repo-gen bench) -> stop the server.
# Environment: MODEL (perf demo, default mobilevit_s), OUT (default model_repository); any extra
# arguments are passed to the demo's `repo-gen build` (e.g. --weights ckpt.pth).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# shellcheck disable=SC1091
source .venv/bin/activate
MODEL=${MODEL:-mobilevit_s}
OUT=${OUT:-model_repository}
HTTP=${HTTP_PORT:-8000}; GRPC=${GRPC_PORT:-8001}; METRICS=${METRICS_PORT:-8002}

DIGITS=mobilevit_xxs
WORK=$(mktemp -d -t repo-gen-quickstart.XXXXXX)

repo-gen doctor
echo "== the trained model: $DIGITS on scikit-learn's digits (trained once, then reused from the cache)"
python scripts/train_digits_fixture.py --write-eval "$WORK/heldout"
python scripts/train_digits_fixture.py --write-calib "$WORK/calib" --count 256
CKPT=$(python -c "from repo_gen.fixtures.digits import default_checkpoint; print(default_checkpoint())")
# Class names ("0".."9") and the 64x64 preprocessing come from the checkpoint itself.
repo-gen build --model "$DIGITS" --weights "$CKPT" --output "$OUT" --precisions fp32,fp16,int8 \
  --calib-dir "$WORK/calib" --calib-count 256 --eval-dir "$WORK/heldout" --eval-count 540
echo "== the performance demo: $MODEL (UNTRAINED unless you pass --weights)"
# FP32 and FP16 only: INT8 of random weights cannot pass the INT8 gate (top-1 agreement with FP32 means
# nothing on a random model, and the fallback search then runs for many minutes); INT8 is shown above
# on the trained model. Pass --precisions fp32,fp16,int8 (after --weights) to build it anyway.
repo-gen build --model "$MODEL" --output "$OUT" --precisions fp32,fp16 "$@"

LOG=$(mktemp -t repo-gen-serve.XXXXXX.log)
repo-gen serve --model-repository "$OUT" --http-port "$HTTP" --grpc-port "$GRPC" --metrics-port "$METRICS" >"$LOG" 2>&1 &
SERVER=$!
# SIGTERM, not SIGINT: a job started with & in a non-interactive shell ignores SIGINT, so the
# server would never stop; `repo-gen serve` handles SIGTERM like Ctrl-C (stops tritonserver).
trap 'kill -TERM "$SERVER" 2>/dev/null; wait "$SERVER" 2>/dev/null || true' EXIT
for _ in $(seq 1 300); do
  if curl -sf "http://127.0.0.1:$HTTP/v2/health/ready" >/dev/null; then break; fi
  if ! kill -0 "$SERVER" 2>/dev/null; then cat "$LOG"; echo "quickstart: server failed to start" >&2; exit 1; fi
  sleep 1
done
cat "$LOG"

echo "== held-out digits through ${DIGITS}_pipeline (the folder name is the true class)"
mapfile -t DIGIT_FILES < <(for d in 0 2 3 5 7 9; do find "$WORK/heldout/$d" -name '*.png' | sort | head -1; done)
repo-gen classify "${DIGIT_FILES[@]}" --url "127.0.0.1:$GRPC" --model "${DIGITS}_pipeline" --top-k 3

echo "== top-1 over the whole held-out split: served through Triton vs ONNX Runtime in process, same graphs"
python scripts/digits_accuracy.py --model-repository "$OUT" --url "127.0.0.1:$GRPC" \
  --models "${DIGITS}_py_fp32,${DIGITS}_py_fp16,${DIGITS}_py_int8"

PHOTO=$(mktemp -t repo-gen-photo.XXXXXX.jpg)
python - "$PHOTO" <<'PY'
import sys
from PIL import Image
from skimage import data
Image.fromarray(data.chelsea()).save(sys.argv[1], quality=92)  # a real photo of a cat
PY
echo "== a real photo (scikit-image's 'chelsea', a tabby cat) through ${MODEL}_pipeline: UNTRAINED weights, so the names are meaningless"
repo-gen classify "$PHOTO" --url "127.0.0.1:$GRPC" --model "${MODEL}_pipeline" --top-k 5

echo "== short perf_analyzer measurement"
repo-gen bench --model-repository "$OUT" --url "127.0.0.1:$GRPC" --models "${MODEL}_py_fp32" \
  --concurrency 1,4 --measurement-mode count_windows --measurement-request-count 60 --max-trials 6 \
  --output "bench-quickstart"
rm -rf "$PHOTO" "$WORK"
echo "quickstart: done (repository: $OUT, bench report: bench-quickstart/report.md)"

#!/usr/bin/env bash
# The main job on a fresh clone, one command:
#   set up (scripts/setup.sh) -> repo-gen build (default: mobilevit_s, fp32/fp16/int8, every
#   runtime, the image pipeline) -> repo-gen serve -> classify a real photo through Triton ->
#   short perf_analyzer measurement (repo-gen bench) -> stop the server.
# Environment: MODEL (default mobilevit_s), OUT (default model_repository), any extra
# arguments are passed to `repo-gen build` (e.g. --weights ckpt.pth).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# shellcheck disable=SC1091
source .venv/bin/activate
MODEL=${MODEL:-mobilevit_s}
OUT=${OUT:-model_repository}
HTTP=${HTTP_PORT:-8000}; GRPC=${GRPC_PORT:-8001}; METRICS=${METRICS_PORT:-8002}

repo-gen doctor
repo-gen build --model "$MODEL" --output "$OUT" "$@"

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

PHOTO=$(mktemp -t repo-gen-photo.XXXXXX.jpg)
python - "$PHOTO" <<'PY'
import sys
from PIL import Image
from skimage import data
Image.fromarray(data.chelsea()).save(sys.argv[1], quality=92)  # a real photo of a cat
PY
echo "== classify a real photo (scikit-image's 'chelsea', a tabby cat) through ${MODEL}_pipeline"
repo-gen classify "$PHOTO" --url "127.0.0.1:$GRPC" --model "${MODEL}_pipeline" --top-k 5

echo "== short perf_analyzer measurement"
repo-gen bench --model-repository "$OUT" --url "127.0.0.1:$GRPC" --models "${MODEL}_py_fp32" \
  --concurrency 1,4 --measurement-mode count_windows --measurement-request-count 60 --max-trials 6 \
  --output "bench-quickstart"
rm -f "$PHOTO"
echo "quickstart: done (repository: $OUT, bench report: bench-quickstart/report.md)"

#!/usr/bin/env bash
# Load benchmark of `tunekit serve` (with and without dynamic batching) and the Python
# reference server (tools/serve_torch.py), on loopback only, bounded in time.
#   bench/serve-load.sh [MODEL_DIR] [SECONDS_PER_POINT]
# Needs: wrk (Debian package), python3 with torch, transformers, fastapi, uvicorn.
set -euo pipefail
cd "$(dirname "$0")/.."
model="${1:-runs/mr-sentiment/model}"
secs="${2:-10}"
bin=./target/release/tunekit
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

wait_up() { for _ in $(seq 1 300); do curl -sf "http://127.0.0.1:$1/health" >/dev/null && return 0; sleep 0.2; done; echo "server on $1 did not start" >&2; exit 1; }

point() { # name port concurrency seconds
  local t=2; [ "$3" -lt 2 ] && t=1
  local out
  out="$(wrk -t"$t" -c"$3" -d"$4"s --timeout 30s -s bench/predict.lua "http://127.0.0.1:$2")"
  local rps p50 p99 bad non2xx
  rps="$(awk '/Requests\/sec/ {print $2}' <<<"$out")"
  p50="$(awk '/^P50_MS/ {print $2}' <<<"$out")"
  p99="$(awk '/^P99_MS/ {print $2}' <<<"$out")"
  bad="$(awk '/^BAD_RESPONSES/ {print $2}' <<<"$out")"
  non2xx="$(awk '/Non-2xx/ {print $NF}' <<<"$out")"
  printf '| %s | %s | %s | %s | %s | %s | %s |\n' "$1" "$3" "$rps" "$p50" "$p99" "${non2xx:-0}" "$bad"
}

rss_mib() { awk '/VmHWM/ {printf "%.0f", $2/1024}' "/proc/$1/status"; }

echo "| server | concurrency | requests/s | p50 ms | p99 ms | non-2xx | bad responses |"
echo "|---|---|---|---|---|---|---|"
for mode in batching no-batching; do
  if [ "$mode" = batching ]; then flags=(--max-batch-size 32 --max-wait-ms 5); else flags=(--max-batch-size 1 --max-wait-ms 0); fi
  RUST_LOG=warn "$bin" serve --model "$model" --addr 127.0.0.1:18080 "${flags[@]}" & pid=$!; pids+=("$pid")
  wait_up 18080
  for c in 1 8 64; do point "tunekit ($mode)" 18080 "$c" "$secs"; done
  echo "<!-- tunekit $mode peak RSS: $(rss_mib "$pid") MiB -->"
  kill "$pid"; wait "$pid" 2>/dev/null || true
done
python3 tools/serve_torch.py --model "$model" --port 18081 2>/dev/null & pid=$!; pids+=("$pid")
wait_up 18081
for c in 1 8 64; do point "FastAPI + transformers pipeline" 18081 "$c" "$secs"; done
echo "<!-- python peak RSS: $(rss_mib "$pid") MiB -->"

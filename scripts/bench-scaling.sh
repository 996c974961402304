#!/usr/bin/env bash
# Scaling rows of docs/benchmarks.md (issue "CPU speed on every machine", parts 3–4): tunekit's
# `bench` beside tools/bench_torch.py (sdpa attention) for MiniLM and the BERT-base preset at
# 32×64, 16×256 and 8×512 tokens, training step and inference, one after the other, then the
# cores' FMA peak. One JSON line per (model, shape, step|infer). Needs a release build
# (`cargo build --release`) and the assets. 2 threads each unless THREADS says otherwise.
#   scripts/bench-scaling.sh [STEPS]     (timed iterations per line, default 6)
set -euo pipefail
cd "$(dirname "$0")/.."
steps="${1:-6}"
threads="${THREADS:-2}"
export RAYON_NUM_THREADS="$threads"
./target/release/bench --threads "$threads" peak
for model in minilm base; do
  if [ "$model" = base ]; then sel=(--preset base); else sel=(--model assets/models/all-MiniLM-L6-v2); fi
  for shape in 32x64 16x256 8x512; do
    b="${shape%x*}"; s="${shape#*x}"
    for what in step infer; do
      t=$(./target/release/bench "${sel[@]}" --batch "$b" --seq "$s" --steps "$steps" --warmup 1 "$what" 2>/dev/null | tail -1)
      p=$(python3 tools/bench_torch.py "$what" "${sel[@]}" --batch "$b" --seq "$s" --steps "$steps" --warmup 1 --threads "$threads" 2>/dev/null | tail -1)
      echo "{\"model\": \"$model\", \"shape\": \"$shape\", \"what\": \"$what\", \"tunekit\": $t, \"torch\": $p}"
    done
  done
done

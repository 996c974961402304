#!/usr/bin/env bash
# Per-architecture rows of docs/benchmarks.md ("Architectures (issue 18)"): tunekit's `bench`
# beside tools/bench_torch.py on the same model directories, one after the other, printing one
# JSON line per (model, step|infer). Needs a release build (`cargo build --release`), the
# assets, and the MiniLM-sized models of `python3 tools/make_bench_models.py`.
#   scripts/bench-arch.sh [MODELS_DIR]   (default /tmp/tunekit-bench-models)
set -euo pipefail
cd "$(dirname "$0")/.."
models="${1:-/tmp/tunekit-bench-models}"
for m in assets/models/all-MiniLM-L6-v2 "$models"/{roberta,distilbert,electra,mpnet,deberta-v2,modernbert}; do
  for what in step infer; do
    extra=()
    [ "$what" = infer ] && extra=(--batch 32)
    t=$(./target/release/bench --model "$m" "${extra[@]}" "$what" 2>/dev/null | tail -1)
    p=$(python3 tools/bench_torch.py "$what" "${extra[@]}" --model "$m" --threads 2 2>/dev/null | tail -1)
    echo "{\"model\": \"$m\", \"what\": \"$what\", \"tunekit\": $t, \"torch\": $p}"
  done
done

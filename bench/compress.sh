#!/usr/bin/env bash
# Compression of the MR model (docs/benchmarks.md, "Compression on MR"): structured pruning of
# FFN neurons and attention heads (magnitude and first-order Taylor importance on the
# validation split; with and without one recovery epoch), 50% magnitude
# pruning and int8 quantisation (of the base, the recovered pruned model and the student) of
# runs/mr-report/model (`tunekit train examples/mr-sentiment.toml --run-dir
# runs/mr-report`), compared by `tunekit compress-report` on the MR test split (parameters,
# weights on disk, batch-1 latency over 100 test sentences, batch-32 throughput, accuracy).
# One model after the other on an otherwise idle machine; prints a markdown table.
set -euo pipefail
cd "$(dirname "$0")/.."
TK=target/release/tunekit
BASE=${1:-runs/mr-report/model}
OUT=runs/compress
mkdir -p "$OUT"
# SKIP_PRUNE=1 reuses the pruned models of an earlier run (the recovery epoch takes minutes).
prune() { # name args...
  if [ "${SKIP_PRUNE:-0}" = 1 ] && [ -d "$OUT/$1" ]; then return; fi
  local name=$1; shift
  rm -rf "${OUT:?}/$name"
  "$TK" prune --model "$BASE" --out "$OUT/$name" "$@" --quiet > "$OUT/$name.log" 2>&1
}
prune ffn30 --ffn 0.3
prune heads33 --heads 0.33
prune heads33-ffn30 --heads 0.33 --ffn 0.3
prune heads33-ffn30-rec1 --heads 0.33 --ffn 0.3 --recover-epochs 1
prune sparse50 --sparsity 0.5
CAL=(--importance taylor --calibration assets/data/mr/validation.tsv)
prune heads33-taylor --heads 0.33 "${CAL[@]}"
prune ffn30-taylor --ffn 0.3 "${CAL[@]}"
prune heads33-ffn30-taylor --heads 0.33 --ffn 0.3 "${CAL[@]}"
quantize() { # name model
  rm -rf "${OUT:?}/$1"
  "$TK" quantize --model "$2" --out "$OUT/$1" --quiet > "$OUT/$1.log" 2>&1
}
quantize int8 "$BASE"
quantize heads33-ffn30-rec1-int8 "$OUT/heads33-ffn30-rec1/recover/model"
MODELS=("$BASE" "$OUT/int8" "$OUT/ffn30" "$OUT/ffn30-taylor" "$OUT/heads33" "$OUT/heads33-taylor" "$OUT/heads33-ffn30" "$OUT/heads33-ffn30-taylor" "$OUT/heads33-ffn30-rec1/recover/model" "$OUT/heads33-ffn30-rec1-int8" "$OUT/sparse50")
# The 3-layer distilled student of docs/benchmarks.md "Fine-tuning strategies", when present.
if [ -d runs/mr-student3-distill/model ]; then
  quantize student3-int8 runs/mr-student3-distill/model
  MODELS+=(runs/mr-student3-distill/model "$OUT/student3-int8")
fi
"$TK" compress-report "${MODELS[@]}" --data assets/data/mr/test.tsv --output "$OUT/table.md" --quiet

#!/usr/bin/env bash
# Hyperparameter search on MR with and without pruning (docs/benchmarks.md, "Hyperparameter
# search on MR"): the same 12 random-sampler trials of bench/mr-search.toml, first without a
# pruner, then with the median pruner, one after the other on an otherwise idle machine.
# Usage: bench/search.sh [PRUNERS...]   (default: none median; needs scripts/fetch-assets.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
TK=target/release/tunekit
mkdir -p runs/bench-data
# Every 5th training row: both classes, spread over the whole (polarity-ordered) file.
awk 'NR == 1 || (NR - 2) % 5 == 0' assets/data/mr/train.tsv > runs/bench-data/mr-train-fifth.tsv
PRUNERS=("$@")
[ ${#PRUNERS[@]} -eq 0 ] && PRUNERS=(none median)
for p in "${PRUNERS[@]}"; do
  dir="runs/mr-search-$p"
  rm -rf "$dir"
  /usr/bin/time -f "%e s wall, %M KiB max RSS" -o "/tmp/search-$p.time" \
    "$TK" search bench/mr-search.toml --set "search.pruner=\"$p\"" --run-dir "$dir" --quiet \
    > "/tmp/search-$p.out" 2> "/tmp/search-$p.err"
  echo "== pruner $p: $(cat "/tmp/search-$p.time")"
  cat "$dir/results.md"
done

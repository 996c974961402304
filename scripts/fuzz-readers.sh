#!/usr/bin/env bash
# Long run of the data readers' property tests (crates/tunekit/tests/readers_prop.rs): rounds of
# PROPTEST_CASES cases per property, each round with fresh random seeds, until SECONDS pass.
# Usage: scripts/fuzz-readers.sh [SECONDS=600] [CASES_PER_ROUND=2000]
# Prints rounds, failed rounds and cases run; failing rounds' output is kept in target/fuzz-readers/.
set -euo pipefail
secs=${1:-600}
cases=${2:-2000}
cd "$(dirname "$0")/.."
bin=$(cargo test --release -p tunekit --test readers_prop --no-run --message-format=json 2>/dev/null \
  | python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "readers_prop":
        print(m["executable"])')
out=target/fuzz-readers
mkdir -p "$out"
tests=$("$bin" --list 2>/dev/null | grep -c ': test$')
start=$SECONDS
rounds=0
failed=0
while (( SECONDS - start < secs )); do
  rounds=$((rounds + 1))
  if ! PROPTEST_CASES=$cases "$bin" --test-threads=1 -q >"$out/round.log" 2>&1; then
    failed=$((failed + 1))
    cp "$out/round.log" "$out/failed-$failed.log"
  fi
done
echo "properties=$tests rounds=$rounds failed_rounds=$failed cases=$((rounds * cases * tests)) seconds=$((SECONDS - start))"
(( failed == 0 ))

#!/usr/bin/env bash
# One MR search study run by one worker, then by two worker processes sharing it through a
# throw-away PostgreSQL cluster (docs/benchmarks.md, "Search with several workers").
# Reduced to fit a 2-core machine: bench/mr-search.toml with TRIALS trials (default 6) of
# EPOCHS epochs (default 1). One worker: one process on both cores (2 threads). Two workers:
# two processes pinned to one core each (taskset; 1 thread each).
# Usage: bench/search-workers.sh   (needs scripts/fetch-assets.sh, Debian's postgresql package)
set -euo pipefail
cd "$(dirname "$0")/.."
TK=$PWD/target/release/tunekit
TRIALS="${TRIALS:-6}"
EPOCHS="${EPOCHS:-1}"
PGBIN="${TUNEKIT_PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)}"
mkdir -p runs/bench-data
awk 'NR == 1 || (NR - 2) % 5 == 0' assets/data/mr/train.tsv > runs/bench-data/mr-train-fifth.tsv

# A throw-away cluster on loopback (as the postgres user when root: initdb refuses root).
PGDIR=$(mktemp -d)
AS=()
if [ "$(id -u)" = 0 ]; then chown postgres "$PGDIR"; AS=(runuser -u postgres --); fi
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"${AS[@]}" "$PGBIN/initdb" -D "$PGDIR/data" -U tunekit --auth=trust --no-sync >/dev/null
"${AS[@]}" "$PGBIN/pg_ctl" -D "$PGDIR/data" -l "$PGDIR/log" -w \
  -o "-p $PORT -k $PGDIR -c listen_addresses=127.0.0.1" start >/dev/null
trap '"${AS[@]}" "$PGBIN/pg_ctl" -D "$PGDIR/data" -m immediate stop >/dev/null; rm -rf "$PGDIR"' EXIT
URL="postgresql://tunekit@127.0.0.1:$PORT/postgres"
SET=(--set "search.trials=$TRIALS" --set "train.epochs=$EPOCHS" --quiet)

rm -rf runs/mr-workers-1 runs/mr-workers-2
start=$(date +%s.%N)
"$TK" search bench/mr-search.toml "${SET[@]}" --storage "$URL" --study one \
  --run-dir runs/mr-workers-1 > /tmp/workers-1.out 2>&1
one=$(echo "$(date +%s.%N) - $start" | bc)
echo "== 1 worker (2 threads): ${one} s wall"
cat runs/mr-workers-1/results.md

start=$(date +%s.%N)
taskset -c 0 "$TK" search bench/mr-search.toml "${SET[@]}" --storage "$URL" --study two \
  --run-dir runs/mr-workers-2 > /tmp/workers-2a.out 2>&1 &
a=$!
taskset -c 1 "$TK" search bench/mr-search.toml "${SET[@]}" --storage "$URL" --study two \
  --run-dir runs/mr-workers-2 > /tmp/workers-2b.out 2>&1 &
b=$!
wait "$a" "$b"
two=$(echo "$(date +%s.%N) - $start" | bc)
echo "== 2 workers (1 thread each): ${two} s wall"
cat runs/mr-workers-2/results.md

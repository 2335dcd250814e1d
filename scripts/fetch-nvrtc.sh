#!/usr/bin/env bash
# Installs NVIDIA's NVRTC runtime compiler (the `nvidia-cuda-nvrtc-cu12` PyPI wheel) into a
# private directory and prints the directory that holds `libnvrtc.so*`.
#
# Why: the CUDA backend compiles its kernels with NVRTC at run time. CI machines have no CUDA
# toolkit and no GPU, but NVRTC alone is enough to check that every kernel compiles
# (`tests/cuda_kernels_compile.rs`). Point the tests at the library with
#
#     export EDGEACT_NVRTC_PATH="$(scripts/fetch-nvrtc.sh)"
#
# Usage: scripts/fetch-nvrtc.sh [TARGET_DIR]   (default: target/nvrtc)
# Env:   NVRTC_WHEEL_VERSION (default 12.4.127) to pick another 12.x wheel.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
target="${1:-$root/target/nvrtc}"
version="${NVRTC_WHEEL_VERSION:-12.4.127}"

find_lib() {
    find "$target" -name 'libnvrtc.so*' -not -name '*builtins*' -print -quit 2>/dev/null || true
}

lib="$(find_lib)"
if [[ -z "$lib" ]]; then
    mkdir -p "$target"
    # --no-deps: the wheel is self-contained; --target keeps it out of the user's site-packages.
    python3 -m pip install --quiet --disable-pip-version-check --no-deps \
        --target "$target" "nvidia-cuda-nvrtc-cu12==$version" >&2
    lib="$(find_lib)"
fi
if [[ -z "$lib" ]]; then
    echo "fetch-nvrtc.sh: libnvrtc.so not found under $target after installing the wheel" >&2
    exit 1
fi
dirname "$lib"

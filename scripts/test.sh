#!/usr/bin/env bash
# The test command: formatting, lints, the aarch64 (NEON) build check when that target is
# installed, and the whole test suite including the llama.cpp oracle tests and the MariaDB
# backend tests (a throw-away server on 127.0.0.1, stopped afterwards) and, when
# scripts/setup.sh could set up Podman, the container backend tests; then the fuzz targets for 20 s each (nightly toolchain). Run scripts/setup.sh once first.
set -euo pipefail
cd "$(dirname "$0")/.."
export GGML_NO_BACKTRACE=1
# One build from scratch per run: incremental compilation's caches only cost time and disk here
# (set CARGO_INCREMENTAL=1 to keep them when running this script repeatedly).
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy -D warnings"
cargo clippy --workspace --all-targets --features oracle -- -D warnings

if rustup target list --installed 2>/dev/null | grep -q aarch64-unknown-linux-gnu; then
  echo "== cargo check --target aarch64-unknown-linux-gnu (NEON kernels)"
  cargo check -p edgeact-runtime --target aarch64-unknown-linux-gnu
else
  echo "== skipping the aarch64 check: target aarch64-unknown-linux-gnu is not installed"
fi

mariadb_started=0
if [ "$(id -u)" -eq 0 ] && { command -v mariadbd >/dev/null || [ -x /usr/sbin/mariadbd ]; }; then
  if scripts/ci-mariadb.sh start; then
    mariadb_started=1
    export EDGEACT_TEST_MYSQL=mysql://edgeact:edgeact@127.0.0.1:3306
  fi
fi
trap '[ "$mariadb_started" = 1 ] && scripts/ci-mariadb.sh stop >/dev/null 2>&1 || true' EXIT

if nvrtc_dir="$(scripts/fetch-nvrtc.sh 2>/dev/null)"; then
  export EDGEACT_NVRTC_PATH="$nvrtc_dir"
fi

if command -v podman >/dev/null && podman image inspect edgeact/os-default >/dev/null 2>&1; then
  export EDGEACT_TEST_CONTAINER=podman
else
  echo "== the container backend tests will skip: no podman image edgeact/os-default (scripts/setup-podman.sh)"
fi

echo "== cargo test --workspace --features oracle"
cargo test --workspace --features oracle --no-fail-fast

# The libFuzzer targets of the untrusted formats (GGUF, pickle, safetensors header, chat
# template), a bounded time each; a crash fails the run.
if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  echo "== fuzz targets (scripts/fuzz.sh, 20 s each)"
  bash scripts/fuzz.sh 20
else
  echo "== skipping the fuzz targets: no nightly toolchain (rustup toolchain install nightly)"
fi

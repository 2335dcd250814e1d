#!/usr/bin/env bash
# Builds target/quant_ref: ggml's reference quantizers compiled with unfused float arithmetic
# (-ffp-contract=off), for `tests/oracle/quant.rs`'s ignored test `k_quants_match_unfused_ggml`.
# Needs: gcc, `cargo fetch` done (llama-cpp-sys-2 sources) and the oracle built once
# (`cargo test --features oracle ...`, for libggml-base.a and ggml's generated headers).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
src="$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/llama-cpp-sys-2-0.1.161/llama.cpp/ggml | head -n1)"
lib="$(ls -t "$root"/target/*/build/llama-cpp-sys-2-*/out/lib/libggml-base.a | head -n1)"
build="$(dirname "$(dirname "$lib")")/build/ggml/src"
gcc -O2 -std=gnu11 -w -D_GNU_SOURCE -DNDEBUG -ffp-contract=off \
    -I"$src/src" -I"$src/include" -I"$build" \
    "$root/scripts/quant-ref.c" -o "$root/target/quant_ref" "$lib" -lm -lpthread -lstdc++ -fopenmp
echo "built $root/target/quant_ref; run:"
echo "  EDGEACT_QUANT_REF=$root/target/quant_ref cargo test --features oracle --test oracle quant:: -- --ignored"

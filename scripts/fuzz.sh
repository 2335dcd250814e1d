#!/usr/bin/env bash
# Builds the libFuzzer targets in fuzz/ with the nightly toolchain and runs each for a bounded
# time. Fails (exit 1) when a target crashes, leaking a panic, an abort, a stack overflow, a
# timeout or memory past the limit; the crashing input is kept in fuzz/artifacts/<target>/.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]    (default: 30 seconds each, every target)
#
# Uses cargo-fuzz when installed, otherwise the same sanitizer-coverage RUSTFLAGS it would pass.
# New corpus entries go to fuzz/target/corpus/<target>/; the committed seeds in
# fuzz/corpus/<target>/ are only read.
set -euo pipefail

seconds="${1:-30}"
shift || true
all_targets=(gguf_reader pickle safetensors_header chat_template py_eval)
[[ $# -gt 0 ]] && targets=("$@") || targets=("${all_targets[@]}")

if ! [[ "$seconds" =~ ^[0-9]+$ ]] || [[ "$seconds" -lt 1 ]]; then
    echo "usage: $0 [SECONDS] [TARGET...]  (SECONDS: a positive integer)" >&2
    exit 2
fi
if ! rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
    echo "fuzz.sh: the nightly toolchain is needed (rustup toolchain install nightly)" >&2
    exit 2
fi

root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root/fuzz"
triple="$(rustc +nightly -vV | sed -n 's/^host: //p')"
bin_dir="target/$triple/release"

build_start=$(date +%s)
if cargo +nightly fuzz --help >/dev/null 2>&1; then
    for t in "${targets[@]}"; do
        cargo +nightly fuzz build --release "$t"
    done
else
    export RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing -Cdebug-assertions -Coverflow-checks"
    bins=()
    for t in "${targets[@]}"; do bins+=(--bin "$t"); done
    cargo +nightly build --release --target "$triple" "${bins[@]}"
fi
echo "fuzz.sh: built ${targets[*]} in $(( $(date +%s) - build_start )) s"

failed=()
for t in "${targets[@]}"; do
    run_corpus="target/corpus/$t"
    artifacts="artifacts/$t"
    mkdir -p "$run_corpus" "$artifacts" "corpus/$t"
    echo "fuzz.sh: running $t for $seconds s"
    # -rss_limit_mb and -timeout turn a memory blow-up or a hang into a failure too;
    # -max_len keeps inputs near the size of real headers and programs.
    if ! "$bin_dir/$t" "$run_corpus" "corpus/$t" \
        -max_total_time="$seconds" -max_len=65536 -timeout=10 -rss_limit_mb=2048 \
        -artifact_prefix="$artifacts/" -print_final_stats=1 2>"target/$t.log"; then
        failed+=("$t")
        tail -n 40 "target/$t.log" >&2
    else
        grep -E '^stat::(number_of_executed_units|new_units_added)|^Done' "target/$t.log" | sed "s/^/fuzz.sh: $t: /" || true
    fi
done

if [[ ${#failed[@]} -gt 0 ]]; then
    echo "fuzz.sh: crashes in: ${failed[*]} (inputs in fuzz/artifacts/)" >&2
    exit 1
fi
echo "fuzz.sh: no crash in ${targets[*]} ($seconds s each)"

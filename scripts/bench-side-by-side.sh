#!/bin/sh
# Whole-model speed of edgeact beside llama.cpp (through the oracle member), one run, one
# machine: pp and tg tokens/s for each model and thread count, edgeact from the mapping and
# with --repack, llama.cpp with its default repacking and with --no-repack. Prints the raw
# tables; README.md's figures come from this script.
# usage: scripts/bench-side-by-side.sh MODEL.gguf [THREADS...]
#   env: PP (default 512), TG (default 128), REPS (default 2)
set -eu
model=$1
shift
threads=${*:-1 2}
pp=${PP:-512}
tg=${TG:-128}
reps=${REPS:-2}
cargo build --release --quiet
cargo build --release --quiet --features oracle --example llama_cpp_bench
bin=target/release
echo "# $(basename "$model") pp$pp tg$tg, $reps repetitions, $(date -u +%FT%TZ), load $(cut -d' ' -f1-3 /proc/loadavg)"
for t in $threads; do
    $bin/edgeact bench -m "$model" -p "$pp" -n "$tg" -t "$t" -r "$reps" 2>/dev/null | tail -n +3 | sed 's/^/edgeact          /'
    $bin/edgeact bench -m "$model" -p "$pp" -n "$tg" -t "$t" -r "$reps" --repack 2>/dev/null | tail -n +3 | sed 's/^/edgeact --repack /'
    $bin/examples/llama_cpp_bench -m "$model" -p "$pp" -n "$tg" -t "$t" -r "$reps" 2>/dev/null | tail -n +3
    $bin/examples/llama_cpp_bench -m "$model" -p "$pp" -n "$tg" -t "$t" -r "$reps" --no-repack 2>/dev/null | tail -n +3
done
echo "# load after: $(cut -d' ' -f1-3 /proc/loadavg)"

#!/bin/sh
# Whole-model speed of edgeact beside llama.cpp (through the oracle member), one run, one
# machine: pp and tg tokens/s for each model and thread count, edgeact from the mapping and
# with --repack, llama.cpp with its default repacking and with --no-repack. Prints the raw
# tables and appends them to bench/runs/<UTC date>-<machine>.md (a dated record of the run);
# README.md's figures come from these files.
# usage: scripts/bench-side-by-side.sh MODEL.gguf [THREADS...]
#   env: PP (default 512), TG (default 128), REPS (default 2), RUNS_DIR (default bench/runs)
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
cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1 | tr -cs 'A-Za-z0-9' '-' | sed 's/-*$//')
runs_dir=${RUNS_DIR:-bench/runs}
mkdir -p "$runs_dir"
record="$runs_dir/$(date -u +%F)-$(nproc)core-${cpu:-unknown}.md"
[ -s "$record" ] || printf '# Side-by-side runs, %s, %s CPUs (%s)\n\nRaw output of scripts/bench-side-by-side.sh; t/s.\n' \
    "$(date -u +%F)" "$(nproc)" "${cpu:-unknown CPU}" >"$record"
{
echo
echo '```'
echo "# $(basename "$model") pp$pp tg$tg, $reps repetitions, $(date -u +%FT%TZ), load $(cut -d' ' -f1-3 /proc/loadavg)"
for t in $threads; do
    $bin/edgeact bench -m "$model" -p "$pp" -n "$tg" -t "$t" -r "$reps" 2>/dev/null | tail -n +3 | sed 's/^/edgeact          /'
    $bin/edgeact bench -m "$model" -p "$pp" -n "$tg" -t "$t" -r "$reps" --repack 2>/dev/null | tail -n +3 | sed 's/^/edgeact --repack /'
    $bin/examples/llama_cpp_bench -m "$model" -p "$pp" -n "$tg" -t "$t" -r "$reps" 2>/dev/null | tail -n +3
    $bin/examples/llama_cpp_bench -m "$model" -p "$pp" -n "$tg" -t "$t" -r "$reps" --no-repack 2>/dev/null | tail -n +3
done
echo "# load after: $(cut -d' ' -f1-3 /proc/loadavg)"
echo '```'
} | tee -a "$record"
echo "recorded in $record" >&2

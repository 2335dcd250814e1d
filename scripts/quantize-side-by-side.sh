#!/bin/sh
# Whole-model quantization time of `edgeact quantize` beside llama.cpp's `llama_model_quantize`
# (through the oracle member's llama_quantize example), same input GGUF, same thread count, one
# machine, one run; then whether the two outputs hold the same tensor types and bytes
# (scripts/gguf-tensor-diff.py). Prints the table and appends it to
# bench/runs/<UTC date>-<machine>.md, as scripts/bench-side-by-side.sh does.
# usage: scripts/quantize-side-by-side.sh MODEL-F16.gguf [THREADS]      (THREADS default 2)
#   env: TYPES (default "q4_0 q4_k_m"), OUT_DIR (default target/quantize-side-by-side; the
#   outputs are deleted after the comparison unless KEEP=1), RUNS_DIR (default bench/runs).
#   BENCH=1 first runs the block-quantizer criterion bench (benches/quantize.rs: ours beside
#   ggml_quantize_chunk, one thread) and records its times and ratios in the same block.
# A 7B-shaped F16 input: python3 scripts/make-7b-checkpoint.py DIR [--layers N], then
# `edgeact quantize DIR -o model-f16.gguf --type f16` (docs/quantize.md#speed).
set -eu
in=$1
threads=${2:-2}
types=${TYPES:-q4_0 q4_k_m}
out=${OUT_DIR:-target/quantize-side-by-side}
here=$(dirname "$0")
cargo build --release --quiet --bin edgeact
cargo build --release --quiet -p edgeact-oracle --example llama_quantize
bin=target/release
mkdir -p "$out"
. "$(dirname "$0")/lib/run-record.sh"
# Read the input once so that neither tool pays for the cold page cache.
cat "$in" >/dev/null
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
{
echo
echo '```'
echo "# quantize-side-by-side: $(basename "$in") ($(du -h "$in" | cut -f1)), $threads thread(s), $(date -u +%FT%TZ), load $(cut -d' ' -f1-3 /proc/loadavg)"
if [ "${BENCH:-0}" = 1 ]; then
    echo "# block quantizers, 4096 x 256 f32, 1 thread (cargo bench --features oracle --bench quantize), load $(cut -d' ' -f1-3 /proc/loadavg)"
    GGML_NO_BACKTRACE=1 cargo bench --quiet --features oracle --bench quantize 2>/dev/null | awk '
        function secs(v, u) { return u == "ns" ? v / 1e9 : (u == "µs" || u == "us") ? v / 1e6 : u == "ms" ? v / 1e3 : v }
        /^quantize_/ { split($1, p, "/"); who = p[2]; ty = p[3]; if (!(ty in seen)) { seen[ty] = 1; order[n++] = ty } }
        /time:/ && ty != "" && !($0 ~ /%/) { gsub(/[\[\]]/, ""); t[who, ty] = secs($4, $5) }
        END {
            print "| type | edgeact | ggml | ggml time / edgeact time |"
            print "|---|---:|---:|---:|"
            for (i = 0; i < n; i++) { k = order[i]
                printf "| %s | %.3f ms | %.3f ms | %.2fx |\n", k, t["edgeact", k] * 1e3, t["ggml", k] * 1e3, t["ggml", k] / t["edgeact", k] }
        }'
fi
echo "| type | edgeact s | llama.cpp s | edgeact / llama.cpp | edgeact peak RSS | llama.cpp peak RSS | tensors |"
echo "|---|---:|---:|---:|---:|---:|---|"
for ty in $types; do
    ours="$out/edgeact-$ty.gguf"
    theirs="$out/llama-$ty.gguf"
    /usr/bin/time -f '%e %M' -o "$tmp/ours" "$bin/edgeact" quantize "$in" -o "$ours" --type "$ty" --threads "$threads" --quiet >"$tmp/ours.log" 2>&1
    /usr/bin/time -f '%e %M' -o "$tmp/theirs" "$bin/examples/llama_quantize" "$in" "$theirs" "$ty" "$threads" >"$tmp/theirs.log" 2>&1
    read -r ours_s ours_kb <"$tmp/ours"
    read -r theirs_s theirs_kb <"$tmp/theirs"
    if python3 "$here/gguf-tensor-diff.py" "$ours" "$theirs" >"$tmp/diff"; then same="identical"; else same="DIFFER"; fi
    awk -v ty="$ty" -v a="$ours_s" -v b="$theirs_s" -v ra="$ours_kb" -v rb="$theirs_kb" -v same="$same" \
        'BEGIN { printf "| %s | %.1f | %.1f | %.2fx | %d MiB | %d MiB | %s |\n", ty, a, b, a / b, ra / 1024, rb / 1024, same }'
    sed "s/^/#   $ty: /" "$tmp/diff"
    [ "${KEEP:-0}" = 1 ] || rm -f "$ours" "$theirs"
done
echo "# load after: $(cut -d' ' -f1-3 /proc/loadavg)"
echo '```'
} | tee -a "$record"
echo "recorded in $record" >&2

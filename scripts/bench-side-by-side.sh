#!/bin/sh
# Whole-model speed of edgeact beside llama.cpp (through the oracle member), one run, one
# machine: pp and tg tokens/s for each model and thread count, edgeact by default (the weight
# types whose repacked kernels measured faster are repacked), with --no-repack (everything in
# the mapping) and with --repack (every Q4_0/Q4_K matrix), llama.cpp with its default
# repacking and with --no-repack; then exec -> first token (a 2-token prompt, one token, warm
# page cache; best of REPS) of each of those five and of edgeact --repack-cache (the repacked
# weights mapped from the repack cache, which the first of those runs writes). Prints the raw
# tables and appends them to bench/runs/<UTC date>-<machine>.md (a dated record of the run);
# README.md's figures come from these files.
# usage: scripts/bench-side-by-side.sh MODEL.gguf [THREADS...]
#   env: PP (default 512), TG (default 128), REPS (default 2), RUNS_DIR (default bench/runs)
#   DEPTHS (default 0): context depths, comma-separated, as llama-bench's -d: each pp/tg test
#   also runs after that many tokens already in the KV cache (rows `pp512 @ d3072`), ours and
#   llama.cpp's (flash attention on, its default) in the same run; DEPTHS=0,3072 for agent-like
#   contexts (the model's context must hold depth + PP and depth + TG).
#   The tg roofline: scripts/membw.c's read bandwidth with 1 thread and with each thread count
#   is printed beside the figures as tg t/s <= bandwidth / bytes read per generated token
#   (every weight except token_embd, plus the F16 KV cache at the depth). This VM's bandwidth
#   swings by 10-30 % within minutes, so each thread count's engines run between two reads
#   of it, and its roofline uses the mean of those and one more at the end (all printed).
#   Batched decode (off by default): BATCHED=1 adds, for each thread count, `edgeact bench
#   --parallel` (from the mapping and with --repack) and the oracle's `--parallel` (llama.cpp's
#   default repacking) over PARALLEL (default 1,2,4,8,16) sequences decoding BATCHED_TG
#   (default 32) tokens each, and a table of aggregate t/s with the ratios "at P / at 1" and
#   "ours / llama.cpp"; BATCHED=only runs just that section.
#   On CPUs with AMX-INT8 the oracle's llama.cpp "default" leaves out ggml's AMX buffer type
#   (its matmul crashed in every prompt batch on an Intel Xeon VM) and keeps CPU_REPACK; a
#   tg-only row `(AMX)` at depth 0 then adds llama.cpp's default untouched, whose decode runs
#   (filling a context to a depth is a prompt batch).
#   EDGEACT_KERNELS=avx2 (or scalar) in the environment runs edgeact's kernels of that path
#   (the header line says so); llama.cpp keeps its own.
#   ROUNDS (default 1): each thread count runs the engines ROUNDS times in turn (every engine
#   once, then every engine again, ...; rows tagged `round N/M` when ROUNDS > 1), so the VM's
#   drift over minutes touches every engine alike: compare an engine with the others of its
#   round, and across rounds, rather than trusting one block of repetitions.
set -eu
model=$1
shift
threads=${*:-1 2}
pp=${PP:-512}
tg=${TG:-128}
reps=${REPS:-2}
batched=${BATCHED:-0}
parallel=${PARALLEL:-1,2,4,8,16}
batched_tg=${BATCHED_TG:-32}
depths=${DEPTHS:-0}
rounds=${ROUNDS:-1}
case $rounds in
''|*[!0-9]*|0) echo "ROUNDS must be a positive integer, not '$rounds'" >&2; exit 2 ;;
esac
cargo build --release --quiet
cargo build --release --quiet --features oracle --example llama_cpp_bench
bin=target/release
mkdir -p target
cc -O3 -march=native -ffast-math -fopenmp scripts/membw.c -o target/membw
. "$(dirname "$0")/lib/run-record.sh"
{
echo
echo '```'
if [ "$batched" != only ]; then
echo "# $(basename "$model") pp$pp tg$tg depths $depths, $reps repetitions, $(date -u +%FT%TZ), load $(cut -d' ' -f1-3 /proc/loadavg)${EDGEACT_KERNELS:+, EDGEACT_KERNELS=$EDGEACT_KERNELS}"
# Read bandwidth (GB/s) with $1 threads; appended to $bw_log as "threads GB/s".
bw_log=$(mktemp)
read_bw() {
    target/membw 1024 "$1" | sed -n "s/.*read \([0-9.]*\) GB\/s.*/$1 \1/p" | tee -a "$bw_log" | cut -d' ' -f2
}
# Appends the round's tag ($tag, empty with one round) to each row.
tagged() {
    sed "s|\$|$tag|"
}
for t in $threads; do
    echo "membw $t thread(s) before: $(read_bw "$t") GB/s"
    for round in $(seq 1 "$rounds"); do
        tag=
        if [ "$rounds" -gt 1 ]; then
            tag=" round $round/$rounds"
        fi
        $bin/edgeact bench -m "$model" -p "$pp" -n "$tg" -d "$depths" -t "$t" -r "$reps" --device cpu 2>/dev/null | tail -n +3 | sed 's/^/edgeact             /' | tagged
        $bin/edgeact bench -m "$model" -p "$pp" -n "$tg" -d "$depths" -t "$t" -r "$reps" --device cpu --no-repack 2>/dev/null | tail -n +3 | sed 's/^/edgeact --no-repack /' | tagged
        $bin/edgeact bench -m "$model" -p "$pp" -n "$tg" -d "$depths" -t "$t" -r "$reps" --device cpu --repack 2>/dev/null | tail -n +3 | sed 's/^/edgeact --repack    /' | tagged
        $bin/examples/llama_cpp_bench -m "$model" -p "$pp" -n "$tg" -d "$depths" -t "$t" -r "$reps" 2>/dev/null | tail -n +3 | tagged
        $bin/examples/llama_cpp_bench -m "$model" -p "$pp" -n "$tg" -d "$depths" -t "$t" -r "$reps" --no-repack 2>/dev/null | tail -n +3 | tagged
        if grep -qw amx_int8 /proc/cpuinfo; then
            $bin/examples/llama_cpp_bench -m "$model" -p 0 -n "$tg" -t "$t" -r "$reps" --amx 2>/dev/null | tail -n +3 | tagged
        fi
        if [ "$round" -lt "$rounds" ]; then
            echo "membw $t thread(s) after round $round: $(read_bw "$t") GB/s"
        fi
    done
    echo "membw $t thread(s) after: $(read_bw "$t") GB/s"
done
# exec -> first token, warm page cache (one untimed run first), best of $reps, at the most threads.
t_max=$(printf '%s\n' $threads | sort -n | tail -n 1)
cat "$model" >/dev/null
# Prints "N ms from exec", or "failed (exit S)" if the engine fails (the run goes on: an engine
# that crashes on this CPU leaves its rows out, as the pp/tg tests above do).
first_token() {
    best=
    for _ in $(seq 0 "$reps"); do
        start=$(date +%s%N)
        status=0
        "$@" >/dev/null 2>&1 || status=$?
        if [ "$status" -ne 0 ]; then
            echo "failed (exit $status)"
            return 0
        fi
        ms=$(( ($(date +%s%N) - start) / 1000000 ))
        [ -z "$best" ] || [ "$ms" -lt "$best" ] && best=$ms
    done
    echo "$best ms from exec"
}
# --repack-cache maps the repacked weights from the repack cache (its first run writes it).
for engine in "edgeact" "edgeact --repack-cache" "edgeact --no-repack" "edgeact --repack" "llama.cpp" "llama.cpp --no-repack"; do
    case $engine in
    edgeact*) flag=${engine#edgeact}; ms=$(first_token $bin/edgeact run -m "$model" -p hi -n 1 -t "$t_max" --device cpu $flag) ;;
    llama.cpp*) flag=${engine#llama.cpp}; ms=$(first_token $bin/examples/llama_cpp_bench -m "$model" -t "$t_max" --first-token $flag) ;;
    esac
    echo "first token: $engine, $t_max thread(s): $ms"
done
# Roofline of tg: bandwidth / bytes read per generated token.
bytes=$(python3 scripts/gguf-bytes-per-token.py "$model" "$depths")
for t in $(printf '1\n%s\n' $threads | sort -nu); do
    read_bw "$t" >/dev/null
    reads=$(awk -v t="$t" '$1 == t { printf "%s%s", sep, $2; sep = " " }' "$bw_log")
    bw=$(echo "$reads" | awk '{ s = 0; for (i = 1; i <= NF; i++) s += $i; printf "%.2f", s / NF }')
    echo "$bytes" | awk -v bw="$bw" -v t="$t" -v reads="$reads" '{ printf "roofline %d thread(s): read %s GB/s (mean of %s), depth %s: %.3f GB per token -> tg <= %.2f t/s\n", t, bw, reads, $1, $2 / 1e9, bw * 1e9 / $2 }'
done
rm "$bw_log"
fi
if [ "$batched" != 0 ]; then
echo "# $(basename "$model") batched decode tg$batched_tg x{$parallel}, $reps repetitions, $(date -u +%FT%TZ), load $(cut -d' ' -f1-3 /proc/loadavg)"
tmp=$(mktemp -d)
for t in $threads; do
    # Raw rows, then "test<TAB>mean t/s" of each engine for the table.
    $bin/edgeact bench -m "$model" -p 0 -n "$batched_tg" -t "$t" -r "$reps" --parallel "$parallel" --device cpu 2>/dev/null |
        tail -n +3 | tee "$tmp/e.raw" | sed 's/^/edgeact          /'
    $bin/edgeact bench -m "$model" -p 0 -n "$batched_tg" -t "$t" -r "$reps" --parallel "$parallel" --device cpu --repack 2>/dev/null |
        tail -n +3 | tee "$tmp/r.raw" | sed 's/^/edgeact --repack /'
    $bin/examples/llama_cpp_bench -m "$model" -p 0 -n "$batched_tg" -t "$t" -r "$reps" --parallel "$parallel" 2>/dev/null |
        tail -n +3 | tee "$tmp/l.raw"
    # edgeact: | model | size | params | backend | ngl | threads | test | t/s |; the oracle:
    # | engine | model | threads | test | t/s |.
    rows='{ t = $tc; gsub(/^ +| +$/, "", t); split($vc, a, " "); if (t ~ / x[0-9]+$/) print t "\t" a[1] }'
    awk -F'|' -v tc=8 -v vc=9 "$rows" "$tmp/e.raw" >"$tmp/e"
    awk -F'|' -v tc=8 -v vc=9 "$rows" "$tmp/r.raw" >"$tmp/r"
    awk -F'|' -v tc=5 -v vc=6 "$rows" "$tmp/l.raw" >"$tmp/l"
    echo
    echo "| threads | test | edgeact | edgeact --repack | llama.cpp | edgeact at P / at 1 | --repack at P / at 1 | llama.cpp at P / at 1 | ours best / llama.cpp |"
    echo "|---:|---|---:|---:|---:|---:|---:|---:|---:|"
    awk -F'\t' -v t="$t" '
        function base(v, test,   g) { g = test; sub(/ x[0-9]+$/, " x1", g); return (g in v) ? v[g] : "" }
        function ratio(a, b) { return (a != "" && b != "" && b > 0) ? sprintf("%.2fx", a / b) : "-" }
        FILENAME ~ /\/e$/ { e[$1] = $2; order[n++] = $1; next }
        FILENAME ~ /\/r$/ { r[$1] = $2; next }
        { l[$1] = $2 }
        END {
            for (i = 0; i < n; i++) {
                k = order[i]; best = (r[k] > e[k]) ? r[k] : e[k]
                printf "| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", t, k, e[k], r[k], (k in l) ? l[k] : "-",
                    ratio(e[k], base(e, k)), ratio(r[k], base(r, k)), ratio(l[k], base(l, k)), ratio(best, l[k])
            }
        }' "$tmp/e" "$tmp/r" "$tmp/l"
    echo
done
rm -r "$tmp"
fi
echo "# load after: $(cut -d' ' -f1-3 /proc/loadavg)"
echo '```'
} | tee -a "$record"
echo "recorded in $record" >&2

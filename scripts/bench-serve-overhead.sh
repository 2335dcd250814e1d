#!/bin/sh
# HTTP and scheduling overhead of `edgeact serve` on single-stream decode: the same greedy
# generation in-process (`edgeact run`) and through the server (TGI `/generate_stream`, one
# client, `--parallel 1`), decode rate compared. The server's rate is measured by the client
# from the first to the last token event (so it includes the scheduler, the HTTP stack and
# the server-sent events of every token); run's from its `generation:` line. Prints both, the
# overhead in percent, and appends them to the dated run file (bench/runs/).
# usage: scripts/bench-serve-overhead.sh MODEL.gguf
#   env: THREADS (default 2), TOKENS (default 128), REPS (default 3: best of), PORT (default 8391),
#   PROMPT (default "Once upon a time"), RUNS_DIR (default bench/runs)
set -eu
model=$1
threads=${THREADS:-2}
tokens=${TOKENS:-128}
reps=${REPS:-3}
port=${PORT:-8391}
prompt=${PROMPT:-Once upon a time}
cargo build --release --quiet
bin=target/release/edgeact
. "$(dirname "$0")/lib/run-record.sh"

best_run=0
i=0
while [ "$i" -lt "$reps" ]; do
    line=$($bin run -m "$model" -p "$prompt" -n "$tokens" --temp 0 -t "$threads" --device cpu 2>&1 >/dev/null | grep 'generation:')
    # "generation: N tokens in S s = R t/s": N tokens take N - 1 forward passes after the prompt's.
    rate=$(echo "$line" | sed -n 's/.*generation: \([0-9]*\) tokens in \([0-9.]*\) s.*/\1 \2/p' | awk '{ print ($1 - 1) / $2 }')
    best_run=$(echo "$best_run $rate" | awk '{ print ($2 > $1) ? $2 : $1 }')
    i=$((i + 1))
done

$bin serve -m "$model" -t "$threads" --parallel 1 --port "$port" --device cpu >/dev/null 2>&1 &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null || true' EXIT
best_http=$(python3 - "$port" "$prompt" "$tokens" "$reps" <<'PY'
import http.client, json, sys, time
port, prompt, tokens, reps = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
deadline = time.time() + 120
while True:
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        c.request("GET", "/health")
        if c.getresponse().status == 200:
            break
    except OSError:
        pass
    if time.time() > deadline:
        sys.exit("the server did not come up")
    time.sleep(0.2)

def stream():
    """Decode passes per second between the first and the last token event."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    body = {"inputs": prompt, "parameters": {"max_new_tokens": tokens, "do_sample": False}}
    c.request("POST", "/generate_stream", json.dumps(body), {"Content-Type": "application/json"})
    r = c.getresponse()
    assert r.status == 200, r.status
    times = []
    for line in r:
        if line.startswith(b"data:") and b'"token"' in line:
            times.append(time.perf_counter())
    return (len(times) - 1) / (times[-1] - times[0])

stream()  # warm-up: pages in, threads started
print(max(stream() for _ in range(reps)))
PY
)
overhead=$(echo "$best_run $best_http" | awk '{ printf "%.1f", 100 * ($1 / $2 - 1) }')
{
    echo
    echo "## Serve overhead, $(date -u '+%F %H:%M') UTC, load $(cut -d' ' -f1-3 /proc/loadavg)"
    echo
    echo "\`scripts/bench-serve-overhead.sh $model\`: $threads threads, $tokens tokens, greedy, best of $reps"
    echo
    echo "| path | decode passes/s |"
    echo "|---|---:|"
    printf '| edgeact run (in-process) | %.2f |\n' "$best_run"
    printf '| edgeact serve, TGI /generate_stream, one client | %.2f |\n' "$best_http"
    echo
    echo "HTTP + scheduling overhead: $overhead %"
} | tee -a "$record"
echo "recorded in $record" >&2

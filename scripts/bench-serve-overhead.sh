#!/bin/sh
# HTTP and scheduling overhead of `edgeact serve` on single-stream decode: the same greedy
# generation in-process (`edgeact run`) and through the server (TGI `/generate_stream`, one
# client, `--parallel 1`), decode rate compared. The server's rate is measured by the client
# from the first to the last token event (so it includes the scheduler, the HTTP stack and
# the server-sent events of every token); run's from its `generation:` line. The two alternate
# rep by rep: the overhead is the median of the paired ratios (the VM's speed shifts by 10-20 %
# from minute to minute, so a best-of-each comparison measures the luckiest minute of each).
# Prints the best rates and the overhead in percent, and appends them to the dated run file
# (bench/runs/).
# usage: scripts/bench-serve-overhead.sh MODEL.gguf
#   env: THREADS (default 2), TOKENS (default 128), REPS (default 5 pairs), PORT (default 8391),
#   PROMPT (default "Once upon a time"), RUNS_DIR (default bench/runs)
set -eu
model=$1
threads=${THREADS:-2}
tokens=${TOKENS:-128}
reps=${REPS:-5}
port=${PORT:-8391}
prompt=${PROMPT:-Once upon a time}
cargo build --release --quiet
bin=target/release/edgeact
. "$(dirname "$0")/lib/run-record.sh"

$bin serve -m "$model" -t "$threads" --parallel 1 --port "$port" --device cpu >/dev/null 2>&1 &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null || true' EXIT
# The two paths alternate, rep by rep, so that a change in the machine's speed (this VM's
# shifts by 10-20 % from minute to minute) touches both alike.
rates=$(python3 - "$bin" "$model" "$threads" "$port" "$prompt" "$tokens" "$reps" <<'PY'
import http.client, json, re, subprocess, sys, time
binary, model, threads, port, prompt, tokens, reps = sys.argv[1:]
port, tokens, reps = int(port), int(tokens), int(reps)
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

def in_process():
    """Decode passes per second of `edgeact run`: N tokens take N - 1 passes after the prompt's."""
    err = subprocess.run([binary, "run", "-m", model, "-p", prompt, "-n", str(tokens), "--temp", "0",
                          "-t", threads, "--device", "cpu"], capture_output=True, text=True, check=True).stderr
    n, s = re.search(r"generation: (\d+) tokens in ([0-9.]+) s", err).groups()
    return (int(n) - 1) / float(s)

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
pairs = [(in_process(), stream()) for _ in range(reps)]
# Median of the paired ratios: each pair ran within a second or two of each other.
ratios = sorted(r / h for r, h in pairs)
median = (ratios[(reps - 1) // 2] + ratios[reps // 2]) / 2
print(max(r for r, _ in pairs), max(h for _, h in pairs), f"{100 * (median - 1):.1f}")
PY
)
set -- $rates
best_run=$1 best_http=$2 overhead=$3
{
    echo
    echo "## Serve overhead, $(date -u '+%F %H:%M') UTC, load $(cut -d' ' -f1-3 /proc/loadavg)"
    echo
    echo "\`scripts/bench-serve-overhead.sh $model\`: $threads threads, $tokens tokens, greedy, $reps alternating pairs"
    echo
    echo "| path | decode passes/s (best) |"
    echo "|---|---:|"
    printf '| edgeact run (in-process) | %.2f |\n' "$best_run"
    printf '| edgeact serve, TGI /generate_stream, one client | %.2f |\n' "$best_http"
    echo
    echo "HTTP + scheduling overhead (median of the paired ratios): $overhead %"
} | tee -a "$record"
echo "recorded in $record" >&2

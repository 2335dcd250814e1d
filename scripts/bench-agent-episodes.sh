#!/bin/sh
# Agent-episode speed: AgentBench's dev episodes (DB: 60 tasks, OS: 26) run by `edgeact eval`
# with one model, greedy, three ways: one sequence without speculation (`--jobs 1
# --no-speculate`), one sequence speculating (prompt-lookup drafts and jump-forward, the
# default), and the batched engine (`--jobs $JOBS`: that many agents as sequences of one
# engine). Prints per protocol the generated tokens, forward passes per token, decode tokens/s
# (prompt prefill excluded), tasks per minute and the ratios, and appends the table to the
# dated run file (bench/runs/, as the other side-by-side scripts).
# usage: scripts/bench-agent-episodes.sh MODEL.gguf
#   env: THREADS (default 2), JOBS (default 8), CONSTRAIN (default 1: --constrain),
#   PROTOCOLS (default "db os"), LIMIT (only the first N tasks of each file), ROOTFS (OS
#   sandbox root, default host), SHARED (default ../shared), RUNS_DIR (default bench/runs).
set -eu
model=$1
threads=${THREADS:-2}
jobs=${JOBS:-8}
shared=${SHARED:-../shared}
protocols=${PROTOCOLS:-db os}
constrain=
[ "${CONSTRAIN:-1}" = 1 ] && constrain=--constrain
limit=
[ -n "${LIMIT:-}" ] && limit="--limit $LIMIT"
cargo build --release --quiet
. "$(dirname "$0")/lib/run-record.sh"
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

run() { # protocol name flags...
    protocol=$1 name=$2
    shift 2
    case $protocol in
    db) tasks="$shared/agentbench/data/dbbench/dev.jsonl" extra= ;;
    os) tasks="$shared/agentbench/data/os_interaction/data/dev.json" extra="--rootfs ${ROOTFS:-host}" ;;
    esac
    # shellcheck disable=SC2086 # word splitting of the optional flags is intended
    target/release/edgeact eval "$protocol" -m "$model" --tasks "$tasks" --greedy -t "$threads" \
        $constrain $limit $extra --json "$out/$protocol-$name.json" "$@" >/dev/null 2>"$out/$protocol-$name.log" ||
        { cat "$out/$protocol-$name.log" >&2; exit 1; }
}

for p in $protocols; do
    run "$p" plain --jobs 1 --no-speculate
    run "$p" speculate --jobs 1
    run "$p" batched --jobs "$jobs"
done

{
    echo
    echo "## Agent episodes, $(date -u '+%F %H:%M') UTC, load $(cut -d' ' -f1-3 /proc/loadavg)"
    echo
    echo "\`scripts/bench-agent-episodes.sh $model\`: $threads threads, greedy${constrain:+, constrained}${limit:+, $limit}"
    echo
    python3 - "$out" "$jobs" $protocols <<'PY'
import json, sys
out, jobs, protocols = sys.argv[1], sys.argv[2], sys.argv[3:]
print("| episodes | engine | tasks | tokens | passes / token | decode tok/s | vs plain | tasks/min | vs plain |")
print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
for p in protocols:
    runs = {n: json.load(open(f"{out}/{p}-{n}.json")) for n in ("plain", "speculate", "batched")}
    base = runs["plain"]
    for name, label in (("plain", "1 sequence, --no-speculate"), ("speculate", "1 sequence, speculating"),
                        ("batched", f"--jobs {jobs} (batched)")):
        r, d = runs[name], runs[name]["decode"]
        if name == "batched":
            # The agents' replies overlap in time and share each engine step: no per-sequence
            # decode rate or pass count, only the throughput in tasks.
            decode = "— | — | —"
        else:
            decode = (f"{d['passes_per_token']:.3f} | {d['tokens_per_second']:.1f} | "
                      f"{d['tokens_per_second'] / base['decode']['tokens_per_second']:.2f}x")
        print(f"| {p.upper()} | {label} | {len(r['results'])} | {d['generated_tokens']} | {decode} | "
              f"{r['tasks_per_minute']:.1f} | {r['tasks_per_minute'] / base['tasks_per_minute']:.2f}x |")
if len(protocols) > 1:
    # All episodes together: total tokens over total decode time, per single-sequence engine.
    def overall(name):
        ds = [json.load(open(f"{out}/{p}-{name}.json"))["decode"] for p in protocols]
        tokens = sum(d["generated_tokens"] for d in ds)
        seconds = sum(d["generated_tokens"] / d["tokens_per_second"] for d in ds if d["tokens_per_second"] > 0)
        return tokens, tokens / seconds
    (tp, rp), (ts, rs) = overall("plain"), overall("speculate")
    print(f"| all | 1 sequence, --no-speculate | | {tp} | | {rp:.1f} | 1.00x | | |")
    print(f"| all | 1 sequence, speculating | | {ts} | | {rs:.1f} | {rs / rp:.2f}x | | |")
PY
} | tee -a "$record"
echo "recorded in $record" >&2

#!/bin/sh
# Random-weight GGUFs (Q4_0 and Q4_K_M) shaped like AgentLM-7B/13B (Llama-2), a 2-layer cut of
# AgentLM-70B, and TinyLlama-1.1B, for `edgeact bench` (default shapes: 7b,tinyllama; add
# `--shapes 13b,70b-2l` for the others: the full 13B file is ~7 GB).
# usage: scripts/make-bench-models.sh [OUTDIR] [extra make-bench-models.py flags]
set -eu
here=$(dirname "$0")
out=${1:-target/bench-models}
[ $# -gt 0 ] && shift
exec python3 "$here/make-bench-models.py" "$out" "$@"

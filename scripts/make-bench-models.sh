#!/bin/sh
# Random-weight Llama-2-7B and TinyLlama-1.1B shaped GGUFs (Q4_0 and Q4_K_M) for `edgeact bench`.
# usage: scripts/make-bench-models.sh [OUTDIR] [extra make-bench-models.py flags]
set -eu
here=$(dirname "$0")
out=${1:-target/bench-models}
[ $# -gt 0 ] && shift
exec python3 "$here/make-bench-models.py" "$out" "$@"

#!/usr/bin/env bash
# GPU benchmark for the CUDA backend, to run on a machine with an NVIDIA GPU (none was
# available while the backend was written, so no GPU figures exist yet).
#
# Builds the release binary, then runs `edgeact bench --device cuda` (pp512 + tg128) on a 7B
# Q4_0 and a 7B Q4_K_M model and reports token generation as a percentage of the HBM
# roofline: decode reads every weight once per token, so tg can be at most
# bandwidth / weight_bytes tokens/s.
#
# Usage: scripts/gpu-bench.sh MODEL_Q4_0.gguf MODEL_Q4_K_M.gguf [HBM_GB_PER_S]
#   HBM_GB_PER_S: the GPU's memory bandwidth in GB/s; guessed from the GPU name when omitted.
# Env: EDGEACT_NVRTC_PATH (default: scripts/fetch-nvrtc.sh), DEVICE (default cuda:0),
#      REPS (default 3). Needs python3 (JSON parsing) and nvidia-smi (GPU name).
set -euo pipefail

if [[ $# -lt 2 ]]; then
    sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
fi
root="$(cd "$(dirname "$0")/.." && pwd)"
q4_0="$1"
q4_k_m="$2"
device="${DEVICE:-cuda:0}"
reps="${REPS:-3}"

gpu_name="$(nvidia-smi --query-gpu=name --format=csv,noheader -i "${device#cuda:}" 2>/dev/null | head -1 || true)"
bw="${3:-}"
if [[ -z "$bw" ]]; then
    # Published peak bandwidths (GB/s) of common GPUs; pass the figure for anything else.
    case "$gpu_name" in
        *H200*) bw=4800 ;;
        *H100*SXM* | *H100\ 80GB\ HBM3*) bw=3350 ;;
        *H100*) bw=2000 ;;
        *A100*80GB*) bw=2039 ;;
        *A100*) bw=1555 ;;
        *L40S* | *L40*) bw=864 ;;
        *"RTX 4090"*) bw=1008 ;;
        *"RTX 4080"*) bw=717 ;;
        *"RTX 3090"*) bw=936 ;;
        *"RTX 3080"*) bw=760 ;;
        *"RTX A6000"*) bw=768 ;;
        *L4*) bw=300 ;;
        *T4*) bw=320 ;;
        *) echo "gpu-bench.sh: unknown GPU '$gpu_name': pass its bandwidth in GB/s as the third argument" >&2
           exit 2 ;;
    esac
fi

export EDGEACT_NVRTC_PATH="${EDGEACT_NVRTC_PATH:-$("$root/scripts/fetch-nvrtc.sh")}"
(cd "$root" && cargo build --release --bin edgeact)
bin="$root/target/release/edgeact"

echo "GPU: ${gpu_name:-unknown} ($device), assumed HBM bandwidth ${bw} GB/s, NVRTC from $EDGEACT_NVRTC_PATH"
for model in "$q4_0" "$q4_k_m"; do
    json="$("$bin" bench -m "$model" --device "$device" -p 512 -n 128 -r "$reps" --json)"
    BW="$bw" MODEL="$model" JSON="$json" python3 - <<'PY'
import json, os
rows = json.loads(os.environ["JSON"])
rows = rows if isinstance(rows, list) else [rows]
bw = float(os.environ["BW"]) * 1e9
name = os.path.basename(os.environ["MODEL"])
for r in rows:
    line = "%s  %6s  %9.2f +- %.2f t/s" % (name, r["test"], r["avg_ts"], r["stddev_ts"])
    if r["n_gen"] > 0 and r["n_prompt"] == 0:
        roof = bw / r["size_bytes"]
        line += "   roofline %7.1f t/s -> %5.1f%% of HBM bandwidth" % (roof, 100 * r["avg_ts"] / roof)
    print(line)
PY
done

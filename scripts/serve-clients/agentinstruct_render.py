#!/usr/bin/env python3
"""Renders AgentInstruct rows (`edgeact export agentinstruct`) with FastChat 0.2.31's llama-2
template, the way AgentBench's TGIAgent rendered AgentLM's prompts.

For each row, the conversation before its last `gpt` turn with `loss: true` (the agent's last
reply) goes into `get_conversation_template("llama-2")` turn by turn (human -> roles[0],
gpt -> roles[1], values as stored: the export already holds them stripped), then an empty
reply turn is appended and `get_prompt()` is printed: the prompt the model should have been
given on its last turn. FastChat is imported through `agentbench_tgi_client.py` (beside this
file), which stubs the heavy modules `fastchat.model.model_adapter` imports and checks the
version and the adapter.

Usage: agentinstruct_render.py --data data.jsonl [--system TEXT]
Prints one JSON object per row: {"id": str, "prompt": str}.
"""

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from agentbench_tgi_client import get_conversation_template  # noqa: E402


def prompt_before_last_reply(conversations, system):
    conv = get_conversation_template("llama-2")
    if system:
        conv.set_system_message(system)
    replies = [i for i, t in enumerate(conversations) if t["from"] == "gpt" and t["loss"] is True]
    if not replies:
        raise ValueError("no turn with loss true")
    for t in conversations[: replies[-1]]:
        if t["from"] == "human":
            conv.append_message(conv.roles[0], t["value"])
        elif t["from"] == "gpt":
            conv.append_message(conv.roles[1], t["value"])
        else:
            raise ValueError(f"unknown speaker {t['from']!r}")
    conv.append_message(conv.roles[1], None)
    return conv.get_prompt()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="an export (JSON Lines)")
    p.add_argument("--system", default=None, help="the system prompt of the runs (default: none)")
    args = p.parse_args()
    with open(args.data, encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            prompt = prompt_before_last_reply(row["conversations"], args.system)
            print(json.dumps({"id": row["id"], "prompt": prompt}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

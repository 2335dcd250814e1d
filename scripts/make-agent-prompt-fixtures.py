#!/usr/bin/env python3
"""Writes tests/fixtures/agent/prompts.json: prompt strings built the way AgentBench + FastChat
0.2.31 build them, for the Rust renderer to match byte for byte.

Independent of the Rust code: the history is assembled as AgentBench's OS/DB tasks do
(instruction + glue strings from shared/agentbench/protocol), each message is .strip()ped, and
FastChat's llama-2 template (SeparatorStyle.LLAMA2: system "[INST] <<SYS>>\\n{s}\\n<</SYS>>\\n\\n",
roles [INST]/[/INST], seps " " and " </s><s>", empty message -> role tag only) renders it.
Run: python3 scripts/make-agent-prompt-fixtures.py [SHARED_DIR]
"""
import json
import os
import sys

shared = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("EDGEACT_SHARED", os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../shared"))
proto = os.path.join(shared, "agentbench", "protocol")
OS_INSTR = open(os.path.join(proto, "os_instruction.txt"), encoding="utf-8").read()
DB_INSTR = open(os.path.join(proto, "db_instruction.txt"), encoding="utf-8").read()
ONE_SHOT = json.load(open(os.path.join(proto, "os_one_shot.json"), encoding="utf-8"))


def llama2(messages, system=None):
    ret = f"[INST] <<SYS>>\n{system}\n<</SYS>>\n\n" if system else "[INST] "
    msgs = [m.strip() for m in messages] + [None]
    roles = ("[INST]", "[/INST]")
    seps = (" ", " </s><s>")
    for i, m in enumerate(msgs):
        tag = roles[i % 2]
        if m:
            ret += (m + " ") if i == 0 else (tag + " " + m + seps[i % 2])
        else:
            ret += tag
    return ret


def os_history(desc):
    h = [OS_INSTR + "Now, my problem is:\n\n" + ONE_SHOT[0]["content"]]
    h += [m["content"] for m in ONE_SHOT[1:]]
    h.append("Now, I will start a new problem in a new OS. My problem is:\n\n" + desc)
    return h


def db_history(desc, add):
    return [DB_INSTR, "Ok.", desc + "\n" + add]


SYS = "You are a helpful, respectful and honest assistant."
os_desc = "How many hidden files are in /home? (not including subdirectories)"
os_turns = os_history(os_desc) + [
    "Think: I list hidden files.\n\nAct: bash\n\n```bash\nls -a /home | grep '^\\.' | wc -l\n```",
    "The output of the OS:\n\n" + "8\r\n\x1b]0;root@708762f582f8: /\x07root@708762f582f8:/# \x1b[K",
]
db_desc = "How many gold medals did Norway win?"
db_add = "The name of this table is Olympic Medals, and the headers of this table are Nation,Gold,Silver."
db_turns = db_history(db_desc, db_add) + [
    "I will query the table.\nAction: Operation\n```sql\nSELECT Gold FROM `Olympic Medals` WHERE Nation = 'Norway';\n```",
    "[('16',)]",
    "Action: Answer\nFinal Answer: [\"16\"]  ",
    "",
]
cases = {
    "os_first_eval": {"messages": os_history(os_desc), "system": None},
    "os_two_turn_eval": {"messages": os_turns, "system": None},
    "db_two_turn_eval": {"messages": db_turns[:5], "system": None},
    "db_two_turn_agent": {"messages": db_turns[:5], "system": SYS},
    "db_empty_observation_eval": {"messages": db_turns, "system": None},
}
for c in cases.values():
    c["prompt"] = llama2(c["messages"], c["system"])
here = os.path.dirname(os.path.abspath(__file__))
path = os.path.join(here, "..", "tests", "fixtures", "agent", "prompts.json")
with open(path, "w", encoding="utf-8") as f:
    json.dump(cases, f, ensure_ascii=False, indent=1)
    f.write("\n")
print("wrote", os.path.normpath(path))

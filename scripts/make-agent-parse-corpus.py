#!/usr/bin/env python3
"""Writes tests/fixtures/agent/parse_corpus.json: model replies (hand-written valid and malformed
ones plus seeded random ones) with the parse AgentBench's own Python regexes give them.

The expectations are computed here with Python's `re`, following AgentBench's
`os_interaction/task.py` `extract_action` and `dbbench/__init__.py` loop body; the Rust parsers
in runtime/src/agent/parse.rs must reproduce them. Run: python3 scripts/make-agent-parse-corpus.py
"""
import json
import random
import re
import os

HAND = [
    "Think: To count the files in /etc, I need to print all the files in it.\n\nAct: bash\n\n```bash\nls /etc\n```",
    "Think: Now I get the answer, it is 220.\n\nAct: answer(220)",
    "Think: done\n\nAct: finish",
    "Act: answer",
    "Act: answer()",
    "Act: answer(a(b)c)",
    "Act: answer)x(",
    "Act:answer(  spaced  )",
    "Act:   \n\n  bash\n```bash\necho 1\n```\n```bash\necho 2\n```",
    "Act: bash\n```bash\nno closing",
    "Act: bash",
    "Act: \n",
    "Act: \t\n",
    "Act:\n\nAct: finish",
    "Act: finish\nAct: answer(3)",
    "Act: answer(3)\nAct: nonsense",
    "Act: answer(x\nAct: finish",
    "Act: BASH\n```bash\nls\n```",
    "Act: Answer(Yes)",
    "Think:\n\nThink: second\nAct: finish",
    "I think I should run ls.\n```bash\nls\n```",
    "Act: bash\n\n```bash\n\n```",
    "Act: bash\n```bash\n```bash\nls\n```\n```",
    "Think: é ünïcode\n\nAct: answer(ß)",
    "Act: answer(\u00e9\u00e8)trailing",
    "Act: bash\r\n```bash\r\nls\r\n```",
    "Action: Operation\n```sql\nSELECT * FROM t;\n```",
    "Let me look.\nAction: Operation\n```sql\nSELECT a\nFROM t\n```\nmore",
    "Action: Operation\n```sql\n  SELECT 1;  \n```",
    "Action: Operation\nSELECT 1;",
    "Action: Operation",
    "Action: Operation \n```sql\nSELECT 1;\n```",
    "Action: Answer\nFinal Answer: [\"March 19, 1998\"]",
    "Action: Answer\nFinal Answer:[\"a\", \"b\"]\nextra",
    "Final Answer: [\"no newline before\"]",
    "Action: Answer\nFinal Answer: 26",
    "I am not sure.",
    "Action:Operation\n```sql\nSELECT 1;\n```",
    "```sql\nSELECT 0;\n```\nAction: Operation\n```sql\nSELECT 1;\n```",
    "Action: Answer\nAction: Operation\n```sql\nSELECT 1;\n```\nFinal Answer: [1]",
    "Action: Operation\r\n```sql\nSELECT 1;\n```",
    "Action: Operation\n```sql\nSELECT 1;\n```\nAction: Answer\nFinal Answer: [\"x\"]",
    "",
]

PIECES = ["Act:", "Think:", "Action: ", " ", "  ", "\n", "\n\n", "\t", "bash", "BASH", "finish", "answer",
          "Answer", "Operation", "(", ")", "x", "42", "é", "```bash\n", "\n```", "```sql\n", "\nFinal Answer:",
          "[\"a\"]", "ls -l", "\r", "Act: ", "SELECT 1;"]


def os_extract(raw):
    think = re.findall(r"Think:\s*(.+)", raw)
    act = re.findall(r"Act:\s*(.+)", raw)
    ret = {"thought": "\n".join(think), "action": None, "content": None}
    for action in act[::-1]:
        if action.lower().startswith("bash"):
            ret["action"] = "bash"
            break
        if action.lower().startswith("finish"):
            ret["action"] = "commit"
            break
        if action.lower().startswith("answer"):
            content = action[6:].strip()
            left = content.find("(")
            right = content.rfind(")")
            if left == -1 or right == -1:
                continue
            ret["action"] = "commit"
            ret["content"] = content[left + 1:right]
            break
    if ret["action"] == "bash":
        ret["content"] = "\n\n".join(re.findall(r"```bash\n(.*?)\n```", raw, re.DOTALL))
    return ret


def db_parse(res):
    action = re.search(r"Action: (.*?)\n", res)
    out = {"label": action.group(1) if action else None}
    if action and action.group(1) == "Operation":
        m = re.search(r"```sql\n([\s\S]*?)\n```", res)
        out["kind"] = "operation" if m else "operation_without_sql"
        out["content"] = m.group(1).strip().replace("\n", " ") if m else None
    else:
        m = re.search(r"\nFinal Answer:(.*)", res)
        out["kind"] = "answer" if m else "no_answer"
        out["content"] = m.group(1) if m else None
    return out


def main():
    rng = random.Random(20231012)
    texts = list(HAND)
    for _ in range(200):
        texts.append("".join(rng.choice(PIECES) for _ in range(rng.randint(1, 14))))
    # Mutations of well-formed replies exercise the corner cases near valid shapes.
    valid = [t for t in HAND if "Act:" in t or "Action:" in t]
    for _ in range(300):
        t = rng.choice(valid)
        for _ in range(rng.randint(1, 3)):
            i = rng.randint(0, len(t))
            if rng.random() < 0.5:
                t = t[:i] + rng.choice(PIECES) + t[i:]
            else:
                t = t[:i] + t[i + rng.randint(1, 4):]
        texts.append(t)
    cases = [{"text": t, "os": os_extract(t), "db": db_parse(t)} for t in texts]
    here = os.path.dirname(os.path.abspath(__file__))
    path = os.path.join(here, "..", "tests", "fixtures", "agent", "parse_corpus.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(cases, f, ensure_ascii=False, indent=1)
        f.write("\n")
    print(f"wrote {len(cases)} cases to {os.path.normpath(path)}")


if __name__ == "__main__":
    main()

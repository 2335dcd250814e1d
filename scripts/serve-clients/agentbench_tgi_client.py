#!/usr/bin/env python3
"""AgentBench's TGIAgent against `edgeact serve`, byte for byte, and an episode replay.

`TGIAgent.inference` below is THUDM/AgentTuning `AgentBench.old/src/agents/tgi_client.py`
(the harness behind AgentLM's published scores; Apache-2.0) for an AgentLM model: the history
rendered by FastChat 0.2.31's `get_conversation_template("llama-2")`, POSTed to `/generate`
with `requests` exactly as it did (`data=json.dumps(...)`, JSON content type, timeout 120 s),
the answer read as `json.loads(line)["generated_text"]` from `iter_lines(delimiter=b"\\0")`.
The one change: where the original swallows a bad answer (a failed `json.loads` gives `""`)
this client records it, so a test sees a server that answers wrongly.

FastChat 0.2.31's `fastchat.model.model_adapter` imports torch, transformers, accelerate…
at module level, though `get_conversation_template` uses none of them (it picks an adapter by
name and returns `get_conv_template("llama-2")` for `Llama2Adapter`). The venv has fschat
without its dependencies, so the heavy modules that are missing are stubbed while importing it
(`_import_fastchat`); the function that runs is FastChat's own, and the script checks that the
adapter it picked is `Llama2Adapter`.

Usage:
  agentbench_tgi_client.py replay --url URL --calls calls.json [--max-tokens 4096]
      [--max-new-tokens 128] [--expect greedy|sampled-first|none]
  agentbench_tgi_client.py render --calls calls.json     (prints FastChat's prompts)

`calls.json` (written by tests/serve_clients.rs from an `edgeact eval --log` transcript):
  {"label": str, "calls": [{"messages": [{"role": "user"|"agent", "content": str}, ...],
                            "edgeact_prompt": str, "reply": str}, ...]}
`messages` is the trimmed history edgeact's loop sent for that model call (the AgentBench
harness trims before the agent sees it), `edgeact_prompt` edgeact's own rendering of it and
`reply` the text edgeact's engine generated.

For every call the replay
  1. renders the history as TGIAgent does and requires it to equal `edgeact_prompt` byte for
     byte;
  2. sends TGIAgent's exact request and requires a 200 answer whose NUL-delimited lines parse
     as JSON with a string `generated_text`;
  3. `--expect greedy`: also sends the same request without `temperature` (TGI: greedy) and
     requires `generated_text` to equal `reply` (the transcript of `eval --greedy`);
     `--expect sampled-first`: requires TGIAgent's own (T = 0.7 sampled) answer to the first
     call to equal `reply` (the transcript of `eval --seeds 1` against a server started with
     `--seed 0`: both draw from a fresh seed-0 stream; later calls continue eval's stream, so
     they are not comparable); `none`: shape only (scripted episodes).
     Truncated calls are compared too: eval and the server both keep BOS plus the last
     `truncate - 1` tokens, as TGI's tokenizer did.
Exit 0 when every check passed; the last line is `tgi-replay: ok ...` or `tgi-replay: FAILED ...`.
"""

import argparse
import difflib
import importlib.abc
import importlib.machinery
import json
import sys
from typing import Dict, List
from unittest import mock

import requests
from requests.exceptions import ConnectionError, Timeout  # noqa: F401  (as TGIAgent imports)


class _StubMissing(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finder of last resort: a placeholder for each listed top-level module that is not
    installed (so installed modules are always the real ones)."""

    def __init__(self):
        self.roots = set()

    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in self.roots:
            return importlib.machinery.ModuleSpec(name, self, is_package=True)
        return None

    def create_module(self, spec):
        m = mock.MagicMock(name=spec.name)
        m.__path__ = []
        m.__spec__ = spec
        return m

    def exec_module(self, module):
        pass


def _import_fastchat():
    """FastChat's `get_conversation_template` and `get_model_adapter`, with torch & co. stubbed
    when they are not installed."""
    stub = _StubMissing()
    sys.meta_path.append(stub)
    for _ in range(50):
        try:
            from fastchat.model.model_adapter import get_conversation_template, get_model_adapter

            break
        except ModuleNotFoundError as e:
            root = (e.name or "").split(".")[0]
            if not root or root == "fastchat" or root in stub.roots:
                raise
            stub.roots.add(root)
            for k in [k for k in sys.modules if k == "fastchat" or k.startswith("fastchat.")]:
                del sys.modules[k]
    else:
        raise RuntimeError("could not import fastchat.model.model_adapter")
    import fastchat

    if getattr(fastchat, "__version__", None) != "0.2.31":
        raise RuntimeError(f"fschat 0.2.31 expected, found {getattr(fastchat, '__version__', '?')}")
    adapter = type(get_model_adapter("llama-2")).__name__
    if adapter != "Llama2Adapter":
        raise RuntimeError(f'get_conversation_template("llama-2") went through {adapter}, not Llama2Adapter')
    return get_conversation_template, sorted(stub.roots)


get_conversation_template, STUBBED = _import_fastchat()


class TGIAgent:
    """AgentBench.old's TGIAgent for an AgentLM model (`"AgentLM" in model_name`), one port."""

    def __init__(self, url, max_tokens=4096, max_new_tokens=128):
        self.controller_address = [url]
        self.max_new_tokens = max_new_tokens
        self.max_tokens = max_tokens
        self.problems: List[str] = []
        self.last_status = None

    @staticmethod
    def render(history: List[Dict[str, str]]) -> str:
        conv = get_conversation_template("llama-2")
        for history_item in history:
            role = history_item["role"]
            content = history_item["content"].strip()
            if role == "user":
                conv.append_message(conv.roles[0], content)
            elif role == "agent":
                conv.append_message(conv.roles[1], content)
            else:
                raise ValueError(f"Unknown role: {role}")
        conv.append_message(conv.roles[1], None)
        return conv.get_prompt()

    def request_data(self, prompt: str) -> dict:
        return {
            "inputs": prompt,
            "parameters": {
                "max_new_tokens": self.max_new_tokens,
                "do_sample": False,
                "temperature": 0.7,
                "truncate": self.max_tokens - self.max_new_tokens,
            },
        }

    def post(self, data: dict) -> str:
        headers = {"Content-Type": "application/json"}
        import random

        response = requests.post(
            random.sample(self.controller_address, 1)[0] + "/generate",
            headers=headers,
            data=json.dumps(data),
            timeout=120,
        )
        self.last_status = response.status_code
        text = ""
        seen = False
        for line in response.iter_lines(decode_unicode=False, delimiter=b"\0"):
            try:
                if line:
                    seen = True
                    text = json.loads(line)["generated_text"]
                    if not isinstance(text, str):
                        raise TypeError(f"generated_text is {type(text).__name__}")
            except Exception as e:  # TGIAgent: print and use ""; here: recorded
                self.problems.append(f"unparsable answer line ({e!r}): {line[:300]!r}")
                text = ""
        if response.status_code != 200:
            self.problems.append(f"HTTP {response.status_code}: {response.content[:300]!r}")
        elif not seen:
            self.problems.append("HTTP 200 with an empty body")
        return text

    def inference(self, history: List[dict]) -> str:
        return self.post(self.request_data(self.render(history)))


def show_diff(a: str, b: str) -> str:
    lines = difflib.unified_diff(
        a.splitlines(keepends=True), b.splitlines(keepends=True), "fastchat", "edgeact", n=1
    )
    return "".join(list(lines)[:40])


def replay(args) -> int:
    spec = json.load(open(args.calls, encoding="utf-8"))
    label = spec.get("label", args.calls)
    calls = spec["calls"]
    agent = TGIAgent(args.url, args.max_tokens, args.max_new_tokens)
    failures: List[str] = []
    matched = 0
    for k, call in enumerate(calls):
        history = call["messages"]
        prompt = agent.render(history)
        if prompt != call["edgeact_prompt"]:
            failures.append(
                f"call {k}: FastChat's prompt differs from edgeact's:\n"
                + show_diff(prompt, call["edgeact_prompt"])
            )
        agent.problems = []
        text = agent.inference(history)
        for p in agent.problems:
            failures.append(f"call {k}: TGIAgent request: {p}")
        shown = text[:80].replace("\n", "\\n")
        print(f"tgi-replay {label}: call {k}: {len(prompt)} prompt chars -> {len(text)} chars: {shown!r}")
        if args.expect == "sampled-first" and k == 0 and not agent.problems:
            if text == call["reply"]:
                matched += 1
            else:
                failures.append(
                    f"call 0: T=0.7 seed-0 answer differs from eval's\n  server: {text!r}\n  eval:   {call['reply']!r}"
                )
        if args.expect == "greedy":
            data = agent.request_data(prompt)
            del data["parameters"]["temperature"]
            agent.problems = []
            greedy = agent.post(data)
            for p in agent.problems:
                failures.append(f"call {k}: greedy request: {p}")
            if not agent.problems:
                if greedy == call["reply"]:
                    matched += 1
                else:
                    failures.append(
                        f"call {k}: greedy answer differs from eval --greedy\n  server: {greedy!r}\n  eval:   {call['reply']!r}"
                    )
    for f in failures:
        print(f"tgi-replay {label}: FAIL {f}")
    stubbed = ",".join(STUBBED) or "none"
    summary = (f"{len(calls)} calls, {matched} replies equal to eval's (--expect {args.expect}), "
               f"fastchat stubs: {stubbed}")
    if failures:
        print(f"tgi-replay: FAILED {label}: {len(failures)} problem(s); {summary}")
        return 1
    print(f"tgi-replay: ok {label}: {summary}")
    return 0


def render(args) -> int:
    for call in json.load(open(args.calls, encoding="utf-8"))["calls"]:
        print(json.dumps(TGIAgent.render(call["messages"])))
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("replay")
    r.add_argument("--url", required=True, help="server root, e.g. http://127.0.0.1:8080")
    r.add_argument("--calls", required=True)
    r.add_argument("--max-tokens", type=int, default=4096, help="TGIAgent max_tokens (truncate = this - max_new_tokens)")
    r.add_argument("--max-new-tokens", type=int, default=128)
    r.add_argument("--expect", choices=["greedy", "sampled-first", "none"], default="none")
    d = sub.add_parser("render")
    d.add_argument("--calls", required=True)
    args = p.parse_args()
    return replay(args) if args.cmd == "replay" else render(args)


if __name__ == "__main__":
    sys.exit(main())

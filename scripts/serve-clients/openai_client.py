#!/usr/bin/env python3
"""The `openai` Python SDK (from PyPI) against `edgeact serve`'s OpenAI API, with assertions.

Checks: `models.list()`; chat completions (greedy twice: same text; `usage` adds up;
`finish_reason`), the same chat streamed (the deltas join to the non-streamed text; one
`finish_reason` at the end), legacy completions streamed and not, errors in OpenAI's shape as
the SDK's exception classes (`n` > 1 and a negative `max_tokens` → 400 BadRequestError), and
with `--api-key` a client with a wrong key → 401 AuthenticationError.

Usage: openai_client.py --url http://127.0.0.1:PORT [--api-key KEY] [--model ID]
Exit 0 when every check passed; prints `openai-client: ok ...` last.
"""

import argparse
import sys

import openai
from openai import OpenAI

FAILURES = []


def check(cond, what):
    if not cond:
        FAILURES.append(what)
        print(f"openai-client: FAIL {what}")
    return cond


def expect_error(cls, status, what, fn):
    try:
        fn()
    except cls as e:
        check(getattr(e, "status_code", None) == status, f"{what}: status {e.status_code}, want {status}")
        # The SDK unwraps OpenAI's `{"error": {"message": ...}}` into e.body.
        body = e.body if isinstance(e.body, dict) else {}
        check(isinstance(body.get("message"), str) and body["message"], f"{what}: no error message in {e.body!r}")
        return
    except openai.APIError as e:
        check(False, f"{what}: {type(e).__name__} ({getattr(e, 'status_code', '?')}), want {cls.__name__}: {e}")
        return
    check(False, f"{what}: no error raised")


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--url", required=True, help="server root, e.g. http://127.0.0.1:8080")
    p.add_argument("--api-key", default=None, help="the server's --api-key (then a wrong key must get 401)")
    p.add_argument("--model", default=None, help="model id (default: the first of /v1/models)")
    p.add_argument("--max-tokens", type=int, default=24)
    args = p.parse_args()

    client = OpenAI(base_url=args.url.rstrip("/") + "/v1", api_key=args.api_key or "none", max_retries=0, timeout=120)

    models = client.models.list().data
    check(len(models) >= 1, "models.list() returned no model")
    model = args.model or (models[0].id if models else "model")
    check(all(isinstance(m.id, str) and m.id for m in models), f"model ids {[m.id for m in models]}")
    print(f"openai-client: models {[m.id for m in models]}")

    messages = [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "Tell me a short story about a cat."},
    ]
    params = dict(model=model, messages=messages, max_tokens=args.max_tokens, temperature=0, seed=0)
    a = client.chat.completions.create(**params)
    b = client.chat.completions.create(**params)
    ca = a.choices[0].message.content
    check(len(a.choices) == 1, f"chat: {len(a.choices)} choices")
    check(a.choices[0].message.role == "assistant", f"chat: role {a.choices[0].message.role}")
    check(isinstance(ca, str), f"chat: content {ca!r}")
    check(a.choices[0].finish_reason in ("stop", "length"), f"chat: finish_reason {a.choices[0].finish_reason}")
    check(ca == b.choices[0].message.content, f"chat: greedy twice differs: {ca!r} vs {b.choices[0].message.content!r}")
    u = a.usage
    check(u is not None and u.prompt_tokens > 0, f"chat: usage {u}")
    if u is not None:
        check(0 < u.completion_tokens <= args.max_tokens or (u.completion_tokens == 0 and a.choices[0].finish_reason == "stop"),
              f"chat: completion_tokens {u.completion_tokens}")
        check(u.total_tokens == u.prompt_tokens + u.completion_tokens, f"chat: usage does not add up: {u}")
        if a.choices[0].finish_reason == "length":
            check(u.completion_tokens == args.max_tokens, f"chat: finish length with {u.completion_tokens} tokens")
    print(f"openai-client: chat {ca!r} ({a.choices[0].finish_reason}, usage {u.prompt_tokens}+{u.completion_tokens})")

    # Streaming: the deltas join to the same greedy text; exactly one chunk ends it.
    pieces, finishes, roles = [], [], []
    stream = client.chat.completions.create(**params, stream=True)
    for chunk in stream:
        for ch in chunk.choices:
            if ch.delta.role:
                roles.append(ch.delta.role)
            if ch.delta.content:
                pieces.append(ch.delta.content)
            if ch.finish_reason:
                finishes.append(ch.finish_reason)
    streamed = "".join(pieces)
    check(streamed == ca, f"chat stream: {streamed!r} != non-streamed {ca!r}")
    check(finishes == [a.choices[0].finish_reason], f"chat stream: finish reasons {finishes}")
    check(set(roles) <= {"assistant"}, f"chat stream: roles {roles}")
    print(f"openai-client: chat stream {len(pieces)} deltas, equal to the non-streamed reply")

    # A sampled chat with a seed is repeatable too.
    s1 = client.chat.completions.create(**{**params, "temperature": 0.8, "top_p": 0.9, "seed": 7})
    s2 = client.chat.completions.create(**{**params, "temperature": 0.8, "top_p": 0.9, "seed": 7})
    check(s1.choices[0].message.content == s2.choices[0].message.content, "chat: same seed, different samples")

    # Legacy completions, plain and streamed.
    cp = dict(model=model, prompt="Once upon a time", max_tokens=args.max_tokens, temperature=0)
    c = client.completions.create(**cp)
    ct = c.choices[0].text
    check(isinstance(ct, str) and c.choices[0].finish_reason in ("stop", "length"), f"completions: {c}")
    check(c.usage is not None and c.usage.prompt_tokens > 0, f"completions: usage {c.usage}")
    cs = "".join(ch.text for chunk in client.completions.create(**cp, stream=True) for ch in chunk.choices)
    check(cs == ct, f"completions stream: {cs!r} != {ct!r}")
    print(f"openai-client: completion {ct!r}")

    # Errors, in OpenAI's JSON shape, as the SDK's exception classes.
    expect_error(openai.BadRequestError, 400, "chat n=2", lambda: client.chat.completions.create(**params, n=2))
    expect_error(openai.BadRequestError, 400, "chat max_tokens=-1",
                 lambda: client.chat.completions.create(**{**params, "max_tokens": -1}))
    if args.api_key:
        bad = OpenAI(base_url=args.url.rstrip("/") + "/v1", api_key=args.api_key + "x", max_retries=0, timeout=30)
        expect_error(openai.AuthenticationError, 401, "wrong API key", lambda: bad.chat.completions.create(**params))

    if FAILURES:
        print(f"openai-client: FAILED {len(FAILURES)} check(s) (openai {openai.__version__})")
        return 1
    print(f"openai-client: ok (openai {openai.__version__}, model {model})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Soak test of `edgeact serve` on loopback: N concurrent clients (default 64) for a bounded
time, mixing valid requests (TGI `/generate` and `/generate_stream`, OpenAI chat completions
plain and streamed), cancellations (disconnect mid-stream, disconnect before the answer) and
garbage (invalid JSON, wrong types, bad parameters, an empty prompt, a body over any sane
limit, a body shorter than its Content-Length, unknown routes, wrong methods, bytes that are
not HTTP).

Passes when
  - every valid request got a valid answer (200 and the right shape; 429/503 only with
    --allow-busy),
  - no garbage request got a 5xx or a 2xx (4xx, or the server closing the connection on an
    oversized or broken body, are the right answers),
  - the server process (--pid) is alive at the end and still answers /health,
  - its RSS (VmRSS of /proc/PID/status) at the end of the run is within the margin of its RSS
    after the warm-up phase (same load, so growth means a leak),
  - /metrics shows busy_sequences back at 0 within 30 s after the load stops (cancelled
    generations freed their sequences).

Usage: soak.py --url http://127.0.0.1:PORT --pid PID [--seconds 30] [--clients 64]
               [--warmup S] [--rss-margin-mib 24] [--rss-margin-frac 0.10] [--allow-busy]
Prints `soak: result {json}` and `soak: ok` / `soak: FAILED ...` last; exit 0 iff ok.
"""

import argparse
import collections
import json
import os
import random
import re
import socket
import sys
import threading
import time
from urllib.parse import urlparse

import requests

PROMPTS = ["Once upon a time", "The little dog", "Lily and Ben went to the park.", "One day, a bird"]


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.counts = collections.Counter()  # kind -> completed requests
        self.ok = collections.Counter()
        self.failures = []  # (kind, what)
        self.garbage_status = collections.Counter()  # "kind:status"

    def add(self, kind, ok, what=None):
        with self.lock:
            self.counts[kind] += 1
            if ok:
                self.ok[kind] += 1
            else:
                self.failures.append((kind, what))


def rss_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        return state not in ("Z", "X")
    except OSError:
        return False


class Client(threading.Thread):
    def __init__(self, idx, args, stats, stop, host, port):
        super().__init__(daemon=True)
        self.rng = random.Random(1000 + idx)
        self.args, self.stats, self.stop, self.host, self.port = args, stats, stop, host, port
        self.base = args.url.rstrip("/")
        self.session = requests.Session()
        self.warm_kinds = list(KINDS)  # warm-up: every kind once first, then at random

    def run(self):
        while not self.stop.is_set():
            kind = self.warm_kinds.pop() if self.warm_kinds else self.rng.choices(KINDS, WEIGHTS)[0]
            try:
                getattr(self, kind)()
            except Exception as e:  # a client-side failure of a valid request is a failure
                self.stats.add(kind, kind.startswith("garbage") or kind.startswith("cancel"), f"{type(e).__name__}: {e}")

    # ---------- valid requests ----------
    def _busy_ok(self, kind, r):
        if r.status_code in (429, 503) and self.args.allow_busy and r.content:
            self.stats.add(kind, True)
            with self.stats.lock:
                self.stats.counts["busy"] += 1
            return True
        return False

    def _gen_body(self, n=None):
        p = {"max_new_tokens": n or self.rng.randint(1, 16)}
        if self.rng.random() < 0.5:
            p.update({"do_sample": False, "temperature": 0.7, "truncate": 200})
        return {"inputs": self.rng.choice(PROMPTS), "parameters": p}

    def valid_generate(self):
        r = self.session.post(self.base + "/generate", data=json.dumps(self._gen_body()),
                              headers={"Content-Type": "application/json"}, timeout=120)
        if self._busy_ok("valid_generate", r):
            return
        try:
            ok = r.status_code == 200 and isinstance(r.json()["generated_text"], str)
        except Exception:
            ok = False
        self.stats.add("valid_generate", ok, f"{r.status_code} {r.content[:200]!r}")

    def _sse(self, r):
        """The `data:` payloads of an SSE body."""
        out = []
        for line in r.iter_lines(decode_unicode=False):
            if line.startswith(b"data:"):
                out.append(line[5:].strip())
        return out

    def valid_generate_stream(self):
        r = self.session.post(self.base + "/generate_stream", json=self._gen_body(), stream=True, timeout=120)
        if self._busy_ok("valid_generate_stream", r):
            return
        what, ok = f"{r.status_code}", False
        if r.status_code == 200:
            try:
                events = [json.loads(d) for d in self._sse(r)]
                last = events[-1] if events else {}
                ok = (len(events) >= 1 and isinstance(last.get("generated_text"), str)
                      and all(e.get("generated_text") is None for e in events[:-1])
                      and all(isinstance(e.get("token"), dict) for e in events))
                what = f"events {events[-3:]!r}"[:300]
            except Exception as e:
                what = f"bad SSE: {e}"
        else:
            what += f" {r.content[:200]!r}"
        self.stats.add("valid_generate_stream", ok, what)

    def _chat_body(self, stream):
        return {"model": "m", "messages": [{"role": "user", "content": self.rng.choice(PROMPTS)}],
                "max_tokens": self.rng.randint(1, 16), "temperature": self.rng.choice([0, 0.7]), "stream": stream}

    def valid_chat(self):
        r = self.session.post(self.base + "/v1/chat/completions", json=self._chat_body(False), timeout=120)
        if self._busy_ok("valid_chat", r):
            return
        try:
            ok = r.status_code == 200 and isinstance(r.json()["choices"][0]["message"]["content"], str)
        except Exception:
            ok = False
        self.stats.add("valid_chat", ok, f"{r.status_code} {r.content[:200]!r}")

    def valid_chat_stream(self):
        r = self.session.post(self.base + "/v1/chat/completions", json=self._chat_body(True), stream=True, timeout=120)
        if self._busy_ok("valid_chat_stream", r):
            return
        what, ok = f"{r.status_code}", False
        if r.status_code == 200:
            data = self._sse(r)
            try:
                ok = len(data) >= 2 and data[-1] == b"[DONE]" and all(
                    isinstance(json.loads(d)["choices"], list) for d in data[:-1])
            except Exception:
                ok = False
            what = f"events {data[-3:]!r}"[:300]
        else:
            what += f" {r.content[:200]!r}"
        self.stats.add("valid_chat_stream", ok, what)

    # ---------- raw sockets: cancellations and garbage ----------
    def _raw(self, payload: bytes, read_until=None, close_after_send=False, half_close=False, timeout=60):
        """Sends `payload`; returns (status or None, bytes read). With `read_until`, stops
        reading (and disconnects) once that many body-ish bytes arrived."""
        s = socket.create_connection((self.host, self.port), timeout=timeout)
        try:
            try:
                s.sendall(payload)
            except OSError:  # the server may close on an oversized body: an answer too
                pass
            if close_after_send:
                return None, b""
            if half_close:  # the body ends here: the server sees EOF, not a stalled client
                try:
                    s.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
            buf = b""
            while True:
                try:
                    chunk = s.recv(65536)
                except (ConnectionResetError, socket.timeout, OSError):
                    break
                if not chunk:
                    break
                buf += chunk
                if read_until is not None and b"\r\n\r\n" in buf and len(buf.split(b"\r\n\r\n", 1)[1]) >= read_until:
                    break
            m = re.match(rb"HTTP/1\.[01] (\d{3})", buf)
            return (int(m.group(1)) if m else None), buf
        finally:
            s.close()

    def _http(self, method, path, body: bytes, ctype=b"application/json", clen=None):
        clen = len(body) if clen is None else clen
        head = (f"{method} {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nConnection: close\r\n"
                f"Content-Length: {clen}\r\n").encode() + b"Content-Type: " + ctype + b"\r\n\r\n"
        return head + body

    def cancel_midstream(self):
        path = self.rng.choice(["/generate_stream", "/v1/chat/completions"])
        if path == "/generate_stream":
            body = {"inputs": self.rng.choice(PROMPTS), "parameters": {"max_new_tokens": 200}}
        else:
            body = {"messages": [{"role": "user", "content": "Tell me a long story."}], "max_tokens": 200, "stream": True}
        status, buf = self._raw(self._http("POST", path, json.dumps(body).encode()), read_until=self.rng.randint(1, 200))
        ok = status in (200, 429, 503) if self.args.allow_busy else status == 200
        self.stats.add("cancel_midstream", ok, f"status {status}: {buf[:200]!r}")

    def cancel_early(self):
        body = {"inputs": self.rng.choice(PROMPTS), "parameters": {"max_new_tokens": 200}}
        self._raw(self._http("POST", "/generate", json.dumps(body).encode()), close_after_send=True)
        self.stats.add("cancel_early", True)

    def garbage(self):
        kind, payload = self.rng.choice(GARBAGE)(self)
        status, buf = self._raw(payload, half_close=kind == "short_body")
        with self.stats.lock:
            self.stats.garbage_status[f"{kind}:{status}"] += 1
        # 4xx, or a closed connection where no answer can be expected (oversized or cut body,
        # not HTTP at all); never 2xx or 5xx.
        closed_ok = kind in ("huge_body", "short_body", "not_http") and status is None
        ok = (status is not None and 400 <= status < 500) or closed_ok
        self.stats.add("garbage", ok, f"{kind}: status {status}: {buf[:200]!r}")


def _g_invalid_json(c):
    return "invalid_json", c._http("POST", c.rng.choice(["/generate", "/v1/chat/completions", "/generate_stream"]),
                                   b'{"inputs": "Once upon", "parameters": {')


def _g_wrong_types(c):
    body = c.rng.choice([
        {"inputs": 5},
        {"inputs": ["a"]},
        {"inputs": "x", "parameters": {"max_new_tokens": "ten"}},
        {"inputs": "x", "parameters": "nope"},
        {"inputs": "x", "parameters": {"temperature": "hot"}},
    ])
    return "wrong_types", c._http("POST", "/generate", json.dumps(body).encode())


def _g_bad_params(c):
    path, body = c.rng.choice([
        ("/generate", {"inputs": "x", "parameters": {"max_new_tokens": -5}}),
        ("/generate", {"inputs": "x", "parameters": {"max_new_tokens": 10**12}}),
        ("/generate", {"inputs": "x", "parameters": {"temperature": -1.0}}),
        ("/generate", {"inputs": "x", "parameters": {"top_p": 7}}),
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}], "max_tokens": -1}),
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}], "n": 3}),
        ("/v1/chat/completions", {"messages": "x"}),
        ("/v1/completions", {"prompt": 7}),
    ])
    return "bad_params", c._http("POST", path, json.dumps(body).encode())


def _g_empty(c):
    path, body = c.rng.choice([("/generate", {"inputs": ""}), ("/v1/chat/completions", {"messages": []}), ("/generate", {})])
    return "empty", c._http("POST", path, json.dumps(body).encode())


def _g_huge_body(c):
    body = b'{"inputs": "' + b"a" * (8 << 20) + b'"}'
    return "huge_body", c._http("POST", "/generate", body)


def _g_short_body(c):
    # Content-Length promises more than is sent, then the client closes its side.
    return "short_body", c._http("POST", "/generate", b'{"inputs": "x"}', clen=100)


def _g_unknown_route(c):
    return "unknown_route", c._http(c.rng.choice(["GET", "POST"]), c.rng.choice(["/nope", "/v1/nope", "/generate/x", "/%ff"]), b"")


def _g_wrong_method(c):
    return "wrong_method", c._http(c.rng.choice(["GET", "DELETE", "PUT"]), c.rng.choice(["/generate", "/v1/chat/completions"]), b"")


def _g_wrong_ctype(c):
    return "wrong_content_type", c._http("POST", "/generate", b"inputs=x", ctype=b"application/x-www-form-urlencoded")


def _g_not_http(c):
    return "not_http", bytes(c.rng.getrandbits(8) for _ in range(64)) + b"\r\n\r\n"


GARBAGE = [_g_invalid_json, _g_wrong_types, _g_bad_params, _g_empty, _g_huge_body, _g_short_body,
           _g_unknown_route, _g_wrong_method, _g_wrong_ctype, _g_not_http]
KINDS = ["valid_generate", "valid_generate_stream", "valid_chat", "valid_chat_stream",
         "cancel_midstream", "cancel_early", "garbage"]
WEIGHTS = [20, 15, 10, 10, 10, 5, 30]


def metrics(base):
    r = requests.get(base + "/metrics", timeout=10)
    r.raise_for_status()
    out = {}
    for line in r.text.splitlines():
        m = re.match(r"^([A-Za-z_:][\w:]*)(\{[^}]*\})?\s+(\S+)", line)
        if m:
            try:
                out[m.group(1) + (m.group(2) or "")] = float(m.group(3))
            except ValueError:
                pass
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", required=True)
    p.add_argument("--pid", type=int, required=True)
    p.add_argument("--seconds", type=float, default=30)
    p.add_argument("--clients", type=int, default=64)
    p.add_argument("--warmup", type=float, default=None, help="seconds before the RSS baseline (default: a third of the run, at most 20)")
    p.add_argument("--rss-margin-mib", type=float, default=24)
    p.add_argument("--rss-margin-frac", type=float, default=0.10)
    p.add_argument("--allow-busy", action="store_true", help="accept 429/503 (queue full) for valid requests")
    args = p.parse_args()
    base = args.url.rstrip("/")
    u = urlparse(base)
    warmup = args.warmup if args.warmup is not None else min(20.0, args.seconds / 3)

    stats, stop = Stats(), threading.Event()
    rss_samples = []
    t0 = time.monotonic()
    clients = [Client(i, args, stats, stop, u.hostname, u.port) for i in range(args.clients)]
    for c in clients:
        c.start()
    rss_warm = None
    while time.monotonic() - t0 < args.seconds:
        time.sleep(0.5)
        r = rss_kib(args.pid)
        rss_samples.append((round(time.monotonic() - t0, 1), r))
        if rss_warm is None and time.monotonic() - t0 >= warmup:
            rss_warm = r
        if not alive(args.pid):
            break
    rss_end_load = rss_kib(args.pid)
    stop.set()
    for c in clients:
        c.join(timeout=150)
    stuck = sum(c.is_alive() for c in clients)
    elapsed = time.monotonic() - t0

    failures = []
    if stuck:
        failures.append(f"{stuck} client(s) still waiting for an answer 150 s after the end")
    if not alive(args.pid):
        failures.append(f"server process {args.pid} is gone")
    busy = None
    m = {}
    if alive(args.pid):
        try:
            h = requests.get(base + "/health", timeout=30)
            if h.status_code != 200:
                failures.append(f"/health after the soak: {h.status_code}")
        except Exception as e:
            failures.append(f"/health after the soak: {e}")
        deadline = time.monotonic() + 30
        while True:
            try:
                m = metrics(base)
                busy_keys = [k for k in m if re.search(r"busy_sequences", k)]
                busy = sum(m[k] for k in busy_keys) if busy_keys else None
            except Exception as e:
                failures.append(f"/metrics: {e}")
                break
            if busy is None:
                failures.append("/metrics has no busy_sequences")
                break
            if busy == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        if busy not in (None, 0):
            failures.append(f"busy_sequences still {busy} 30 s after the load stopped")
    rss_idle = rss_kib(args.pid)

    with stats.lock:
        bad = list(stats.failures)
    valid_kinds = [k for k in KINDS if k.startswith("valid")]
    valid_total = sum(stats.counts[k] for k in valid_kinds)
    valid_ok = sum(stats.ok[k] for k in valid_kinds)
    for kind, what in bad[:15]:
        print(f"soak: FAIL {kind}: {what}")
    if bad:
        failures.append(f"{len(bad)} request(s) without the right answer (first shown above)")
    if valid_total == 0:
        failures.append("no valid request completed")
    if rss_warm and rss_end_load:
        allowed = rss_warm * (1 + args.rss_margin_frac) + args.rss_margin_mib * 1024
        if rss_end_load > allowed:
            failures.append(f"RSS grew from {rss_warm} KiB after warm-up to {rss_end_load} KiB (allowed {int(allowed)})")
    else:
        failures.append("could not read the server's RSS")

    result = {
        "seconds": round(elapsed, 1),
        "clients": args.clients,
        "requests": sum(v for k, v in stats.counts.items() if k != "busy"),
        "valid_ok": valid_ok,
        "valid_total": valid_total,
        "by_kind": dict(stats.counts),
        "garbage_answers": dict(sorted(stats.garbage_status.items())),
        "rss_kib": {"warm": rss_warm, "end_under_load": rss_end_load, "idle_after": rss_idle,
                    "max": max((r for _, r in rss_samples if r), default=None), "warmup_s": warmup},
        "rss_trace_kib": rss_samples[:: max(1, len(rss_samples) // 12)],
        "metrics_after": {k: v for k, v in m.items() if not k.startswith("#")},
    }
    print("soak: result " + json.dumps(result))
    if failures:
        for f in failures:
            print(f"soak: FAIL {f}")
        print(f"soak: FAILED ({len(failures)} problem(s))")
        return 1
    print(f"soak: ok: {result['requests']} requests in {result['seconds']} s by {args.clients} clients, "
          f"{valid_ok}/{valid_total} valid answered, RSS {rss_warm} KiB after warm-up -> {rss_end_load} KiB at the end")
    return 0


if __name__ == "__main__":
    sys.exit(main())

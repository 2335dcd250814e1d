#!/usr/bin/env python3
"""Full-precision greedy reference for a small Llama-architecture GGUF (SmolLM2-135M-Instruct).

Dequantizes every tensor with the `gguf` package and runs the forward pass in float64 NumPy:
no activation quantization, no reduced-precision KV cache. Prints the top-5 ids and logits of
every greedy step and the generated ids. On SmolLM2-135M-Instruct Q4_1 and the prompt
"The capital of France is" it prints exactly the values listed in shared/models/README.md
(first-step top-5 [17.3713, 14.8886, 13.2450, 13.0095, 12.9515], ids
[7042, 30, 198, 198, 504, 2988, 314, 42, 216, 34, 32, 33]), which is how tests/real_models.rs
knows that the listing is the model's full-precision output and that `--activations f32` is the
arithmetic that must reproduce it.

GGUF's Llama layout: weight rows are output features, RoPE rotates adjacent pairs (the
converter permuted Q/K), query head h reads KV head h / (n_head / n_kv_head), tied embeddings
when `output.weight` is absent.

Needs: pip install numpy gguf (CPU, ~10 s for 17 tokens of a 135M model; CI does not run this).
Usage: python3 scripts/smollm2-reference.py MODEL.gguf [--prompt 504,3575,282,4649,314] [-n 12]
"""
import argparse

import numpy as np
import gguf


def field(reader, key):
    f = reader.fields[key]
    return f.parts[f.data[0]][0]


def load(path):
    reader = gguf.GGUFReader(path)
    arch = bytes(reader.fields["general.architecture"].parts[-1]).decode()
    cfg = {
        "n_layer": int(field(reader, f"{arch}.block_count")),
        "n_head": int(field(reader, f"{arch}.attention.head_count")),
        "n_kv_head": int(field(reader, f"{arch}.attention.head_count_kv")),
        "eps": float(field(reader, f"{arch}.attention.layer_norm_rms_epsilon")),
        "rope_base": float(field(reader, f"{arch}.rope.freq_base")),
    }
    weights = {}
    for t in reader.tensors:
        shape = [int(d) for d in reversed(t.shape)]
        weights[t.name] = np.asarray(gguf.quants.dequantize(t.data, t.tensor_type), dtype=np.float64).reshape(shape)
    return cfg, weights


class Model:
    def __init__(self, cfg, w):
        self.cfg, self.w = cfg, w
        self.dim = w["token_embd.weight"].shape[1]
        self.head_dim = self.dim // cfg["n_head"]
        self.output = w.get("output.weight", w["token_embd.weight"])
        self.keys = [[] for _ in range(cfg["n_layer"])]
        self.values = [[] for _ in range(cfg["n_layer"])]

    def rms_norm(self, x, weight):
        return x / np.sqrt(np.mean(x * x) + self.cfg["eps"]) * weight

    def rope(self, x, pos):
        half = self.head_dim // 2
        theta = pos * self.cfg["rope_base"] ** (-2.0 * np.arange(half) / self.head_dim)
        cos, sin = np.cos(theta), np.sin(theta)
        even, odd = x[:, 0::2], x[:, 1::2]
        out = np.empty_like(x)
        out[:, 0::2] = even * cos - odd * sin
        out[:, 1::2] = even * sin + odd * cos
        return out

    def attention(self, layer, x, pos):
        cfg, w, hd = self.cfg, self.w, self.head_dim
        p = f"blk.{layer}."
        h = self.rms_norm(x, w[p + "attn_norm.weight"])
        q = self.rope((w[p + "attn_q.weight"] @ h).reshape(cfg["n_head"], hd), pos)
        k = self.rope((w[p + "attn_k.weight"] @ h).reshape(cfg["n_kv_head"], hd), pos)
        v = (w[p + "attn_v.weight"] @ h).reshape(cfg["n_kv_head"], hd)
        self.keys[layer].append(k)
        self.values[layer].append(v)
        keys, values = np.stack(self.keys[layer]), np.stack(self.values[layer])
        group = cfg["n_head"] // cfg["n_kv_head"]
        out = np.empty((cfg["n_head"], hd))
        for head in range(cfg["n_head"]):
            kv = head // group
            scores = keys[:, kv, :] @ q[head] / np.sqrt(hd)
            weights = np.exp(scores - scores.max())
            out[head] = (weights / weights.sum()) @ values[:, kv, :]
        return w[p + "attn_output.weight"] @ out.reshape(-1)

    def ffn(self, layer, x):
        w, p = self.w, f"blk.{layer}."
        h = self.rms_norm(x, w[p + "ffn_norm.weight"])
        gate, up = w[p + "ffn_gate.weight"] @ h, w[p + "ffn_up.weight"] @ h
        return w[p + "ffn_down.weight"] @ (gate / (1.0 + np.exp(-gate)) * up)

    def step(self, token, pos):
        x = self.w["token_embd.weight"][token].copy()
        for layer in range(self.cfg["n_layer"]):
            x = x + self.attention(layer, x, pos)
            x = x + self.ffn(layer, x)
        return self.output @ self.rms_norm(x, self.w["output_norm.weight"])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model")
    ap.add_argument("--prompt", default="504,3575,282,4649,314", help="comma-separated token ids")
    ap.add_argument("-n", type=int, default=12, help="tokens to generate")
    args = ap.parse_args()
    model = Model(*load(args.model))
    prompt = [int(t) for t in args.prompt.split(",")]
    for pos, token in enumerate(prompt):
        logits = model.step(token, pos)
    generated = []
    for i in range(args.n):
        top = np.argsort(-logits)[:5]
        print(f"step {i}: top-5 " + ", ".join(f"{int(t)}:{logits[t]:.4f}" for t in top))
        generated.append(int(top[0]))
        logits = model.step(generated[-1], len(prompt) + i)
    print("greedy ids:", generated)


if __name__ == "__main__":
    main()

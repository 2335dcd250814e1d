#!/usr/bin/env python3
"""Writes tests/fixtures/hf_golden/tiny_logits.json: golden logits computed by Hugging Face
`transformers` (LlamaForCausalLM, float32, eager attention) for the tiny random Llama checkpoint
the converter tests build (tests/convert_support/mod.rs, `write_checkpoint(dir, tied=false)`),
with norm weights and q/k projections rescaled (`sharpen`) so attention is not uniform.
tests/model_hf_golden.rs converts that checkpoint with our converter and compares our forward
pass with these logits.

The checkpoint is rebuilt here bit for bit from the same generator (xorshift64 with the same
seeds, f32 arithmetic, rounded to f16), so no Rust build is needed. The fixture records the
SHA-256 of every tensor's f16 bytes; the test recomputes them from the Rust generator, so the
two can never silently drift apart.

What is stored (the vocabulary is 32000, so full rows for every position would be ~2 MB):
for every position of a fixed 18-token sequence, the logits of a fixed strided subset of the
vocabulary (every 61st id plus the last id) and the 16 largest logits with their ids, each
printed with 9 significant digits (an f32 round-trips exactly).

Needs: pip install torch transformers safetensors numpy (CPU is enough; CI does not run this).
Usage: python3 scripts/make-hf-golden.py [--out PATH]
"""
import argparse
import hashlib
import json
import os
import tempfile

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "fixtures", "hf_golden", "tiny_logits.json")

# Must equal tests/convert_support/mod.rs.
HIDDEN, FF, HEADS, KV_HEADS, LAYERS, VOCAB = 256, 512, 4, 2, 2, 32000
HEAD_DIM = HIDDEN // HEADS

# BOS, "The capital of France is Paris, and the capital of Germany is Berlin." (Llama-2 ids),
# then the last vocabulary id and EOS so the ends of the embedding table are exercised too.
TOKENS = [1, 450, 7483, 310, 3444, 338, 3681, 29892, 322, 278, 7483, 310, 9556, 338, 5115, 29889, 31999, 2]
STRIDE = 61
TOP_K = 16
M64 = (1 << 64) - 1


def weights(seed, n):
    """convert_support::weights: xorshift64 (<<13, >>7, <<17), top 24 bits -> f32 in +-0.05."""
    s = ((seed * 0x9E3779B97F4A7C15) & M64) | 1
    top = np.empty(n, dtype=np.uint32)
    for i in range(n):
        s ^= (s << 13) & M64
        s ^= s >> 7
        s ^= (s << 17) & M64
        top[i] = s >> 40
    # Same f32 operations in the same order as the Rust code (no fused multiply-add there).
    v = top.astype(np.float32) / np.float32(1 << 24) - np.float32(0.5)
    return v * np.float32(0.1)


def checkpoint_tensors():
    """convert_support::checkpoint_tensors(tied = false): (name, shape, f16 array)."""
    t = [("model.embed_tokens.weight", (VOCAB, HIDDEN))]
    for l in range(LAYERS):
        p = f"model.layers.{l}"
        t += [
            (f"{p}.input_layernorm.weight", (HIDDEN,)),
            (f"{p}.self_attn.q_proj.weight", (HIDDEN, HIDDEN)),
            (f"{p}.self_attn.k_proj.weight", (KV_HEADS * HEAD_DIM, HIDDEN)),
            (f"{p}.self_attn.v_proj.weight", (KV_HEADS * HEAD_DIM, HIDDEN)),
            (f"{p}.self_attn.o_proj.weight", (HIDDEN, HIDDEN)),
            (f"{p}.post_attention_layernorm.weight", (HIDDEN,)),
            (f"{p}.mlp.gate_proj.weight", (FF, HIDDEN)),
            (f"{p}.mlp.up_proj.weight", (FF, HIDDEN)),
            (f"{p}.mlp.down_proj.weight", (HIDDEN, FF)),
        ]
    t += [("model.norm.weight", (HIDDEN,)), ("lm_head.weight", (VOCAB, HIDDEN))]
    out = []
    for i, (name, shape) in enumerate(t):
        v = weights(i + 1, int(np.prod(shape))).astype(np.float16).reshape(shape)
        out.append((name, shape, sharpen(name, v)))
    return out


def sharpen(name, v):
    """tests/hf_golden_support/mod.rs `sharpen`: the converter tests' weights are all ~0.05, which
    leaves attention uniform (RoPE would not matter) and logits ~0.05. Norm weights become
    1 + 8w (in [0.6, 1.4]) and the q/k projections are scaled by 4 (attention scores of a few
    units), in f32 arithmetic rounded to f16 like the Rust side."""
    x = v.astype(np.float32)
    if name.endswith("norm.weight"):
        return (np.float32(1.0) + np.float32(8.0) * x).astype(np.float16)
    if name.endswith(("q_proj.weight", "k_proj.weight")):
        return (np.float32(4.0) * x).astype(np.float16)
    return v


CONFIG = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": HIDDEN,
    "intermediate_size": FF,
    "num_hidden_layers": LAYERS,
    "num_attention_heads": HEADS,
    "num_key_value_heads": KV_HEADS,
    "max_position_embeddings": 2048,
    "rms_norm_eps": 1e-05,
    "rope_theta": 10000.0,
    "rope_scaling": {"type": "linear", "factor": 2.0},
    "vocab_size": VOCAB,
    "tie_word_embeddings": False,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "torch_dtype": "float16",
}


def g9(x):
    """An f32 printed so that it parses back to the same f32."""
    return float(f"{float(x):.9g}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=OUT)
    args = ap.parse_args()

    import torch
    import transformers
    from safetensors.numpy import save_file
    from transformers import LlamaForCausalLM

    tensors = checkpoint_tensors()
    with tempfile.TemporaryDirectory() as d:
        save_file({n: v for n, _, v in tensors}, os.path.join(d, "model.safetensors"))
        with open(os.path.join(d, "config.json"), "w") as f:
            json.dump(CONFIG, f)
        model = LlamaForCausalLM.from_pretrained(d, dtype=torch.float32, attn_implementation="eager")
    model.eval()
    # The linear RoPE scaling must have been understood, or the golden positions are wrong.
    rope = getattr(model.config, "rope_parameters", None) or getattr(model.config, "rope_scaling", None)
    assert rope and rope.get("factor") == 2.0 and rope.get("rope_type", rope.get("type")) == "linear", rope

    with torch.no_grad():
        logits = model(torch.tensor([TOKENS])).logits[0].float().numpy()
    assert logits.shape == (len(TOKENS), VOCAB)

    ids = list(range(0, VOCAB, STRIDE))
    if ids[-1] != VOCAB - 1:
        ids.append(VOCAB - 1)
    positions = []
    for row in logits:
        top = np.argsort(-row, kind="stable")[:TOP_K]
        positions.append(
            {
                "sampled": [g9(row[i]) for i in ids],
                "top": [[int(i), g9(row[i])] for i in top],
            }
        )
    fixture = {
        "about": "HF transformers LlamaForCausalLM float32 logits for the tiny checkpoint of "
        "tests/convert_support (tied=false, sharpened); written by scripts/make-hf-golden.py",
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "tensor_sha256_f16": {n: hashlib.sha256(v.astype("<f2").tobytes()).hexdigest() for n, _, v in tensors},
        "tokens": TOKENS,
        "vocab": VOCAB,
        "sampled_ids": ids,
        "positions": positions,
    }
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(fixture, f, separators=(",", ":"))
        f.write("\n")
    print(f"wrote {args.out}: {os.path.getsize(args.out)} bytes, {len(TOKENS)} positions, "
          f"{len(ids)} sampled ids, logits in [{logits.min():.4f}, {logits.max():.4f}]")


if __name__ == "__main__":
    main()

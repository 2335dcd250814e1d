#!/usr/bin/env python3
"""Writes a Llama-2-7B-shaped checkpoint with random F16 weights, sharded like the HF repo
(model-0000N-of-00003.safetensors + model.safetensors.index.json, ~13.5 GB), plus config.json and
the shared Llama-2 tokenizer.model, for measuring `edgeact quantize` time and peak RSS.

The weights are a 64 MiB block of random f16 values (std 0.02) repeated, so writing is disk
bound; quantization cost does not depend on the values. Needs only numpy (no torch).

usage: python3 scripts/make-7b-checkpoint.py OUTDIR [--layers 32] [--tokenizer PATH]
"""
import argparse
import json
import os
import shutil

import numpy as np

p = argparse.ArgumentParser()
p.add_argument("out")
p.add_argument("--layers", type=int, default=32)
p.add_argument("--tokenizer", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../shared/models/llama2-tokenizer/tokenizer.model"))
args = p.parse_args()

H, FF, V, L = 4096, 11008, 32000, args.layers
os.makedirs(args.out, exist_ok=True)

tensors = [("model.embed_tokens.weight", (V, H))]
for i in range(L):
    q = f"model.layers.{i}."
    tensors += [
        (q + "self_attn.q_proj.weight", (H, H)),
        (q + "self_attn.k_proj.weight", (H, H)),
        (q + "self_attn.v_proj.weight", (H, H)),
        (q + "self_attn.o_proj.weight", (H, H)),
        (q + "mlp.gate_proj.weight", (FF, H)),
        (q + "mlp.up_proj.weight", (FF, H)),
        (q + "mlp.down_proj.weight", (H, FF)),
        (q + "input_layernorm.weight", (H,)),
        (q + "post_attention_layernorm.weight", (H,)),
    ]
tensors += [("model.norm.weight", (H,)), ("lm_head.weight", (V, H))]

# Split into 3 shards of roughly equal size, in order (as HF does).
sizes = [int(np.prod(s)) * 2 for _, s in tensors]
total = sum(sizes)
shards, cur, acc = [[]], 0, 0
for t, n in zip(tensors, sizes):
    if acc > (len(shards)) * total / 3 and len(shards) < 3:
        shards.append([])
    shards[-1].append(t)
    acc += n

rng = np.random.default_rng(0)
block = (rng.standard_normal(32 << 20) * 0.02).astype(np.float16).tobytes()  # 64 MiB
weight_map = {}
n_shards = len(shards)
for si, shard in enumerate(shards):
    fname = f"model-{si + 1:05d}-of-{n_shards:05d}.safetensors"
    header, off = {}, 0
    for name, shape in shard:
        n = int(np.prod(shape)) * 2
        header[name] = {"dtype": "F16", "shape": list(shape), "data_offsets": [off, off + n]}
        off += n
        weight_map[name] = fname
    hb = json.dumps(header).encode()
    hb += b" " * ((8 - (8 + len(hb)) % 8) % 8)
    with open(os.path.join(args.out, fname), "wb") as f:
        f.write(len(hb).to_bytes(8, "little"))
        f.write(hb)
        for name, shape in shard:
            n = int(np.prod(shape)) * 2
            if len(shape) == 1:
                f.write(np.ones(shape, dtype=np.float16).tobytes())
                continue
            while n > 0:
                k = min(n, len(block))
                f.write(block[:k])
                n -= k
    print("wrote", fname)

with open(os.path.join(args.out, "model.safetensors.index.json"), "w") as f:
    json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)
config = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": H,
    "intermediate_size": FF, "num_hidden_layers": L, "num_attention_heads": 32,
    "num_key_value_heads": 32, "max_position_embeddings": 4096, "rms_norm_eps": 1e-05,
    "rope_theta": 10000.0, "vocab_size": V, "tie_word_embeddings": False,
    "bos_token_id": 1, "eos_token_id": 2, "torch_dtype": "float16",
}
with open(os.path.join(args.out, "config.json"), "w") as f:
    json.dump(config, f, indent=2)
shutil.copy(args.tokenizer, os.path.join(args.out, "tokenizer.model"))
print("done:", total / 1e9, "GB of weights")

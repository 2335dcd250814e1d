#!/usr/bin/env python3
"""Reference merge of a PEFT LoRA adapter into a Llama checkpoint, with numpy only.

usage: lora-reference.py BASE_DIR ADAPTER_DIR OUT.safetensors [--scale S]

Reads BASE_DIR/model.safetensors and ADAPTER_DIR/{adapter_config.json,
adapter_model.safetensors}, computes for every adapted weight
    W + S * scale * B @ A     (scale = lora_alpha / r, or lora_alpha / sqrt(r) with use_rslora)
in float64, applies the rotary row permutation llama.cpp's converter gives q_proj and k_proj
(w.reshape(n_head, 2, head_dim // 2, in).swapaxes(1, 2)), and writes the results as F32
under their GGUF names (blk.N.attn_q.weight, ...) to OUT.safetensors. tests/convert_lora.rs
compares them with `edgeact quantize --lora` output. Setup: scripts/setup.sh installs numpy
into its venv (~/.cache/edgeact/pyclients).
"""

import argparse
import json
import math
import struct

import numpy as np

GGUF = {
    "q_proj": "attn_q",
    "k_proj": "attn_k",
    "v_proj": "attn_v",
    "o_proj": "attn_output",
    "gate_proj": "ffn_gate",
    "up_proj": "ffn_up",
    "down_proj": "ffn_down",
}


def read_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    body = data[8 + n :]
    out = {}
    for name, t in header.items():
        if name == "__metadata__":
            continue
        begin, end = t["data_offsets"]
        raw = body[begin:end]
        if t["dtype"] == "F32":
            v = np.frombuffer(raw, dtype="<f4")
        elif t["dtype"] == "F16":
            v = np.frombuffer(raw, dtype="<f2")
        elif t["dtype"] == "BF16":
            v = (np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
        else:
            raise SystemExit(f"{path}: tensor {name}: dtype {t['dtype']} is not handled")
        out[name] = v.astype(np.float64).reshape(t["shape"])
    return out


def write_safetensors(path, tensors):
    header = {}
    offset = 0
    blobs = []
    for name, v in tensors.items():
        b = np.ascontiguousarray(v, dtype="<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(v.shape), "data_offsets": [offset, offset + len(b)]}
        offset += len(b)
        blobs.append(b)
    h = json.dumps(header).encode()
    h += b" " * ((8 - (8 + len(h)) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def permute(w, n_head):
    rows, cols = w.shape
    return w.reshape(n_head, 2, rows // n_head // 2, cols).swapaxes(1, 2).reshape(rows, cols)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("base")
    ap.add_argument("adapter")
    ap.add_argument("out")
    ap.add_argument("--scale", type=float, default=1.0)
    args = ap.parse_args()

    with open(f"{args.base}/config.json") as f:
        config = json.load(f)
    n_head = config["num_attention_heads"]
    n_head_kv = config.get("num_key_value_heads") or n_head
    with open(f"{args.adapter}/adapter_config.json") as f:
        lcfg = json.load(f)
    r = lcfg["r"]
    scale = args.scale * lcfg["lora_alpha"] / (math.sqrt(r) if lcfg.get("use_rslora") else r)

    base = read_safetensors(f"{args.base}/model.safetensors")
    lora = read_safetensors(f"{args.adapter}/adapter_model.safetensors")
    merged = {}
    for key, a in lora.items():
        if not key.endswith(".lora_A.weight"):
            continue
        path = key[len("base_model.model.") : -len(".lora_A.weight")]
        b = lora[key.replace(".lora_A.", ".lora_B.")]
        w = base[path + ".weight"] + scale * (b @ a)
        parts = path.split(".")  # model.layers.N.self_attn.q_proj
        layer, module = parts[2], parts[4]
        if module == "q_proj":
            w = permute(w, n_head)
        elif module == "k_proj":
            w = permute(w, n_head_kv)
        merged[f"blk.{layer}.{GGUF[module]}.weight"] = w
    write_safetensors(args.out, merged)


if __name__ == "__main__":
    main()

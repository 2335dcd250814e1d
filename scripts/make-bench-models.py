#!/usr/bin/env python3
"""Write random-weight GGUF files with real Llama shapes, for speed benchmarks.

Speed does not depend on weight values, so every quantized tensor is filled by repeating a
random pattern of *valid* blocks (finite, small f16 scales; random quants). The Llama-2
SentencePiece vocabulary (tokenizer.* keys) is copied from the shared vocab-only GGUF so that
llama.cpp can load the same files for comparison runs; a shape with a larger vocabulary
(AgentLM-70B's 32256) gets "[PAD<id>]" tokens of type UNUSED appended, as llama.cpp's
converter pads such checkpoints. output.weight is random over the whole tensor (not a repeated
pattern), so no two vocabulary rows are equal and greedy decoding has no exact logit ties.

Shapes are AgentLM's three sizes (Llama-2 7B, 13B and 70B) and TinyLlama-1.1B. A shape name
may end in "-<N>l" for a cut to its first N layers ("70b-2l": the 70B shape with 2 layers),
for correctness tests that need the real matrix shapes without the full file.

Pure Python 3 standard library: no packages needed.

usage: make-bench-models.py OUTDIR [--shapes 7b,tinyllama (default); also 13b, 70b-2l, NAME-<N>l] [--types q4_0,q4_k_m] [--vocab GGUF]
"""

import argparse
import os
import random
import struct
import sys

ALIGN = 32

# ggml type ids, block sizes (elements) and block bytes.
TYPES = {"F32": (0, 1, 4), "Q4_0": (2, 32, 18), "Q4_K": (12, 256, 144), "Q6_K": (14, 256, 210)}

SHAPES = {
    # name: (dim, layers, heads, kv_heads, ffn, ctx, size label, vocab)
    "7b": (4096, 32, 32, 32, 11008, 4096, "7B", 32000),
    # Context 4096 (TinyLlama's own is 2048) so that the depth-3072 benchmarks fit.
    "tinyllama": (2048, 22, 32, 4, 5632, 4096, "1.1B", 32000),
    # AgentLM-13B (Llama-2-13B): 40 heads of 128, no GQA.
    "13b": (5120, 40, 40, 40, 13824, 4096, "13B", 32000),
    # AgentLM-70B's config.json: GQA with 8 KV heads, vocab_size 32256.
    "70b": (8192, 80, 64, 8, 28672, 4096, "70B", 32256),
}

DEFAULT_SHAPES = "7b,tinyllama"


def parse_shape(spec):
    """'70b-2l' -> ('70b', 2); '7b' -> ('7b', None)."""
    base, layers = spec, None
    if "-" in spec and spec.endswith("l"):
        head, tail = spec.rsplit("-", 1)
        if tail[:-1].isdigit():
            base, layers = head, int(tail[:-1])
    if base not in SHAPES:
        sys.exit(f"unknown shape {spec!r} (known: {', '.join(SHAPES)}, each optionally cut as NAME-<N>l)")
    if layers is not None and not 1 <= layers <= SHAPES[base][1]:
        sys.exit(f"shape {spec!r}: the layer cut must be 1..{SHAPES[base][1]}")
    return base, layers

FILE_TYPE = {"q4_0": 2, "q4_k_m": 15}  # llama_ftype values (general.file_type)


def use_more_bits(i, n):
    """llama.cpp's Q4_K_M rule for which layers' attn_v / ffn_down get Q6_K."""
    return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2


def tensor_type(name, layer, n_layers, scheme):
    if name == "output.weight":
        return "Q6_K"
    if scheme == "q4_0":
        return "Q4_0"
    if name.endswith(("attn_v.weight", "ffn_down.weight")) and use_more_bits(layer, n_layers):
        return "Q6_K"
    return "Q4_K"


def f16_bits(x):
    return struct.pack("<e", x)


def pattern(ty, rng, n_blocks=4096):
    """n_blocks valid random blocks of type ty."""
    out = bytearray()
    for _ in range(n_blocks):
        if ty == "Q4_0":
            out += f16_bits(rng.uniform(0.002, 0.02)) + rng.randbytes(16)
        elif ty == "Q4_K":
            out += f16_bits(rng.uniform(0.001, 0.01)) + f16_bits(rng.uniform(0.001, 0.01))
            out += rng.randbytes(12) + rng.randbytes(128)
        elif ty == "Q6_K":
            scales = bytes(rng.randrange(1, 64) for _ in range(16))
            out += rng.randbytes(128) + rng.randbytes(64) + scales + f16_bits(rng.uniform(0.0005, 0.005))
        else:
            raise ValueError(ty)
    return bytes(out)


def random_tensor(ty, n_blocks, rng):
    """n_blocks independent valid random blocks (every block differs), built from one buffer
    of random bytes with each block's scales made valid; fast enough for a whole output matrix."""
    if ty == "Q6_K":
        data = bytearray(rng.randbytes(n_blocks * 210))
        # int8 sub-block scales in 1..63, f16 super-block scale in [0.0005, 0.005].
        scale_map = bytes((b & 63) | 1 for b in range(256))
        d_values = [f16_bits(0.0005 + 0.0045 * i / 255) for i in range(256)]
        for i in range(n_blocks):
            o = i * 210
            data[o + 192 : o + 208] = data[o + 192 : o + 208].translate(scale_map)
            data[o + 208 : o + 210] = d_values[data[o + 208]]
        return bytes(data)
    if ty == "Q4_0":
        data = bytearray(rng.randbytes(n_blocks * 18))
        d_values = [f16_bits(0.002 + 0.018 * i / 255) for i in range(256)]
        for i in range(n_blocks):
            data[i * 18 : i * 18 + 2] = d_values[data[i * 18]]
        return bytes(data)
    return pattern(ty, rng, n_blocks)


def gguf_string(s):
    b = s.encode()
    return struct.pack("<Q", len(b)) + b


def kv(key, vtype, payload):
    return gguf_string(key) + struct.pack("<I", vtype) + payload


def kv_u32(key, v):
    return kv(key, 4, struct.pack("<I", v))


def kv_f32(key, v):
    return kv(key, 6, struct.pack("<f", v))


def kv_str(key, v):
    return kv(key, 8, gguf_string(v))


SCALAR_SIZE = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}


def skip_value(buf, pos, vtype):
    if vtype in SCALAR_SIZE:
        return pos + SCALAR_SIZE[vtype]
    if vtype == 8:
        (n,) = struct.unpack_from("<Q", buf, pos)
        return pos + 8 + n
    if vtype == 9:
        (etype, n) = struct.unpack_from("<IQ", buf, pos)
        pos += 12
        if etype in SCALAR_SIZE:
            return pos + n * SCALAR_SIZE[etype]
        for _ in range(n):
            pos = skip_value(buf, pos, etype)
        return pos
    raise ValueError(f"unknown GGUF value type {vtype}")


def tokenizer_kvs(path, vocab):
    """Raw bytes of every tokenizer.* key/value of a GGUF file, and how many there are; with
    vocab larger than the file's, the token list is padded with "[PAD<id>]" UNUSED tokens."""
    with open(path, "rb") as f:
        buf = f.read()
    if buf[:4] != b"GGUF":
        sys.exit(f"{path} is not a GGUF file")
    _version, _n_tensors, n_kv = struct.unpack_from("<IQQ", buf, 4)
    pos = 24
    raw, count = bytearray(), 0
    for _ in range(n_kv):
        start = pos
        (klen,) = struct.unpack_from("<Q", buf, pos)
        key = buf[pos + 8 : pos + 8 + klen].decode()
        pos += 8 + klen
        (vtype,) = struct.unpack_from("<I", buf, pos)
        pos = skip_value(buf, pos + 4, vtype)
        if key.startswith("tokenizer."):
            raw += pad_array(key, buf[start:pos], len(key) + 8, vocab)
            count += 1
    return bytes(raw), count


def pad_array(key, entry, value_at, vocab):
    """The key/value bytes `entry` of a per-token array (tokens, scores, token_type) grown to
    `vocab` entries; any other entry unchanged. `value_at`: where the value type starts."""
    fill = {
        "tokenizer.ggml.tokens": lambda i: gguf_string(f"[PAD{i}]"),
        "tokenizer.ggml.scores": lambda i: struct.pack("<f", -1000.0),
        "tokenizer.ggml.token_type": lambda i: struct.pack("<i", 5),  # UNUSED
    }.get(key)
    if fill is None:
        return entry
    (vtype, etype, n) = struct.unpack_from("<IIQ", entry, value_at)
    if vtype != 9:
        sys.exit(f"{key} is not an array")
    if n > vocab:
        sys.exit(f"the vocabulary has {n} tokens, more than the shape's {vocab}")
    head = entry[:value_at] + struct.pack("<IIQ", vtype, etype, vocab)
    return head + entry[value_at + 16 :] + b"".join(fill(i) for i in range(n, vocab))


def write_model(path, shape, layer_cut, scheme, vocab_path, seed):
    dim, n_layers, heads, kv_heads, ffn, ctx, label, vocab = SHAPES[shape]
    if layer_cut is not None:
        n_layers = layer_cut
    head_dim = dim // heads
    kv_dim = kv_heads * head_dim
    rng = random.Random(seed)

    tensors = [("token_embd.weight", [dim, vocab], -1)]
    for i in range(n_layers):
        p = f"blk.{i}."
        tensors += [
            (p + "attn_norm.weight", [dim], i),
            (p + "attn_q.weight", [dim, dim], i),
            (p + "attn_k.weight", [dim, kv_dim], i),
            (p + "attn_v.weight", [dim, kv_dim], i),
            (p + "attn_output.weight", [dim, dim], i),
            (p + "ffn_norm.weight", [dim], i),
            (p + "ffn_gate.weight", [dim, ffn], i),
            (p + "ffn_up.weight", [dim, ffn], i),
            (p + "ffn_down.weight", [ffn, dim], i),
        ]
    tensors += [("output_norm.weight", [dim], -1), ("output.weight", [dim, vocab], -1)]

    tok_raw, tok_count = tokenizer_kvs(vocab_path, vocab)
    meta = [
        kv_str("general.architecture", "llama"),
        kv_str("general.name", f"random {shape}{'' if layer_cut is None else f' cut to {layer_cut} layers'} {scheme}"),
        kv_str("general.size_label", label),
        kv_u32("general.file_type", FILE_TYPE[scheme]),
        kv_u32("llama.context_length", ctx),
        kv_u32("llama.embedding_length", dim),
        kv_u32("llama.block_count", n_layers),
        kv_u32("llama.feed_forward_length", ffn),
        kv_u32("llama.attention.head_count", heads),
        kv_u32("llama.attention.head_count_kv", kv_heads),
        kv_u32("llama.rope.dimension_count", head_dim),
        kv_f32("llama.rope.freq_base", 10000.0),
        kv_f32("llama.attention.layer_norm_rms_epsilon", 1e-5),
    ]

    infos, layout, offset = bytearray(), [], 0
    for name, dims, layer in tensors:
        ty = "F32" if len(dims) == 1 else tensor_type(name, layer, n_layers, scheme)
        type_id, block, block_bytes = TYPES[ty]
        n = 1
        for d in dims:
            n *= d
        nbytes = n // block * block_bytes
        infos += gguf_string(name) + struct.pack("<I", len(dims))
        infos += b"".join(struct.pack("<Q", d) for d in dims)
        infos += struct.pack("<IQ", type_id, offset)
        layout.append((name, ty, nbytes))
        offset += (nbytes + ALIGN - 1) // ALIGN * ALIGN

    header = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(meta) + tok_count)
    header += b"".join(meta) + tok_raw + bytes(infos)
    header += bytes(-len(header) % ALIGN)

    patterns = {}
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(header)
        for name, ty, nbytes in layout:
            if name == "output.weight":
                f.write(random_tensor(ty, nbytes // TYPES[ty][2], rng))
            elif ty == "F32":
                data = struct.pack("<f", 1.0) * (nbytes // 4)
                f.write(data)
            else:
                pat = patterns.setdefault(ty, pattern(ty, rng))
                left = nbytes
                while left > 0:
                    chunk = pat[: min(left, len(pat))]
                    f.write(chunk)
                    left -= len(chunk)
            f.write(bytes(-nbytes % ALIGN))
    os.replace(tmp, path)
    print(f"wrote {path} ({os.path.getsize(path) / 2**30:.2f} GiB)")


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    default_vocab = os.path.join(here, "..", "..", "shared", "models", "llama2-tokenizer", "ggml-vocab-llama-spm.gguf")
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("outdir")
    ap.add_argument("--shapes", default=DEFAULT_SHAPES)
    ap.add_argument("--types", default="q4_0,q4_k_m")
    ap.add_argument("--vocab", default=default_vocab)
    ap.add_argument("--seed", type=int, default=1234)
    args = ap.parse_args()
    os.makedirs(args.outdir, exist_ok=True)
    for spec in args.shapes.split(","):
        shape, layer_cut = parse_shape(spec)
        for scheme in args.types.split(","):
            if scheme not in FILE_TYPE:
                sys.exit(f"unknown type {scheme!r} (known: {', '.join(FILE_TYPE)})")
            out = os.path.join(args.outdir, f"{spec}-{scheme}.gguf")
            write_model(out, shape, layer_cut, scheme, args.vocab, args.seed)


if __name__ == "__main__":
    main()

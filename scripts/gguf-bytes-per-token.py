#!/usr/bin/env python3
"""Bytes a Llama GGUF reads from memory per generated token, for the decode roofline of
scripts/bench-side-by-side.sh: every tensor except token_embd (one row of it is read), plus the
F16 KV cache at each context depth (keys and values of every layer at `depth` positions).

usage: gguf-bytes-per-token.py MODEL.gguf [DEPTHS]   (DEPTHS comma-separated, default 0)
prints one line per depth: "<depth> <bytes>"
"""

import struct
import sys

# ggml type id: (elements per block, bytes per block)
BLOCKS = {0: (1, 4), 1: (1, 2), 2: (32, 18), 3: (32, 20), 6: (32, 22), 7: (32, 24), 8: (32, 34),
          10: (256, 84), 11: (256, 110), 12: (256, 144), 13: (256, 176), 14: (256, 210), 30: (1, 2)}
SCALAR = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
SCALAR_FMT = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}


def read_value(buf, pos, vtype):
    if vtype in SCALAR:
        return struct.unpack_from(SCALAR_FMT[vtype], buf, pos)[0], pos + SCALAR[vtype]
    if vtype == 8:
        (n,) = struct.unpack_from("<Q", buf, pos)
        return buf[pos + 8 : pos + 8 + n].decode(errors="replace"), pos + 8 + n
    if vtype == 9:
        etype, n = struct.unpack_from("<IQ", buf, pos)
        pos += 12
        if etype in SCALAR:
            return None, pos + n * SCALAR[etype]
        for _ in range(n):
            _, pos = read_value(buf, pos, etype)
        return None, pos
    sys.exit(f"unknown GGUF value type {vtype}")


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    depths = [int(d) for d in (sys.argv[2] if len(sys.argv) > 2 else "0").split(",")]
    with open(sys.argv[1], "rb") as f:
        buf = f.read(64 << 20)  # metadata and tensor table (the vocabulary is the big part)
    if buf[:4] != b"GGUF":
        sys.exit(f"{sys.argv[1]} is not a GGUF file")
    _version, n_tensors, n_kv = struct.unpack_from("<IQQ", buf, 4)
    pos, meta = 24, {}
    for _ in range(n_kv):
        (klen,) = struct.unpack_from("<Q", buf, pos)
        key = buf[pos + 8 : pos + 8 + klen].decode()
        (vtype,) = struct.unpack_from("<I", buf, pos + 8 + klen)
        meta[key], pos = read_value(buf, pos + 12 + klen, vtype)
    weights = 0
    for _ in range(n_tensors):
        (nlen,) = struct.unpack_from("<Q", buf, pos)
        name = buf[pos + 8 : pos + 8 + nlen].decode()
        pos += 8 + nlen
        (n_dims,) = struct.unpack_from("<I", buf, pos)
        dims = struct.unpack_from(f"<{n_dims}Q", buf, pos + 4)
        ty, _offset = struct.unpack_from("<IQ", buf, pos + 4 + 8 * n_dims)
        pos += 4 + 8 * n_dims + 12
        if ty not in BLOCKS:
            sys.exit(f"tensor {name}: ggml type {ty} not in this script's table")
        n = 1
        for d in dims:
            n *= d
        block, size = BLOCKS[ty]
        nbytes = n // block * size
        weights += nbytes // dims[-1] if name == "token_embd.weight" else nbytes
    arch = meta.get("general.architecture", "llama")
    layers = meta[f"{arch}.block_count"]
    heads = meta[f"{arch}.attention.head_count"]
    kv_dim = meta[f"{arch}.embedding_length"] // heads * meta.get(f"{arch}.attention.head_count_kv", heads)
    for d in depths:
        print(d, weights + 2 * layers * d * kv_dim * 2)


if __name__ == "__main__":
    main()

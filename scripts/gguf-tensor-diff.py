#!/usr/bin/env python3
"""Compares the tensors of two GGUF files by name: type, shape and data bytes.

usage: scripts/gguf-tensor-diff.py A.gguf B.gguf

Prints one summary line (tensors compared, identical, and a count per type pair), then one
line per tensor that differs (name, types, shapes, and for equal types how many blocks
differ). Exits 0 when every tensor is present in both with identical type and bytes, 1
otherwise. Metadata (key/value pairs) is not compared. Standard library only.
"""
import collections
import mmap
import struct
import sys

# ggml type id -> (name, block elements, block bytes), for the types these files hold.
TYPES = {
    0: ("F32", 1, 4), 1: ("F16", 1, 2), 2: ("Q4_0", 32, 18), 3: ("Q4_1", 32, 20),
    6: ("Q5_0", 32, 22), 7: ("Q5_1", 32, 24), 8: ("Q8_0", 32, 34), 10: ("Q2_K", 256, 84),
    11: ("Q3_K", 256, 110), 12: ("Q4_K", 256, 144), 13: ("Q5_K", 256, 176),
    14: ("Q6_K", 256, 210), 30: ("BF16", 1, 2),
}
# GGUF metadata value type id -> struct format of the scalar types (8 string, 9 array).
SCALAR = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}


def read_gguf(path):
    f = open(path, "rb")
    m = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    pos = 0

    def take(fmt):
        nonlocal pos
        vals = struct.unpack_from("<" + fmt, m, pos)
        pos += struct.calcsize("<" + fmt)
        return vals[0] if len(vals) == 1 else vals

    def string():
        nonlocal pos
        n = take("Q")
        s = bytes(m[pos:pos + n]).decode("utf-8", "replace")
        pos += n
        return s

    def value(t):
        nonlocal pos
        if t in SCALAR:
            return take(SCALAR[t])
        if t == 8:
            return string()
        if t == 9:
            et, n = take("I"), take("Q")
            if et in SCALAR:
                pos += struct.calcsize("<" + SCALAR[et]) * n
                return None
            return [value(et) for _ in range(n)]
        raise ValueError(f"{path}: unknown metadata type {t}")

    if bytes(m[0:4]) != b"GGUF":
        raise ValueError(f"{path}: not a GGUF file")
    pos = 4
    version, n_tensors, n_kv = take("I"), take("Q"), take("Q")
    alignment = 32
    for _ in range(n_kv):
        key = string()
        v = value(take("I"))
        if key == "general.alignment":
            alignment = v
    infos = []
    for _ in range(n_tensors):
        name = string()
        dims = [take("Q") for _ in range(take("I"))]
        ty, off = take("I"), take("Q")
        infos.append((name, dims, ty, off))
    data = (pos + alignment - 1) // alignment * alignment
    tensors = {}
    for name, dims, ty, off in infos:
        n = 1
        for d in dims:
            n *= d
        _, blk, size = TYPES[ty]
        tensors[name] = (dims, ty, data + off, n // blk * size, size)
    return m, tensors


def main():
    a_path, b_path = sys.argv[1:3]
    am, a = read_gguf(a_path)
    bm, b = read_gguf(b_path)
    pairs = collections.Counter()
    problems = []
    same = 0
    for name in sorted(set(a) | set(b)):
        if name not in a or name not in b:
            problems.append(f"{name}: only in {'first' if name in a else 'second'} file")
            continue
        (ad, at, ao, an, asz), (bd, bt, bo, bn, _) = a[name], b[name]
        pairs[(TYPES[at][0], TYPES[bt][0])] += 1
        if at != bt or ad != bd:
            problems.append(f"{name}: {TYPES[at][0]} {ad} vs {TYPES[bt][0]} {bd}")
            continue
        if am[ao:ao + an] == bm[bo:bo + bn]:
            same += 1
            continue
        diff = sum(1 for i in range(0, an, asz) if am[ao + i:ao + i + asz] != bm[bo + i:bo + i + asz])
        problems.append(f"{name}: {TYPES[at][0]}, {diff} of {an // asz} blocks differ")
    counts = ", ".join(f"{x}" + (f"/{y}" if x != y else "") + f" x{n}" for (x, y), n in sorted(pairs.items()))
    print(f"{len(set(a) | set(b))} tensors, {same} byte-identical; types (first/second): {counts}")
    for p in problems:
        print("  differs: " + p)
    sys.exit(0 if not problems else 1)


if __name__ == "__main__":
    main()

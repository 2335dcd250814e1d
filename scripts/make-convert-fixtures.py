#!/usr/bin/env python3
"""Writes the small committed fixtures of the converter tests (tests/fixtures/convert/).

- gguf-py-align64.gguf: written by the `gguf` PyPI package (the reference writer used by
  llama.cpp's convert scripts): every metadata value type, nested arrays, general.alignment 64,
  and F32 / F16 / Q8_0 / I32 tensors with known contents. tests/gguf_writer_compat.rs checks
  our reader sees exactly these values.
- tiny-pytorch/: a tiny PyTorch `.bin` checkpoint (F32, F16, BF16; one tensor a view with a
  storage offset; tied storages) plus a sharded copy, written by `torch.save` (zip format,
  pickle protocol 2); tests/convert_pytorch.rs compares it with values listed in the test.

usage: pip install gguf==0.19.0 numpy torch; python3 scripts/make-convert-fixtures.py
"""
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "tests", "fixtures", "convert")


def gguf_fixture():
    import gguf

    path = os.path.join(OUT, "gguf-py-align64.gguf")
    w = gguf.GGUFWriter(path, arch="llama")
    w.add_custom_alignment(64)
    w.add_uint8("t.u8", 200)
    w.add_int8("t.i8", -100)
    w.add_uint16("t.u16", 60000)
    w.add_int16("t.i16", -30000)
    w.add_uint32("t.u32", 4000000000)
    w.add_int32("t.i32", -2000000000)
    w.add_float32("t.f32", 1.5)
    w.add_uint64("t.u64", 18000000000000000000)
    w.add_int64("t.i64", -9000000000000000000)
    w.add_float64("t.f64", 2.25)
    w.add_bool("t.bool", True)
    w.add_string("t.str", "héllo ✓")
    w.add_array("t.arr_i32", [1, -2, 3])
    w.add_array("t.arr_str", ["a", "bb", ""])
    w.add_array("t.arr_f32", [0.5, -0.25])
    w.add_array("t.nested", [[1, 2], [3]])
    w.add_array("t.nested_str", [["x", "y"], ["z"]])
    a = np.arange(5, dtype=np.float32) * 0.5
    w.add_tensor("f32_vec", a)
    b = (np.arange(2 * 64, dtype=np.float32).reshape(2, 64) - 64.0) / 8.0
    w.add_tensor("f16_mat", b.astype(np.float16))
    q = gguf.quantize(b, gguf.GGMLQuantizationType.Q8_0)
    w.add_tensor("q8_mat", q, raw_shape=q.shape, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
    w.add_tensor("i32_3d", np.arange(24, dtype=np.int32).reshape(2, 3, 4))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    print("wrote", path, os.path.getsize(path), "bytes")


def torch_fixture():
    import torch
    from collections import OrderedDict

    d = os.path.join(OUT, "tiny-pytorch")
    os.makedirs(d, exist_ok=True)
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6) / 4.0 - 2.0
    sd = OrderedDict()
    sd["a.f32"] = base.clone()
    sd["b.f16"] = base.to(torch.float16)
    sd["c.bf16"] = base.to(torch.bfloat16)
    # A view into a shared storage at a non-zero offset (rows 1..3 of `a.f32`): torch.save keeps
    # the whole storage and records the offset.
    sd["d.view"] = sd["a.f32"][1:3]
    sd["e.vec"] = torch.tensor([1.0, -1.0, 0.5], dtype=torch.float32)
    torch.save(sd, os.path.join(d, "single.bin"))

    shard1 = OrderedDict([("a.f32", sd["a.f32"].clone()), ("e.vec", sd["e.vec"].clone())])
    shard2 = OrderedDict([("b.f16", sd["b.f16"].clone()), ("c.bf16", sd["c.bf16"].clone())])
    torch.save(shard1, os.path.join(d, "pytorch_model-00001-of-00002.bin"))
    torch.save(shard2, os.path.join(d, "pytorch_model-00002-of-00002.bin"))
    import json

    index = {
        "metadata": {"total_size": 0},
        "weight_map": {
            "a.f32": "pytorch_model-00001-of-00002.bin",
            "e.vec": "pytorch_model-00001-of-00002.bin",
            "b.f16": "pytorch_model-00002-of-00002.bin",
            "c.bf16": "pytorch_model-00002-of-00002.bin",
        },
    }
    with open(os.path.join(d, "pytorch_model.bin.index.json"), "w") as f:
        json.dump(index, f, indent=2)
    print("wrote", d)


def fuzz_seed():
    """A second small seed for fuzz/corpus/gguf_reader: default alignment, Q4_0 and F32 data."""
    import gguf

    path = os.path.join(HERE, "..", "fuzz", "corpus", "gguf_reader", "gguf-py-q4_0.gguf")
    w = gguf.GGUFWriter(path, arch="llama")
    w.add_block_count(1)
    w.add_array("tokenizer.ggml.tokens", ["<unk>", "<s>", "</s>"])
    x = (np.arange(64, dtype=np.float32).reshape(2, 32) - 32.0) / 16.0
    q = gguf.quantize(x, gguf.GGMLQuantizationType.Q4_0)
    w.add_tensor("w", q, raw_shape=q.shape, raw_dtype=gguf.GGMLQuantizationType.Q4_0)
    w.add_tensor("n", np.ones(7, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    print("wrote", path)


if __name__ == "__main__":
    os.makedirs(OUT, exist_ok=True)
    what = sys.argv[1:] or ["gguf", "torch", "seed"]
    if "gguf" in what:
        gguf_fixture()
    if "torch" in what:
        torch_fixture()
    if "seed" in what:
        fuzz_seed()

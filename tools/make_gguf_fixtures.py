#!/usr/bin/env python3
"""Make the GGUF fixtures of Anvil's C++ tests, with the PyPI `gguf` package as the reference.

Usage:
    python3 tools/make_gguf_fixtures.py --out tests/data/gguf [--smollm PATH/TO/SmolLM2-135M-Instruct.Q4_1.gguf]

Writes into --out:
  quant_<TYPE>.gguf / quant_<TYPE>.f32   for F32 F16 BF16 Q8_0 Q4_0 Q4_1 Q5_0 Q5_1 Q4_K Q5_K Q6_K: a GGUF
      (gguf.GGUFWriter) with two seeded random tensors, and gguf.quants.dequantize of each, in file order, as raw
      little-endian float32. Types gguf-py can quantize get one tensor quantized from random floats; every block
      type gets one tensor of random block bytes whose f16 scale fields hold random finite values (normal-sized,
      subnormal, zero and negative). F32/F16/BF16 get random normals and random non-NaN bit patterns.
  metadata.gguf / metadata.json   every metadata value type (scalars, arrays of each, arrays of strings, arrays
      nested two and three deep), tokenizer.ggml.* keys, general.alignment 64 and three small tensors; the JSON
      lists each key with its type and value as written.
  llama_linear_mqa.gguf, qwen2_bias.gguf, llama3_gqa.gguf   the Hugging Face fixtures tests/data/hf/<name> (made
      by tools/make_hf_fixtures.py) converted as llama.cpp's convert_hf_to_gguf.py does: same dtype (F16 / BF16),
      tensor names from gguf's TensorNameMap, for the llama architecture the q/k rows permuted into Meta's
      interleaved order (LlamaModel.permute), and llama3 rope scaling written as the rope_freqs.weight factors
      (LlamaModel.generate_extra_tensors). Their reference outputs are the HF fixtures' reference.json.
  smollm2_reference.json / smollm2_rows.f32   with --smollm (default: the scripts/fetch_model.sh cache path when
      present): the config, tensor type counts and tokenizer facts gguf-py reads from the real SmolLM2 file, and
      a few dequantized rows of token_embd.weight (Q8_0) and blk.0.attn_q.weight (Q4_1), and, when torch,
      transformers and accelerate are importable, transformers' top-8 logits per position and 24 greedy tokens
      for a chat prompt, with the model loaded from the same GGUF (AutoModelForCausalLM(..., gguf_file=...)).

Needs numpy and gguf (recorded in each JSON as gguf_version); the SmolLM2 transformers reference also needs torch,
transformers and accelerate. Deterministic for given package versions.
"""

import argparse
import importlib.metadata
import json
import math
import os
import struct
import sys

import numpy as np

import gguf
from gguf import GGMLQuantizationType as QT
from gguf import GGUFValueType as VT
from gguf.quants import dequantize, quant_shape_to_byte_shape, quantize

SEED = 20240611
GGUF_VERSION = importlib.metadata.version("gguf")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Byte offsets of the f16 scale fields (d, m, dmin) inside one block of each type.
SCALE_FIELDS = {
    QT.Q4_0: [0],
    QT.Q4_1: [0, 2],
    QT.Q5_0: [0],
    QT.Q5_1: [0, 2],
    QT.Q8_0: [0],
    QT.Q4_K: [0, 2],
    QT.Q5_K: [0, 2],
    QT.Q6_K: [208],
}
QUANTIZABLE = {QT.Q4_0, QT.Q4_1, QT.Q5_0, QT.Q5_1, QT.Q8_0}
TYPES = [QT.F32, QT.F16, QT.BF16, QT.Q8_0, QT.Q4_0, QT.Q4_1, QT.Q5_0, QT.Q5_1, QT.Q4_K, QT.Q5_K, QT.Q6_K]


def random_finite_f16(rng, n):
    """n finite f16 values as uint16 bits: mostly normal-sized, some subnormal, zero, negative, large."""
    normal = rng.normal(0.0, 0.05, size=n).astype(np.float16).view(np.uint16)
    bits = rng.integers(0, 1 << 16, size=n, dtype=np.uint32).astype(np.uint16)
    finite_bits = np.where((bits & 0x7C00) == 0x7C00, bits & 0x83FF, bits)  # exponent 31 -> subnormal
    subnormal = (rng.integers(1, 0x400, size=n) | (rng.integers(0, 2, size=n) << 15)).astype(np.uint16)
    choice = rng.integers(0, 10, size=n)
    out = np.where(choice < 6, normal, np.where(choice < 8, finite_bits, subnormal))
    out = np.where(choice == 9, np.uint16(0), out)
    return out.astype(np.uint16)


def random_blocks(rng, qtype, shape):
    """Random block bytes for a tensor of `shape` (elements) with finite f16 scale fields."""
    byte_shape = quant_shape_to_byte_shape(shape, qtype)
    data = rng.integers(0, 256, size=byte_shape, dtype=np.uint16).astype(np.uint8)
    block_size, type_size = gguf.GGML_QUANT_SIZES[qtype]
    blocks = data.reshape(-1, type_size)
    for off in SCALE_FIELDS[qtype]:
        blocks[:, off : off + 2] = random_finite_f16(rng, blocks.shape[0]).view(np.uint8).reshape(-1, 2)
    return blocks.reshape(byte_shape)


def random_plain_bits(rng, qtype, shape):
    """Random bit patterns of F32/F16/BF16 values, NaNs replaced by infinities (all finite or inf)."""
    if qtype == QT.F32:
        bits = rng.integers(0, 1 << 32, size=shape, dtype=np.uint64).astype(np.uint32)
        nan = ((bits & 0x7F800000) == 0x7F800000) & ((bits & 0x007FFFFF) != 0)
        return np.where(nan, bits & 0xFF800000, bits).astype(np.uint32).view(np.uint8).reshape(*shape[:-1], -1)
    bits = rng.integers(0, 1 << 16, size=shape, dtype=np.uint32).astype(np.uint16)
    exp_mask, mant_mask = (0x7C00, 0x03FF) if qtype == QT.F16 else (0x7F80, 0x007F)
    nan = ((bits & exp_mask) == exp_mask) & ((bits & mant_mask) != 0)
    return np.where(nan, bits & ~np.uint16(mant_mask), bits).astype(np.uint16).view(np.uint8).reshape(*shape[:-1], -1)


def plain_from_floats(qtype, values):
    if qtype == QT.F32:
        return values.astype(np.float32).view(np.uint8).reshape(*values.shape[:-1], -1)
    if qtype == QT.F16:
        return values.astype(np.float16).view(np.uint8).reshape(*values.shape[:-1], -1)
    return quantize(values.astype(np.float32), QT.BF16)


def write_quant_fixture(out_dir, qtype, rng):
    """Two tensors of `qtype` in a GGUF, and their gguf-py dequantization as raw float32."""
    shapes = [(4, 512), (2, 3, 256)]
    tensors = []
    if qtype in (QT.F32, QT.F16, QT.BF16):
        tensors.append(("plain.normal", plain_from_floats(qtype, rng.normal(0.0, 1.0, size=shapes[0]))))
        tensors.append(("plain.bits", random_plain_bits(rng, qtype, shapes[1])))
    else:
        if qtype in QUANTIZABLE:
            floats = rng.normal(0.0, 1.0, size=shapes[0]).astype(np.float32)
            tensors.append(("quant.from_floats", quantize(floats, qtype)))
        else:
            tensors.append(("quant.blocks_a", random_blocks(rng, qtype, shapes[0])))
        tensors.append(("quant.blocks_b", random_blocks(rng, qtype, shapes[1])))

    path = os.path.join(out_dir, f"quant_{qtype.name}.gguf")
    writer = gguf.GGUFWriter(path, arch="anvil-test")
    for name, data in tensors:
        writer.add_tensor(name, data, raw_dtype=qtype)
    write_and_close(writer)

    reference = [dequantize(data, qtype).astype(np.float32) for _, data in tensors]
    check_file_bytes(path, tensors)
    with open(os.path.join(out_dir, f"quant_{qtype.name}.f32"), "wb") as f:
        for ref in reference:
            f.write(np.ascontiguousarray(ref, dtype="<f4").tobytes())
    return {
        "type": qtype.name,
        "type_id": int(qtype),
        "tensors": [{"name": n, "shape": list(r.shape)} for (n, _), r in zip(tensors, reference)],
    }


def write_and_close(writer):
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def check_file_bytes(path, tensors):
    """The bytes gguf.GGUFReader finds in the written file are the bytes that were dequantized."""
    reader = gguf.GGUFReader(path)
    by_name = {t.name: t for t in reader.tensors}
    for name, data in tensors:
        got = np.asarray(by_name[name].data).view(np.uint8).reshape(-1)
        assert np.array_equal(got, np.asarray(data).view(np.uint8).reshape(-1)), name


def f32(x):
    """The float32 nearest to x, as a Python float (exactly representable in JSON)."""
    return float(np.float32(x))


def write_metadata_fixture(out_dir, rng):
    path = os.path.join(out_dir, "metadata.gguf")
    writer = gguf.GGUFWriter(path, arch="anvil-test")
    writer.add_custom_alignment(64)
    entries = [
        ("test.u8", VT.UINT8, 200, None),
        ("test.i8", VT.INT8, -100, None),
        ("test.u16", VT.UINT16, 60000, None),
        ("test.i16", VT.INT16, -30000, None),
        ("test.u32", VT.UINT32, 4000000000, None),
        ("test.i32", VT.INT32, -2000000000, None),
        ("test.f32", VT.FLOAT32, f32(3.14159265), None),
        ("test.bool_true", VT.BOOL, True, None),
        ("test.bool_false", VT.BOOL, False, None),
        ("test.string", VT.STRING, "héllo wörld ✓", None),
        ("test.u64", VT.UINT64, 18000000000000000000, None),
        ("test.i64", VT.INT64, -9000000000000000000, None),
        ("test.f64", VT.FLOAT64, -2.718281828459045, None),
        ("test.arr_u8", VT.ARRAY, [0, 1, 255], VT.UINT8),
        ("test.arr_i8", VT.ARRAY, [-128, 0, 127], VT.INT8),
        ("test.arr_u16", VT.ARRAY, [0, 65535], VT.UINT16),
        ("test.arr_i16", VT.ARRAY, [-32768, 32767], VT.INT16),
        ("test.arr_u32", VT.ARRAY, [1, 4294967295], VT.UINT32),
        ("test.arr_i32", VT.ARRAY, [-5, 7, -2147483648], VT.INT32),
        ("test.arr_f32", VT.ARRAY, [f32(v) for v in rng.normal(size=5)], VT.FLOAT32),
        ("test.arr_bool", VT.ARRAY, [True, False, True], VT.BOOL),
        ("test.arr_u64", VT.ARRAY, [0, 18446744073709551615], VT.UINT64),
        ("test.arr_i64", VT.ARRAY, [-9223372036854775808, 9223372036854775807], VT.INT64),
        ("test.arr_f64", VT.ARRAY, [float(v) for v in rng.normal(size=3)], VT.FLOAT64),
        ("test.arr_string", VT.ARRAY, ["a", "", "ünïcode", "x" * 100], VT.STRING),
        ("test.nested_i32", VT.ARRAY, [[1, 2, 3], [4], [5, 6]], VT.ARRAY),
        ("test.nested_string", VT.ARRAY, [["ab", "c"], ["d"]], VT.ARRAY),
        ("test.nested_deep", VT.ARRAY, [[[1], [2, 3]], [[4, 5, 6]]], VT.ARRAY),
        ("tokenizer.ggml.model", VT.STRING, "gpt2", None),
        ("tokenizer.ggml.pre", VT.STRING, "smollm", None),
        ("tokenizer.ggml.tokens", VT.ARRAY, ["<unk>", "<s>", "</s>", "a", "b", "ab", "Ġab"], VT.STRING),
        ("tokenizer.ggml.scores", VT.ARRAY, [f32(-i * 0.5) for i in range(7)], VT.FLOAT32),
        ("tokenizer.ggml.token_type", VT.ARRAY, [2, 3, 3, 1, 1, 1, 4], VT.INT32),
        ("tokenizer.ggml.merges", VT.ARRAY, ["a b", "Ġ ab"], VT.STRING),
        ("tokenizer.ggml.bos_token_id", VT.UINT32, 1, None),
        ("tokenizer.ggml.eos_token_id", VT.UINT32, 2, None),
        ("tokenizer.ggml.unknown_token_id", VT.UINT32, 0, None),
        ("tokenizer.ggml.padding_token_id", VT.UINT32, 2, None),
        ("tokenizer.ggml.add_bos_token", VT.BOOL, True, None),
        ("tokenizer.ggml.add_eos_token", VT.BOOL, False, None),
        ("tokenizer.chat_template", VT.STRING, "{% for m in messages %}{{ m['content'] }}{% endfor %}", None),
    ]
    for key, vtype, value, sub_type in entries:
        writer.add_key_value(key, value, vtype, sub_type=sub_type)
    tensors = [
        ("t.f32_odd", rng.normal(size=(3, 7)).astype(np.float32), None),
        ("t.f16", rng.normal(size=(5,)).astype(np.float16), None),
        ("t.q8_0", quantize(rng.normal(size=(2, 64)).astype(np.float32), QT.Q8_0), QT.Q8_0),
    ]
    for name, data, raw_dtype in tensors:
        writer.add_tensor(name, data, raw_dtype=raw_dtype)
    write_and_close(writer)

    reader = gguf.GGUFReader(path)
    info = {
        "gguf_version": GGUF_VERSION,
        "alignment": 64,
        "metadata": [
            {"key": k, "type": vt.name, "element_type": st.name if st is not None else None, "value": v}
            for k, vt, v, st in entries
        ],
        "tensors": [
            {
                "name": t.name,
                "type": t.tensor_type.name,
                "dims": [int(d) for d in t.shape],
                "data_offset": int(t.data_offset),
                "nbytes": int(t.n_bytes),
            }
            for t in reader.tensors
        ],
    }
    with open(os.path.join(out_dir, "metadata.json"), "w") as f:
        json.dump(info, f, indent=1, ensure_ascii=False)
        f.write("\n")


def read_safetensors(directory):
    """name -> (dtype string, shape, raw little-endian bytes as a numpy array of the right width)."""
    index = os.path.join(directory, "model.safetensors.index.json")
    if os.path.exists(index):
        files = sorted(set(json.load(open(index))["weight_map"].values()))
    else:
        files = ["model.safetensors"]
    out = {}
    widths = {"F32": np.float32, "F16": np.float16, "BF16": np.uint16}
    for name in files:
        with open(os.path.join(directory, name), "rb") as f:
            blob = f.read()
        (header_len,) = struct.unpack("<Q", blob[:8])
        header = json.loads(blob[8 : 8 + header_len])
        base = 8 + header_len
        for tname, entry in header.items():
            if tname == "__metadata__":
                continue
            begin, end = entry["data_offsets"]
            arr = np.frombuffer(blob[base + begin : base + end], dtype=widths[entry["dtype"]]).reshape(entry["shape"])
            out[tname] = (entry["dtype"], arr.copy())
    return out


def llama_permute(weights, n_head, n_head_kv):
    """llama.cpp's LlamaModel.permute: HF rotate-half q/k rows -> Meta's interleaved pairs."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return (
        weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
        .swapaxes(1, 2)
        .reshape(weights.shape)
    )


def llama3_rope_factors(rope, theta, head_dim):
    """rope_freqs.weight as llama.cpp's converter writes it for rope_type llama3 (LlamaModel.generate_extra_tensors
    in convert_hf_to_gguf.py / conversion/llama.py): per-dimension divisors of the base inverse frequencies."""
    freqs = 1.0 / (np.float32(theta) ** (np.arange(0, head_dim, 2, dtype=np.float32) / np.float32(head_dim)))
    factor = rope.get("factor", 8.0)
    low_freq_factor = rope.get("low_freq_factor", 1.0)
    high_freq_factor = rope.get("high_freq_factor", 4.0)
    old_context_len = rope.get("original_max_position_embeddings", 8192)
    low_freq_wavelen = old_context_len / low_freq_factor
    high_freq_wavelen = old_context_len / high_freq_factor
    factors = []
    for freq in freqs.astype(np.float32):
        wavelen = 2 * math.pi / float(freq)
        if wavelen < high_freq_wavelen:
            factors.append(1)
        elif wavelen > low_freq_wavelen:
            factors.append(factor)
        else:
            smooth = (old_context_len / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor)
            factors.append(1 / ((1 - smooth) / factor + smooth))
    return np.array(factors, dtype=np.float32)


def convert_hf_fixture(out_dir, name):
    """tests/data/hf/<name> -> <out>/<name>.gguf, as convert_hf_to_gguf.py writes it (no tokenizer)."""
    src = os.path.join(ROOT, "tests", "data", "hf", name)
    config = json.load(open(os.path.join(src, "config.json")))
    arch_name = {"LlamaForCausalLM": "llama", "Qwen2ForCausalLM": "qwen2"}[config["architectures"][0]]
    arch = {"llama": gguf.MODEL_ARCH.LLAMA, "qwen2": gguf.MODEL_ARCH.QWEN2}[arch_name]
    n_layers = config["num_hidden_layers"]
    n_head = config["num_attention_heads"]
    n_kv = config.get("num_key_value_heads", n_head)
    rope = config.get("rope_parameters") or {}
    theta = config.get("rope_theta", rope.get("rope_theta", 10000.0))
    rope_freqs = None

    path = os.path.join(out_dir, f"{name}.gguf")
    writer = gguf.GGUFWriter(path, arch=arch_name)
    writer.add_name(name)
    writer.add_context_length(config["max_position_embeddings"])
    writer.add_embedding_length(config["hidden_size"])
    writer.add_block_count(n_layers)
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_head_count(n_head)
    writer.add_head_count_kv(n_kv)
    writer.add_rope_freq_base(theta)
    writer.add_layer_norm_rms_eps(config["rms_norm_eps"])
    head_dim = config.get("head_dim", config["hidden_size"] // n_head)
    writer.add_rope_dimension_count(head_dim)
    writer.add_key_length(head_dim)
    writer.add_value_length(head_dim)
    writer.add_vocab_size(config["vocab_size"])
    if rope.get("rope_type") == "linear":
        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(rope["factor"])
    elif rope.get("rope_type") == "llama3":
        rope_freqs = llama3_rope_factors(rope, theta, config.get("head_dim", config["hidden_size"] // n_head))
    elif rope.get("rope_type") not in (None, "default"):
        raise SystemExit(f"{name}: rope type {rope.get('rope_type')} is not converted by this tool")

    if rope_freqs is not None:
        writer.add_tensor("rope_freqs.weight", rope_freqs, raw_dtype=QT.F32)
    name_map = gguf.get_tensor_name_map(arch, n_layers)
    tensors = read_safetensors(src)
    for hf_name in sorted(tensors):
        st_dtype, data = tensors[hf_name]
        if arch_name == "llama":
            if hf_name.endswith(("q_proj.weight", "q_proj.bias")):
                data = llama_permute(data, n_head, n_head)
            if hf_name.endswith(("k_proj.weight", "k_proj.bias")):
                data = llama_permute(data, n_head, n_kv)
        gguf_name = name_map.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        assert gguf_name is not None, hf_name
        if st_dtype == "BF16":
            writer.add_tensor(gguf_name, np.ascontiguousarray(data), raw_dtype=QT.BF16)
        else:
            writer.add_tensor(gguf_name, np.ascontiguousarray(data))
    write_and_close(writer)


def smollm_reference(out_dir, model_path):
    reader = gguf.GGUFReader(model_path)
    fields = reader.fields

    def scalar(key):
        return fields[key].contents()

    arch = scalar("general.architecture")
    type_counts = {}
    for t in reader.tensors:
        type_counts[t.tensor_type.name] = type_counts.get(t.tensor_type.name, 0) + 1
    tokens = fields["tokenizer.ggml.tokens"].contents()
    merges = fields["tokenizer.ggml.merges"].contents()
    token_types = fields["tokenizer.ggml.token_type"].contents()
    tensors = {t.name: t for t in reader.tensors}

    rows = []
    row_blob = bytearray()
    for tname, row_ids in (("token_embd.weight", [0, 1, 2, 576, 30000, 49151]), ("blk.0.attn_q.weight", [0, 63, 575])):
        t = tensors[tname]
        values = dequantize(np.asarray(t.data), t.tensor_type)
        for r in row_ids:
            rows.append({"tensor": tname, "type": t.tensor_type.name, "row": r, "offset_floats": len(row_blob) // 4})
            row_blob += np.ascontiguousarray(values[r], dtype="<f4").tobytes()
    with open(os.path.join(out_dir, "smollm2_rows.f32"), "wb") as f:
        f.write(row_blob)

    info = {
        "gguf_version": GGUF_VERSION,
        "file_bytes": os.path.getsize(model_path),
        "architecture": arch,
        "hidden_size": scalar(f"{arch}.embedding_length"),
        "num_layers": scalar(f"{arch}.block_count"),
        "intermediate_size": scalar(f"{arch}.feed_forward_length"),
        "num_heads": scalar(f"{arch}.attention.head_count"),
        "num_kv_heads": scalar(f"{arch}.attention.head_count_kv"),
        "context_length": scalar(f"{arch}.context_length"),
        "rope_theta": scalar(f"{arch}.rope.freq_base"),
        "rms_norm_eps": scalar(f"{arch}.attention.layer_norm_rms_epsilon"),
        "vocab_size": len(tokens),
        "tied": "output.weight" not in tensors,
        "num_tensors": len(reader.tensors),
        "tensor_type_counts": type_counts,
        "tokenizer": {
            "model": scalar("tokenizer.ggml.model"),
            "pre": scalar("tokenizer.ggml.pre"),
            "num_tokens": len(tokens),
            "num_merges": len(merges),
            "tokens_sample": {str(i): tokens[i] for i in (0, 1, 2, 100, 1000, 49151)},
            "merges_sample": {str(i): merges[i] for i in (0, 1, 48899)},
            "token_types_sample": {str(i): int(token_types[i]) for i in (0, 1, 2, 100)},
            "bos_id": scalar("tokenizer.ggml.bos_token_id"),
            "eos_id": scalar("tokenizer.ggml.eos_token_id"),
            "unk_id": scalar("tokenizer.ggml.unknown_token_id"),
            "pad_id": scalar("tokenizer.ggml.padding_token_id"),
            "add_bos_token": scalar("tokenizer.ggml.add_bos_token"),
            "chat_template": scalar("tokenizer.chat_template"),
        },
        "rows": rows,
    }
    info["transformers"] = transformers_reference(model_path)
    with open(os.path.join(out_dir, "smollm2_reference.json"), "w") as f:
        json.dump(info, f, indent=1, ensure_ascii=False)
        f.write("\n")


SMOLLM_PROMPT = [{"role": "user", "content": "What is the capital of France?"}]
TOP_K = 8
GREEDY_NEW = 24


def transformers_reference(model_path):
    """Logits (top-k per position) and greedy tokens of transformers running the GGUF (it dequantizes the file with
    gguf-py and undoes llama.cpp's q/k permutation); None when torch/transformers/accelerate are missing."""
    try:
        import torch
        import transformers
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError as e:
        print(f"note: no transformers reference for SmolLM2 ({e})", file=sys.stderr)
        return None
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    directory, name = os.path.split(model_path)
    tokenizer = AutoTokenizer.from_pretrained(directory, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(directory, gguf_file=name, dtype=torch.float32)
    model.eval()
    ids = tokenizer.apply_chat_template(SMOLLM_PROMPT, add_generation_prompt=True, tokenize=True)
    if isinstance(ids, dict) or hasattr(ids, "keys"):
        ids = ids["input_ids"]
    ids = [int(i) for i in ids]
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0].float()
        top = torch.topk(logits, TOP_K, dim=-1)
        # Plain argmax steps, EOS included (generate()'s min_new_tokens would mask EOS and change the path).
        seq = list(ids)
        margin = float("inf")
        for _ in range(GREEDY_NEW):
            step = model(torch.tensor([seq])).logits[0, -1].float()
            top2 = torch.topk(step, 2)
            margin = min(margin, float(top2.values[0] - top2.values[1]))
            seq.append(int(top2.indices[0]))
        greedy = seq[len(ids) :]
    return {
        "transformers_version": transformers.__version__,
        "torch_version": torch.__version__,
        "prompt_ids": ids,
        "max_abs_logit": float(logits.abs().max()),
        "top_ids": top.indices.tolist(),
        "top_logits": top.values.tolist(),
        "greedy_ids": [int(t) for t in greedy],
        "greedy_min_margin": margin,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=os.path.join(ROOT, "tests", "data", "gguf"))
    default_smollm = os.path.expanduser("~/.cache/anvil/models/SmolLM2-135M-Instruct.Q4_1.gguf")
    parser.add_argument("--smollm", default=default_smollm, help="the SmolLM2 Q4_1 GGUF (skipped when absent)")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    rng = np.random.default_rng(SEED)

    manifest = {"gguf_version": GGUF_VERSION, "seed": SEED, "quant": []}
    for qtype in TYPES:
        manifest["quant"].append(write_quant_fixture(args.out, qtype, rng))
    write_metadata_fixture(args.out, rng)
    converted = ["llama_linear_mqa", "qwen2_bias", "llama3_gqa"]  # llama3_gqa: rope_freqs.weight (Llama 3.1 style)
    for name in converted:
        convert_hf_fixture(args.out, name)
    manifest["converted_hf_fixtures"] = converted
    with open(os.path.join(args.out, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
        f.write("\n")
    if os.path.exists(args.smollm):
        smollm_reference(args.out, args.smollm)
    else:
        print(f"note: {args.smollm} not found; SmolLM2 reference not written (run scripts/fetch_model.sh)",
              file=sys.stderr)
    print(f"wrote GGUF fixtures to {args.out} with gguf {GGUF_VERSION}")


if __name__ == "__main__":
    main()

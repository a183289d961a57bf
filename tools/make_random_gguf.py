#!/usr/bin/env python3
"""A llama-architecture GGUF of a benchmark shape (a config.json) whose matrices are random blocks of one GGUF
quantized type (or random F16/BF16/F32 values), for speed runs on quantized weights (the quantized twin of
`anvil bench --load-format dummy`) and for llama.cpp as a peer on the same shape.

Every quantized matrix gets random quant bytes with finite, small fp16 scales (mins zero); float matrices get
normal values of std 0.02; tensors of one shape share one random buffer so an 8B file is written in seconds. Norms
are ones. No vocabulary: `tokenizer.ggml.model` is "none" (llama.cpp then makes `vocab_size` dummy tokens and its
benchmarks feed random ids, as `anvil bench` does). Needs the PyPI package `gguf` (gguf-py; llama.cpp's copy works
through PYTHONPATH) and numpy.

    python3 tools/make_random_gguf.py --config bench/configs/llama3-8b/config.json --type Q4_0 --out /tmp/q4_0.gguf
"""
import argparse
import json

import gguf
import numpy as np

QT = gguf.GGMLQuantizationType
# Byte offsets of each block's fp16 scale fields (d, and m/dmin where the type has one).
SCALE_FIELDS = {QT.Q4_0: [0], QT.Q4_1: [0], QT.Q5_0: [0], QT.Q5_1: [0], QT.Q8_0: [0], QT.Q4_K: [0], QT.Q5_K: [0],
                QT.Q6_K: [208]}
MIN_FIELDS = {QT.Q4_1: [2], QT.Q5_1: [2], QT.Q4_K: [2], QT.Q5_K: [2]}
SCALE = {QT.Q4_K: 2e-4, QT.Q5_K: 1e-4, QT.Q6_K: 1e-4}  # K types multiply by 6/8-bit sub-scales


FLOAT_TYPES = {"F32": np.float32, "F16": np.float16}  # BF16 is written as raw uint16 (numpy has no bfloat16)


def random_floats(rng, type_name, rows, cols):
    x = (rng.standard_normal((rows, cols), dtype=np.float32) * 0.02)
    if type_name == "BF16":
        return (x.view(np.uint32) >> 16).astype(np.uint16)  # truncation is fine for random weights
    return x.astype(FLOAT_TYPES[type_name])


def random_blocks(rng, qtype, rows, cols):
    block_size, type_size = gguf.GGML_QUANT_SIZES[qtype]
    data = rng.integers(0, 256, size=(rows * (cols // block_size), type_size), dtype=np.uint8)
    d = np.float16(SCALE.get(qtype, 2e-3)).view(np.uint16)
    for off in SCALE_FIELDS[qtype]:
        data[:, off:off + 2] = np.frombuffer(np.uint16(d).tobytes(), dtype=np.uint8)
    for off in MIN_FIELDS.get(qtype, []):
        data[:, off:off + 2] = 0
    return data.reshape(rows, -1)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", required=True)
    ap.add_argument("--type", required=True, choices=[t.name for t in SCALE_FIELDS] + ["F32", "F16", "BF16"])
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    c = json.load(open(args.config))
    qtype = QT[args.type]
    is_float = args.type in ("F32", "F16", "BF16")
    rng = np.random.default_rng(args.seed)
    h, inter, n_layers = c["hidden_size"], c["intermediate_size"], c["num_hidden_layers"]
    n_head, n_kv = c["num_attention_heads"], c.get("num_key_value_heads", c["num_attention_heads"])
    head_dim = h // n_head
    vocab = c["vocab_size"]
    w = gguf.GGUFWriter(args.out, arch="llama")
    w.add_name(f"random {args.type}")
    w.add_context_length(c["max_position_embeddings"])
    w.add_embedding_length(h)
    w.add_block_count(n_layers)
    w.add_feed_forward_length(inter)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_kv)
    w.add_rope_freq_base(c.get("rope_theta", 10000.0))
    w.add_layer_norm_rms_eps(c["rms_norm_eps"])
    w.add_rope_dimension_count(head_dim)
    w.add_vocab_size(vocab)
    w.add_tokenizer_model("none")
    shared = {}

    def blocks(rows, cols):
        if (rows, cols) not in shared:
            shared[(rows, cols)] = (random_floats(rng, args.type, rows, cols) if is_float
                                    else random_blocks(rng, qtype, rows, cols))
        return shared[(rows, cols)]

    ones = np.ones(h, dtype=np.float32)
    w.add_tensor("token_embd.weight", blocks(vocab, h), raw_dtype=qtype)
    for i in range(n_layers):
        p = f"blk.{i}."
        w.add_tensor(p + "attn_norm.weight", ones)
        w.add_tensor(p + "attn_q.weight", blocks(n_head * head_dim, h), raw_dtype=qtype)
        w.add_tensor(p + "attn_k.weight", blocks(n_kv * head_dim, h), raw_dtype=qtype)
        w.add_tensor(p + "attn_v.weight", blocks(n_kv * head_dim, h), raw_dtype=qtype)
        w.add_tensor(p + "attn_output.weight", blocks(h, n_head * head_dim), raw_dtype=qtype)
        w.add_tensor(p + "ffn_norm.weight", ones)
        w.add_tensor(p + "ffn_gate.weight", blocks(inter, h), raw_dtype=qtype)
        w.add_tensor(p + "ffn_up.weight", blocks(inter, h), raw_dtype=qtype)
        w.add_tensor(p + "ffn_down.weight", blocks(h, inter), raw_dtype=qtype)
    w.add_tensor("output_norm.weight", ones)
    if not c.get("tie_word_embeddings", False):
        w.add_tensor("output.weight", blocks(vocab, h), raw_dtype=qtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file(progress=False)
    w.close()


if __name__ == "__main__":
    main()

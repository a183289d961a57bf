#!/usr/bin/env python3
"""Make tiny quantized Hugging Face checkpoints (GPTQ, AWQ, compressed-tensors) and their reference outputs.

Usage:
    /work/venv-hf/bin/python tools/make_quant_checkpoints.py --out tests/data/hf_quant [--only NAME]
    /work/venv-hf/bin/python tools/make_quant_checkpoints.py --out DIR --only NAME --from-hf MODEL_DIR
      (quantizes a real HF model in that format, e.g. for bench/quant_accuracy.sh; no reference.json)

One random LlamaForCausalLM (hidden 128, intermediate 256: widths that group size 128 divides) is quantized
per fixture, each linear round-to-nearest with that format's parameters, and written in that format's own
layout: GPTQ (qweight int32 [in/pack, out], qzeros [groups, out/pack] with the original format's zero - 1, or
gptq_v2's zero, scales fp16 [groups, out], g_idx) and AWQ gemm (qweight int32 [in, out/8] in AWQ's nibble order
0,2,4,6,1,3,5,7) are packed with numpy following the formats' rules; compressed-tensors checkpoints
(pack-quantized W4A16, float-quantized FP8, int-quantized INT8) are written by the compressed-tensors package's
own compressors and QuantizationConfig. The expected outputs (reference.json: logits of 12 tokens, 32 greedy tokens
after a 5-token prompt) are those of the same HF model whose weights are the dequantized ones, in float32 (for
compressed-tensors, dequantized by the package's own decompress). Activations stay float32 in the reference, so
W8A8 fixtures differ from it by the activation rounding. No network.
"""

import argparse
import json
import os
import shutil
import sys
import tempfile

import numpy as np
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
import transformers  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM  # noqa: E402

LOGITS_LEN = 12
PROMPT_LEN = 5
GREEDY_NEW = 32
AWQ_ORDER = [0, 2, 4, 6, 1, 3, 5, 7]  # nibble i of a word holds column AWQ_ORDER[i] of its group of 8

BASE = dict(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            head_dim=32, vocab_size=128, max_position_embeddings=256, rms_norm_eps=1e-5, hidden_act="silu",
            bos_token_id=1, eos_token_id=2, pad_token_id=0, rope_theta=10000.0, tie_word_embeddings=False)

# name -> (format, parameters)
FIXTURES = {
    "gptq_4bit_g128_sym": ("gptq", dict(bits=4, group_size=128, sym=True, v2=False)),
    "gptq_4bit_g32_asym": ("gptq", dict(bits=4, group_size=32, sym=False, v2=False)),
    "gptq_v2_4bit_g64_asym": ("gptq", dict(bits=4, group_size=64, sym=False, v2=True)),
    "gptq_8bit_perchannel": ("gptq", dict(bits=8, group_size=-1, sym=True, v2=False)),
    "awq_gemm_g128": ("awq", dict(group_size=128)),
    "ct_w4a16_g128": ("ct", dict(format="pack-quantized", type="int", bits=4, strategy="group", group_size=128)),
    "ct_w4a16_g64_asym": ("ct", dict(format="pack-quantized", type="int", bits=4, strategy="group", group_size=64,
                                     symmetric=False)),
    "ct_fp8_w8a8_channel": ("ct", dict(format="float-quantized", type="float", bits=8, strategy="channel",
                                       acts="dynamic")),
    "ct_fp8_w8a8_tensor_static": ("ct", dict(format="float-quantized", type="float", bits=8, strategy="tensor",
                                             acts="static")),
    "ct_fp8_w8a16_channel": ("ct", dict(format="float-quantized", type="float", bits=8, strategy="channel")),
    "ct_int8_w8a16_channel": ("ct", dict(format="int-quantized", type="int", bits=8, strategy="channel")),
}


def base_model(seed):
    torch.manual_seed(seed)
    config = LlamaConfig(**BASE)
    model = LlamaForCausalLM(config).eval()
    # Wider weights than the default init (std 0.02) so that logits spread and rounding shows.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
            else:
                p.copy_(0.08 * torch.randn_like(p))
    return model


def linears(model):
    return {n: m for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and "lm_head" not in n}


def rtn_groups(w, bits, group_size, sym):
    """Round to nearest, w [out, in] fp32 -> unsigned codes [out, in], fp16 scales and int zeros [out, groups]."""
    out_f, in_f = w.shape
    g = in_f if group_size == -1 else group_size
    wg = w.reshape(out_f, in_f // g, g)
    qmax = (1 << bits) - 1
    if sym:
        scale = wg.abs().amax(-1) / ((qmax - 1) / 2)  # codes mid-1..mid+... : zero = 2^(bits-1)
        zero = torch.full_like(scale, float(1 << (bits - 1)))
    else:
        lo = wg.amin(-1).clamp(max=0)
        hi = wg.amax(-1).clamp(min=0)
        scale = (hi - lo) / qmax
        zero = torch.round(-lo / scale).clamp(1, qmax)  # >= 1: the original GPTQ packing stores zero - 1
    scale = scale.half()
    s = scale.float()
    q = torch.round(wg / s[..., None] + zero[..., None]).clamp(0, qmax)
    return q.reshape(out_f, in_f).int(), scale, zero.int()


def pack_rows(codes, bits):
    """codes [rows, cols] uint -> int32 [rows / (32 / bits), cols]: row r in bits (r % pack) * bits."""
    pack = 32 // bits
    c = codes.astype(np.uint32)
    out = np.zeros((c.shape[0] // pack, c.shape[1]), dtype=np.uint32)
    for k in range(pack):
        out |= c[k::pack] << np.uint32(bits * k)
    return out.view(np.int32)


def pack_cols(codes, bits, order=None):
    """codes [rows, cols] -> int32 [rows, cols / pack]: column pack*j + order[k] in bits k * bits of word j."""
    pack = 32 // bits
    order = order or list(range(pack))
    c = codes.astype(np.uint32)
    out = np.zeros((c.shape[0], c.shape[1] // pack), dtype=np.uint32)
    for k in range(pack):
        out |= c[:, order[k]::pack] << np.uint32(bits * k)
    return out.view(np.int32)


def write_gptq(model, p, out_dir):
    tensors, qcfg = {}, {}
    for name, m in linears(model).items():
        w = m.weight.data.float()
        q, scale, zero = rtn_groups(w, p["bits"], p["group_size"], p["sym"])
        in_f = w.shape[1]
        g = in_f if p["group_size"] == -1 else p["group_size"]
        m.weight.data = ((q - zero.repeat_interleave(g, 1)).float() * scale.float().repeat_interleave(g, 1))
        stored_zero = zero.numpy().T if p["v2"] else zero.numpy().T - 1  # [groups, out]
        tensors[name + ".qweight"] = torch.from_numpy(pack_rows(q.numpy().T, p["bits"]))
        tensors[name + ".qzeros"] = torch.from_numpy(pack_cols(stored_zero, p["bits"]))
        tensors[name + ".scales"] = scale.T.contiguous()
        tensors[name + ".g_idx"] = torch.arange(in_f, dtype=torch.int32) // g
    qcfg = dict(quant_method="gptq", bits=p["bits"], group_size=p["group_size"], sym=p["sym"], desc_act=False,
                checkpoint_format="gptq_v2" if p["v2"] else "gptq")
    return tensors, qcfg


def write_awq(model, p, out_dir):
    tensors = {}
    for name, m in linears(model).items():
        w = m.weight.data.float()
        q, scale, zero = rtn_groups(w, 4, p["group_size"], sym=False)
        g = p["group_size"]
        m.weight.data = ((q - zero.repeat_interleave(g, 1)).float() * scale.float().repeat_interleave(g, 1))
        tensors[name + ".qweight"] = torch.from_numpy(pack_cols(q.numpy().T, 4, AWQ_ORDER))  # [in, out/8]
        tensors[name + ".qzeros"] = torch.from_numpy(pack_cols(zero.numpy().T, 4, AWQ_ORDER))  # [groups, out/8]
        tensors[name + ".scales"] = scale.T.contiguous()  # [groups, out]
    qcfg = dict(quant_method="awq", bits=4, group_size=p["group_size"], zero_point=True, version="gemm")
    return tensors, qcfg


def write_ct(model, p, out_dir):
    from compressed_tensors.compressors import BaseCompressor
    from compressed_tensors.quantization import QuantizationArgs, QuantizationConfig, QuantizationScheme
    from compressed_tensors.quantization.utils import calculate_qparams

    wargs = QuantizationArgs(num_bits=p["bits"], type=p["type"], symmetric=p.get("symmetric", True),
                             strategy=p["strategy"], group_size=p.get("group_size"))
    iargs = None
    if p.get("acts"):
        iargs = QuantizationArgs(num_bits=8, type=p["type"], symmetric=True,
                                 strategy="token" if p["acts"] == "dynamic" else "tensor",
                                 dynamic=p["acts"] == "dynamic")
    scheme = QuantizationScheme(targets=["Linear"], weights=wargs, input_activations=iargs, format=p["format"])
    compressor = BaseCompressor.get_value_from_registry(p["format"])
    tensors = {}
    for name, m in linears(model).items():
        w = m.weight.data.float()
        out_f, in_f = w.shape
        if p["strategy"] == "group":
            wg = w.reshape(out_f, in_f // p["group_size"], p["group_size"])
            lo, hi = wg.amin(-1), wg.amax(-1)
        elif p["strategy"] == "channel":
            lo, hi = w.amin(1, keepdim=True), w.amax(1, keepdim=True)
        else:
            lo, hi = w.amin().reshape(1), w.amax().reshape(1)
        scale, zp = calculate_qparams(lo, hi, wargs)
        state = {"weight": w.half(), "weight_scale": scale.half(), "weight_zero_point": zp}
        if p.get("acts") == "static":
            state["input_scale"] = torch.tensor([0.02], dtype=torch.float16)
        packed = compressor.compress(state, scheme)
        # The package's own decoder, with the stored fp16 scales widened so that q * scale is exact in fp32.
        back = compressor.decompress({**packed, "weight_scale": packed["weight_scale"].float()}, scheme)
        m.weight.data = back["weight"].float()
        for k, v in packed.items():
            tensors[name + "." + k] = v.contiguous()
    qcfg = QuantizationConfig(config_groups={"group_0": scheme}, format=p["format"], ignore=["lm_head"],
                              quantization_status="compressed").to_dict()
    return tensors, qcfg


def reference(model, name):
    rng = np.random.default_rng(7)
    ids = [1] + rng.integers(3, BASE["vocab_size"], LOGITS_LEN - 1).tolist()
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0].float()
        prompt = ids[:PROMPT_LEN]
        seq, margins = list(prompt), []
        for _ in range(GREEDY_NEW):
            row = model(torch.tensor([seq])).logits[0, -1].float()
            top2 = torch.topk(row, 2).values
            margins.append(float(top2[0] - top2[1]))
            seq.append(int(row.argmax()))
    return dict(name=name, architecture="LlamaForCausalLM", saved_dtype="float16", logits_input_ids=ids,
                logits=logits.tolist(), greedy_prompt_ids=prompt, greedy_output_ids=seq[PROMPT_LEN:],
                greedy_min_margin=min(margins), transformers_version=transformers.__version__,
                torch_version=torch.__version__)


def w8a8_logits(model, ids):
    """Logits with every linear's input quantized per token to e4m3 (amax / 448, torch's float8_e4m3fn cast)."""
    def fwd(self, x):
        s = x.abs().amax(-1, keepdim=True).clamp(min=1e-30) / 448
        return torch.nn.functional.linear((x / s).to(torch.float8_e4m3fn).float() * s, self.weight, self.bias)
    saved = {}
    for m in linears(model).values():
        saved[m] = m.forward
        m.forward = fwd.__get__(m)
    with torch.no_grad():
        out = model(torch.tensor([ids])).logits[0].float().tolist()
    for m, f in saved.items():
        m.forward = f
    return out


def make(name, out_root, seed, src=None):
    kind, p = FIXTURES[name]
    model = base_model(seed) if src is None else AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32).eval()
    keep = torch.float16 if src is None else torch.float32
    tensors, qcfg = {"gptq": write_gptq, "awq": write_awq, "ct": write_ct}[kind](model, p, out_root)
    quantized = set(linears(model))
    for n, t in model.state_dict().items():  # embeddings, norms, lm_head in fp16 (fp32 for --from-hf)
        if n == "lm_head.weight" and model.config.tie_word_embeddings:
            continue
        if n.rsplit(".", 1)[0] not in quantized:
            tensors[n] = t.to(keep).contiguous()
    out_dir = os.path.join(out_root, name)
    shutil.rmtree(out_dir, ignore_errors=True)
    os.makedirs(out_dir)
    config = model.config.to_dict()
    config["dtype"] = "float16" if src is None else "float32"
    config["quantization_config"] = qcfg
    config["architectures"] = ["LlamaForCausalLM"]
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(config, f, indent=2, sort_keys=True)
    save_file(tensors, os.path.join(out_dir, "model.safetensors"), metadata={"format": "pt"})
    if src is not None:
        for f in ("tokenizer.json", "tokenizer_config.json", "generation_config.json"):
            if os.path.exists(os.path.join(src, f)):
                shutil.copy(os.path.join(src, f), out_dir)
        print(f"{name}: {len(tensors)} tensors from {src}")
        return
    # The reference model: the dequantized weights (set above), fp16-rounded non-quantized tensors, fp32 compute.
    with torch.no_grad():
        for n, t in model.named_parameters():
            if n.rsplit(".", 1)[0] not in quantized:
                t.copy_(t.half().float())
    ref = reference(model, name)
    if p.get("acts"):
        ref["w8a8_logits"] = w8a8_logits(model, ref["logits_input_ids"])
    with open(os.path.join(out_dir, "reference.json"), "w") as f:
        json.dump(ref, f)
    print(f"{name}: {len(tensors)} tensors, greedy min margin {ref['greedy_min_margin']:.4f}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--only", default=None)
    ap.add_argument("--seed", type=int, default=131)
    ap.add_argument("--from-hf", default=None, help="quantize this HF model directory instead of the random one")
    args = ap.parse_args()
    names = [args.only] if args.only else list(FIXTURES)
    for name in names:
        if name not in FIXTURES:
            sys.exit(f"unknown fixture {name}; known: {', '.join(FIXTURES)}")
        make(name, args.out, args.seed, args.from_hf)


if __name__ == "__main__":
    main()

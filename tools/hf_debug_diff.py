#!/usr/bin/env python3
"""Layer-by-layer comparison of Anvil with Hugging Face transformers: finds the first intermediate that differs.

Usage:
    anvil debug-dump --model DIR --ids '[1, 5, 9]' --out anvil.json
    python3 tools/hf_debug_diff.py --model DIR --dump anvil.json [--tol 1e-4]

Runs the same token ids through the HF model (float32, CPU, eager attention) with forward hooks on the modules that
produce each of Anvil's named intermediates (models/model.h DebugHook: embed, positions, attn_norm, attn_out,
ffn_norm, ffn_out, final_norm, logits), then walks Anvil's dump in forward order and prints the relative error
(max |anvil - hf| / max |hf|) of each tensor both sides have. Exit code 0 when every one is within --tol, 1 when
one is not (the first such is named: "first difference: layer L, NAME"), 2 on a usage error.

Needs torch and transformers (5.x). No network.
"""

import argparse
import json
import os
import sys

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")

# Anvil name -> candidate module paths ({i}: the layer) and whether the module's input ("in") or output ("out") is
# the tensor. The first path the model has is used.
LLAMA = {
    "embed": (["model.embed_tokens"], "out"),
    "attn_norm": (["model.layers.{i}.input_layernorm"], "out"),
    "attn_out": (["model.layers.{i}.self_attn.o_proj"], "in"),
    "ffn_norm": (["model.layers.{i}.post_attention_layernorm"], "out"),
    "ffn_out": (["model.layers.{i}.mlp.down_proj", "model.layers.{i}.mlp.c_proj"], "out"),
    "final_norm": (["model.norm"], "out"),
    "logits": (["lm_head"], "out"),
}
MAPS = {
    "llama": LLAMA, "mistral": LLAMA, "qwen2": LLAMA, "qwen3": LLAMA, "phi3": LLAMA, "starcoder2": LLAMA,
    "gpt2": {
        "embed": (["transformer.wte"], "out"),
        "positions": (["transformer.wpe"], "out"),
        "attn_norm": (["transformer.h.{i}.ln_1"], "out"),
        "attn_out": (["transformer.h.{i}.attn.c_proj"], "in"),
        "ffn_norm": (["transformer.h.{i}.ln_2"], "out"),
        "ffn_out": (["transformer.h.{i}.mlp.c_proj"], "out"),
        "final_norm": (["transformer.ln_f"], "out"),
        "logits": (["lm_head"], "out"),
    },
    "gpt_neox": {
        "embed": (["gpt_neox.embed_in"], "out"),
        "attn_norm": (["gpt_neox.layers.{i}.input_layernorm"], "out"),
        "attn_out": (["gpt_neox.layers.{i}.attention.dense"], "in"),
        "ffn_norm": (["gpt_neox.layers.{i}.post_attention_layernorm"], "out"),
        "ffn_out": (["gpt_neox.layers.{i}.mlp.dense_4h_to_h"], "out"),
        "final_norm": (["gpt_neox.final_layer_norm"], "out"),
        "logits": (["lm_head", "embed_out"], "out"),
    },
    "gptj": {
        "embed": (["transformer.wte"], "out"),
        "attn_norm": (["transformer.h.{i}.ln_1"], "out"),
        "attn_out": (["transformer.h.{i}.attn.out_proj"], "in"),
        "ffn_out": (["transformer.h.{i}.mlp.fc_out"], "out"),
        "final_norm": (["transformer.ln_f"], "out"),
        "logits": (["lm_head"], "out"),
    },
    "opt": {
        "embed": (["model.decoder.embed_tokens"], "out"),
        "positions": (["model.decoder.embed_positions"], "out"),
        "attn_norm": (["model.decoder.layers.{i}.self_attn_layer_norm"], "out"),
        "attn_out": (["model.decoder.layers.{i}.self_attn.out_proj"], "in"),
        "ffn_norm": (["model.decoder.layers.{i}.final_layer_norm"], "out"),
        "ffn_out": (["model.decoder.layers.{i}.fc2"], "out"),
        "final_norm": (["model.decoder.final_layer_norm"], "out"),
        "logits": (["lm_head"], "out"),
    },
    "bloom": {
        "embed": (["transformer.word_embeddings_layernorm"], "out"),
        "attn_norm": (["transformer.h.{i}.input_layernorm"], "out"),
        "attn_out": (["transformer.h.{i}.self_attention.dense"], "in"),
        "ffn_norm": (["transformer.h.{i}.post_attention_layernorm"], "out"),
        "ffn_out": (["transformer.h.{i}.mlp.dense_4h_to_h"], "out"),
        "final_norm": (["transformer.ln_f"], "out"),
        "logits": (["lm_head"], "out"),
    },
    "falcon": {
        "embed": (["transformer.word_embeddings"], "out"),
        "attn_norm": (["transformer.h.{i}.ln_attn", "transformer.h.{i}.input_layernorm"], "out"),
        "attn_out": (["transformer.h.{i}.self_attention.dense"], "in"),
        "ffn_norm": (["transformer.h.{i}.ln_mlp", "transformer.h.{i}.post_attention_layernorm"], "out"),
        "ffn_out": (["transformer.h.{i}.mlp.dense_4h_to_h"], "out"),
        "final_norm": (["transformer.ln_f"], "out"),
        "logits": (["lm_head"], "out"),
    },
}


def hf_intermediates(model_dir, ids):
    """{(name, layer): float64 array} of the HF model's tensors for Anvil's names, from one forward over `ids`."""
    import torch
    import transformers

    config = transformers.AutoConfig.from_pretrained(model_dir)
    mapping = MAPS.get(config.model_type)
    if mapping is None:
        raise SystemExit(f"hf_debug_diff: no module map for model_type {config.model_type!r} "
                         f"(known: {', '.join(sorted(MAPS))})")
    model = transformers.AutoModelForCausalLM.from_pretrained(
        model_dir, dtype=torch.float32, attn_implementation="eager")
    model.eval()
    modules = dict(model.named_modules())
    num_layers = config.num_hidden_layers
    captured = {}
    handles = []

    def keep(key, value):
        if isinstance(value, (tuple, list)):
            value = value[0]
        captured[key] = value.detach().double().reshape(-1).numpy().copy()

    for name, (paths, side) in mapping.items():
        layers = range(num_layers) if any("{i}" in p for p in paths) else [-1]
        for layer in layers:
            path = next((p.format(i=layer) for p in paths if p.format(i=layer) in modules), None)
            if path is None:
                continue
            key = (name, layer)
            if side == "in":
                handles.append(modules[path].register_forward_pre_hook(
                    lambda mod, args, key=key: keep(key, args[0])))
            else:
                handles.append(modules[path].register_forward_hook(
                    lambda mod, args, out, key=key: keep(key, out)))
    with torch.no_grad():
        model(torch.tensor([ids], dtype=torch.long), use_cache=False)
    for h in handles:
        h.remove()
    return captured


def diff(dump, hf, tol):
    """Rows (layer, name, rel_err) in Anvil's order for the tensors both sides have; the first over tol or None."""
    rows, first = [], None
    for t in dump["tensors"]:
        key = (t["name"], t["layer"])
        if key not in hf:
            continue
        ours = np.asarray(t["values"], dtype=np.float64)
        ref = hf[key]
        if ours.size != ref.size:
            err = float("inf")
        else:
            err = float(np.abs(ours - ref).max() / max(np.abs(ref).max(), 1e-12))
        rows.append((t["layer"], t["name"], err))
        if first is None and not err <= tol:
            first = rows[-1]
    return rows, first


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="the HF checkpoint directory the dump was made from")
    ap.add_argument("--dump", required=True, help="JSON written by `anvil debug-dump`")
    ap.add_argument("--tol", type=float, default=1e-4, help="relative error allowed per tensor")
    args = ap.parse_args()
    with open(args.dump) as f:
        dump = json.load(f)
    hf = hf_intermediates(args.model, dump["token_ids"])
    rows, first = diff(dump, hf, args.tol)
    if not rows:
        print("hf_debug_diff: no tensor of the dump has an HF counterpart", file=sys.stderr)
        return 2
    for layer, name, err in rows:
        print(f"{layer:>5}  {name:<12} {err:.3e}  {'ok' if err <= args.tol else 'DIFFERS'}")
    if first is not None:
        print(f"first difference: layer {first[0]}, {first[1]} (relative error {first[2]:.3e} > {args.tol:g})")
        return 1
    print(f"all {len(rows)} compared tensors agree within {args.tol:g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

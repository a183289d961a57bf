#!/usr/bin/env python3
"""Make tiny Hugging Face checkpoints and reference outputs for Anvil's C++ tests.

Usage:
    python3 tools/make_hf_fixtures.py --out tests/data [--stories PATH/TO/stories260K.bin]

Writes, for each tiny random-weight model NAME, <out>/hf/NAME/ holding the files that
save_pretrained writes (config.json, generation_config.json, *.safetensors and, for the
sharded one, model.safetensors.index.json) plus reference.json with logits and greedy
tokens computed by transformers from the checkpoint reloaded from disk, in float32 on CPU.

With --stories, also converts the llama2.c legacy checkpoint stories260K.bin to an HF
LlamaForCausalLM in a temporary directory (never into --out), checks the conversion
against an independent numpy forward in llama2.c's own convention, and writes
<out>/stories260K_reference.json.

Needs torch, transformers (5.x; 4.x should also work), safetensors and numpy. No network.
"""

import argparse
import json
import math
import os
import shutil
import struct
import sys
import tempfile

import numpy as np
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # local files only; the GPU machine has no network
import transformers  # noqa: E402
from transformers import (  # noqa: E402
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
SAFETENSORS_DTYPE = {"float32": "F32", "bfloat16": "BF16", "float16": "F16"}

LOGITS_LEN = 12
PROMPT_LEN = 5
GREEDY_NEW = 32

COMMON = dict(
    hidden_size=64,
    intermediate_size=96,
    num_hidden_layers=2,
    num_attention_heads=4,
    head_dim=16,
    vocab_size=256,
    max_position_embeddings=256,
    rms_norm_eps=1e-5,
    hidden_act="silu",
    bos_token_id=1,
    eos_token_id=2,
    pad_token_id=0,
)

# name -> (config class, model class, extra config, saved dtype, seed, shard count wanted); the extra config is
# applied over COMMON.
MODELS = [
    ("llama_mha", LlamaConfig, LlamaForCausalLM,
     dict(num_key_value_heads=4, rope_theta=10000.0, tie_word_embeddings=False),
     "float32", 101, 1),
    ("llama3_gqa", LlamaConfig, LlamaForCausalLM,
     dict(num_key_value_heads=2, rope_theta=500000.0, tie_word_embeddings=False,
          rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                        "high_freq_factor": 4.0, "original_max_position_embeddings": 64}),
     "bfloat16", 102, 1),
    ("llama_linear_mqa", LlamaConfig, LlamaForCausalLM,
     dict(num_key_value_heads=1, rope_theta=10000.0, tie_word_embeddings=False,
          rope_scaling={"rope_type": "linear", "factor": 2.0}),
     "float16", 103, 1),
    ("qwen2_bias", Qwen2Config, Qwen2ForCausalLM,
     dict(num_key_value_heads=2, rope_theta=1000000.0, rms_norm_eps=1e-6,
          tie_word_embeddings=False, use_sliding_window=False),
     "bfloat16", 104, 2),
    ("mistral", MistralConfig, MistralForCausalLM,
     dict(num_key_value_heads=2, rope_theta=10000.0, sliding_window=None,
          tie_word_embeddings=False),
     "float32", 105, 1),
    ("smollm_tied", LlamaConfig, LlamaForCausalLM,
     dict(num_key_value_heads=2, rope_theta=10000.0, tie_word_embeddings=True),
     "float32", 106, 1),
    ("mistral_swa", MistralConfig, MistralForCausalLM,
     dict(num_key_value_heads=2, rope_theta=10000.0, sliding_window=4,
          tie_word_embeddings=False),
     "float32", 107, 1),
]

# Families beyond Llama: name -> (config class name, model class name, full config, saved dtype, seed). Classes are
# looked up by name so that an older transformers without one of them still writes the others. Every config is
# complete (COMMON is Llama-shaped and does not apply): hidden 64, 2 layers, 4 heads, vocab 256.
FAMILY_MODELS = [
    ("qwen3_qknorm", "Qwen3Config", "Qwen3ForCausalLM",
     dict(COMMON, num_key_value_heads=2, rope_theta=1000000.0, rms_norm_eps=1e-6,
          tie_word_embeddings=False, use_sliding_window=False),
     "bfloat16", 201),
    ("gpt2_tied", "GPT2Config", "GPT2LMHeadModel",
     dict(n_embd=64, n_layer=2, n_head=4, n_inner=96, vocab_size=256, n_positions=256,
          activation_function="gelu_new", layer_norm_epsilon=1e-5, tie_word_embeddings=True,
          bos_token_id=1, eos_token_id=2),
     "float32", 202),
    ("pythia_neox", "GPTNeoXConfig", "GPTNeoXForCausalLM",
     dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=96, vocab_size=256,
          max_position_embeddings=256, rotary_pct=0.25, rotary_emb_base=10000, use_parallel_residual=True,
          hidden_act="gelu", layer_norm_eps=1e-5, tie_word_embeddings=False, attention_bias=True,
          bos_token_id=1, eos_token_id=2),
     "float16", 203),
    ("phi3", "Phi3Config", "Phi3ForCausalLM",
     dict(hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
          num_key_value_heads=2, vocab_size=256, max_position_embeddings=256,
          original_max_position_embeddings=256, rms_norm_eps=1e-5, rope_theta=10000.0,
          tie_word_embeddings=False, bos_token_id=1, eos_token_id=2, pad_token_id=0, sliding_window=None),
     "bfloat16", 204),
    ("gemma2", "Gemma2Config", "Gemma2ForCausalLM",
     dict(hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
          num_key_value_heads=2, head_dim=16, vocab_size=256, max_position_embeddings=256,
          rms_norm_eps=1e-6, rope_theta=10000.0, sliding_window=4, query_pre_attn_scalar=16,
          final_logit_softcapping=30.0, attn_logit_softcapping=50.0,
          hidden_activation="gelu_pytorch_tanh", tie_word_embeddings=True,
          bos_token_id=1, eos_token_id=2, pad_token_id=0),
     "float32", 205),
]
# famB (issue 14 part B): Gemma-3 text. Three layers so that a global layer sits between two local ones (local ones
# get rope base 10,000, the global one 1,000,000 with linear scaling); head_dim 32 is not hidden / heads, and
# query_pre_attn_scalar 24 is not head_dim. Window 4 against 12 scored tokens.
FAMILY_MODELS += [
    ("gemma3_text", "Gemma3TextConfig", "Gemma3ForCausalLM",
     dict(hidden_size=64, intermediate_size=96, num_hidden_layers=3, num_attention_heads=4,
          num_key_value_heads=2, head_dim=32, vocab_size=256, max_position_embeddings=256,
          rms_norm_eps=1e-6, sliding_window=4, query_pre_attn_scalar=24,
          layer_types=["sliding_attention", "full_attention", "sliding_attention"],
          rope_parameters={"full_attention": {"rope_type": "linear", "factor": 2.0, "rope_theta": 1000000.0},
                           "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0}},
          hidden_activation="gelu_pytorch_tanh", tie_word_embeddings=True,
          bos_token_id=2, eos_token_id=1, pad_token_id=0),
     "bfloat16", 206),
]

# GLM (GlmForCausalLM, the ChatGLM line transformers has natively): rotary over half of each head on adjacent
# pairs, q/k/v bias, fused gate_up_proj.
FAMILY_MODELS += [
    ("glm", "GlmConfig", "GlmForCausalLM",
     dict(hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
          num_key_value_heads=2, head_dim=16, vocab_size=256, max_position_embeddings=256,
          rms_norm_eps=1e-5, rope_theta=10000.0, partial_rotary_factor=0.5, attention_bias=True,
          tie_word_embeddings=False, bos_token_id=1, eos_token_id=2, pad_token_id=0),
     "bfloat16", 207),
]

# The LayerNorm families of issue 14 part A (models/ln_decoder.h), in the FAMILY_MODELS format. BLOOM has 6 heads so
# that its ALiBi slopes include the interleaved ones of a head count that is not a power of two.
LN_FAMILY_MODELS = [
    ("neox_sequential", "GPTNeoXConfig", "GPTNeoXForCausalLM",
     dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=96, vocab_size=256,
          max_position_embeddings=256, rotary_pct=0.5, rotary_emb_base=10000, use_parallel_residual=False,
          hidden_act="gelu", layer_norm_eps=1e-5, tie_word_embeddings=False, attention_bias=False,
          bos_token_id=1, eos_token_id=2),
     "float32", 301),
    ("gptj_partial", "GPTJConfig", "GPTJForCausalLM",
     dict(n_embd=64, n_layer=2, n_head=4, n_inner=96, vocab_size=256, n_positions=256, rotary_dim=8,
          activation_function="gelu_new", layer_norm_epsilon=1e-5, tie_word_embeddings=False,
          bos_token_id=1, eos_token_id=2),
     "bfloat16", 302),
    ("opt_relu", "OPTConfig", "OPTForCausalLM",
     dict(hidden_size=64, ffn_dim=96, num_hidden_layers=2, num_attention_heads=4, vocab_size=256,
          max_position_embeddings=256, word_embed_proj_dim=64, do_layer_norm_before=True,
          activation_function="relu", enable_bias=True, tie_word_embeddings=True,
          bos_token_id=1, eos_token_id=2, pad_token_id=0),
     "float32", 303),
    ("bloom_alibi", "BloomConfig", "BloomForCausalLM",
     dict(hidden_size=96, n_layer=2, n_head=6, vocab_size=256, layer_norm_epsilon=1e-5,
          tie_word_embeddings=True, bos_token_id=1, eos_token_id=2, pad_token_id=0),
     "float16", 304),
    ("falcon_gqa", "FalconConfig", "FalconForCausalLM",
     dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_kv_heads=2, ffn_hidden_size=96,
          vocab_size=256, max_position_embeddings=256, new_decoder_architecture=True, parallel_attn=True,
          bias=False, alibi=False, layer_norm_epsilon=1e-5, tie_word_embeddings=True,
          bos_token_id=1, eos_token_id=2),
     "bfloat16", 305),
    ("falcon_mqa", "FalconConfig", "FalconForCausalLM",
     dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, ffn_hidden_size=96, vocab_size=256,
          max_position_embeddings=256, new_decoder_architecture=False, multi_query=True, parallel_attn=True,
          bias=True, alibi=False, layer_norm_epsilon=1e-5, tie_word_embeddings=False,
          bos_token_id=1, eos_token_id=2),
     "float32", 306),
    ("starcoder2", "Starcoder2Config", "Starcoder2ForCausalLM",
     dict(hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
          num_key_value_heads=2, vocab_size=256, max_position_embeddings=256, sliding_window=None,
          use_bias=True, hidden_act="gelu_pytorch_tanh", norm_epsilon=1e-5, rope_theta=10000.0,
          tie_word_embeddings=True, bos_token_id=1, eos_token_id=2),
     "float32", 307),
    # StarCoder2 with a sliding window (8) shorter than the 12 scored tokens and the 37 of the greedy run.
    ("starcoder2_swa", "Starcoder2Config", "Starcoder2ForCausalLM",
     dict(hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
          num_key_value_heads=2, vocab_size=256, max_position_embeddings=256, sliding_window=8,
          use_bias=True, hidden_act="gelu_pytorch_tanh", norm_epsilon=1e-5, rope_theta=10000.0,
          tie_word_embeddings=True, bos_token_id=1, eos_token_id=2),
     "bfloat16", 308),
]


def log(msg):
    print(f"[make_hf_fixtures] {msg}", flush=True)


# ----------------------------------------------------------------------------- helpers

def make_config(config_cls, **kwargs):
    """Build a config; transformers 5 folds rope_theta/rope_scaling into rope_parameters.

    If this transformers rejects the legacy keywords, pass rope_parameters instead."""
    try:
        return config_cls(**kwargs)
    except TypeError:
        kw = dict(kwargs)
        rope = dict(kw.pop("rope_scaling", None) or {"rope_type": "default"})
        rope["rope_theta"] = kw.pop("rope_theta", 10000.0)
        kw["rope_parameters"] = rope
        return config_cls(**kw)


def load_pretrained(model_cls, path):
    """from_pretrained in float32 with eager attention (dtype= in 5.x, torch_dtype= in 4.x)."""
    try:
        model = model_cls.from_pretrained(path, dtype=torch.float32, attn_implementation="eager")
    except TypeError:
        model = model_cls.from_pretrained(path, torch_dtype=torch.float32, attn_implementation="eager")
    model.eval()
    for p in model.parameters():
        assert p.dtype == torch.float32, (path, p.dtype)
    return model


def is_norm_parameter(name):
    leaf = name.split(".")[-2] if "." in name else name
    return "norm" in name or leaf.startswith("ln_")


def randomize_(model, seed):
    """Re-initialize every parameter with a spread large enough to give interesting logits."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():  # tied parameters are listed once
            if is_norm_parameter(name) and name.endswith(".bias"):
                p.copy_(0.1 * torch.randn_like(p))
            elif is_norm_parameter(name):
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
            else:  # embeddings, linear weights and biases
                p.copy_(0.2 * torch.randn_like(p))


def safetensors_files(model_dir):
    return sorted(f for f in os.listdir(model_dir) if f.endswith(".safetensors"))


def read_safetensors_header(path):
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
    header.pop("__metadata__", None)
    return header


def write_index(model_dir, shards):
    """Write model.safetensors.index.json in HF's standard format for the given shard files."""
    weight_map = {}
    total = 0
    for fname in shards:
        for tname, info in read_safetensors_header(os.path.join(model_dir, fname)).items():
            weight_map[tname] = fname
            begin, end = info["data_offsets"]
            total += end - begin
    index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
    with open(os.path.join(model_dir, "model.safetensors.index.json"), "w") as f:
        json.dump(index, f, indent=2)
        f.write("\n")


def save_checkpoint(model, model_dir, saved_dtype, shards_wanted):
    """Save with save_pretrained; shard into exactly `shards_wanted` files when asked."""
    if os.path.isdir(model_dir):
        shutil.rmtree(model_dir)
    os.makedirs(model_dir)
    if shards_wanted <= 1:
        model.save_pretrained(model_dir)
        files = safetensors_files(model_dir)
        assert files == ["model.safetensors"], files
        return
    total = sum(p.numel() * p.element_size() for p in model.state_dict().values())
    # Try shard sizes that should split the model in two; keep the first that gives two files.
    for frac in (0.55, 0.6, 0.7, 0.5, 0.8, 0.45):
        shutil.rmtree(model_dir)
        os.makedirs(model_dir)
        model.save_pretrained(model_dir, max_shard_size=int(total * frac))
        files = safetensors_files(model_dir)
        index_ok = os.path.exists(os.path.join(model_dir, "model.safetensors.index.json"))
        if len(files) == shards_wanted and index_ok:
            return
    # Fall back: write the shards and the index ourselves, in HF's format.
    log(f"  save_pretrained did not give {shards_wanted} shards; writing them by hand")
    from safetensors.torch import save_file

    for f in safetensors_files(model_dir):
        os.remove(f"{model_dir}/{f}")
    idx = os.path.join(model_dir, "model.safetensors.index.json")
    if os.path.exists(idx):
        os.remove(idx)
    state = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    if model.config.tie_word_embeddings:
        state.pop("lm_head.weight", None)
    names = list(state)
    per = math.ceil(len(names) / shards_wanted)
    shards = []
    for i in range(shards_wanted):
        fname = f"model-{i + 1:05d}-of-{shards_wanted:05d}.safetensors"
        save_file({k: state[k] for k in names[i * per:(i + 1) * per]},
                  os.path.join(model_dir, fname), metadata={"format": "pt"})
        shards.append(fname)
    write_index(model_dir, shards)


def check_saved_files(model_dir, saved_dtype, tied, shards_wanted):
    files = safetensors_files(model_dir)
    assert len(files) == shards_wanted, files
    if shards_wanted > 1:
        with open(os.path.join(model_dir, "model.safetensors.index.json")) as f:
            index = json.load(f)
        assert set(index["weight_map"].values()) == set(files), index["weight_map"]
        assert "total_size" in index["metadata"]
    names = set()
    for fname in files:
        for tname, info in read_safetensors_header(os.path.join(model_dir, fname)).items():
            assert info["dtype"] == SAFETENSORS_DTYPE[saved_dtype], (fname, tname, info["dtype"])
            names.add(tname)
    has_head = any(n in names for n in ("lm_head.weight", "embed_out.weight"))  # GPT-NeoX: embed_out
    assert has_head == (not tied), sorted(names)
    return names


@torch.no_grad()
def full_logits(model, ids):
    out = model(torch.tensor([ids], dtype=torch.long), use_cache=False)
    return out.logits[0].float()


@torch.no_grad()
def greedy(model, prompt, n_new):
    """Plain argmax decoding with a full forward per step (no cache, no EOS handling).

    Cross-checked against model.generate() with EOS disabled. Returns the new ids and the
    smallest top-1/top-2 logit margin seen (how safe the argmax is against rounding)."""
    ids = list(prompt)
    margin = float("inf")
    for _ in range(n_new):
        last = full_logits(model, ids)[-1]
        top2 = torch.topk(last, 2).values
        margin = min(margin, float(top2[0] - top2[1]))
        ids.append(int(torch.argmax(last)))
    new = ids[len(prompt):]

    gen_cfg = transformers.GenerationConfig(
        do_sample=False, max_new_tokens=n_new, min_new_tokens=n_new,
        eos_token_id=None, pad_token_id=0, bos_token_id=None,
    )
    try:
        out = model.generate(torch.tensor([prompt], dtype=torch.long),
                             attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                             generation_config=gen_cfg)
        gen = [int(t) for t in out[0, len(prompt):]]
        # generate() merges the checkpoint's EOS id into its min_new_tokens processor, which then forbids EOS: the
        # cross-check covers the tokens before the first EOS the argmax loop picks.
        eos = model.config.eos_token_id
        eos = set(eos if isinstance(eos, list) else [] if eos is None else [eos])
        cut = next((i for i, t in enumerate(new) if t in eos), len(new))
        if cut < len(new):
            log(f"  argmax picks EOS at step {cut}; generate() cross-checked on the {cut} tokens before it")
        if gen[:cut] != new[:cut]:
            raise SystemExit(f"model.generate() {gen} disagrees with argmax loop {new}")
    except SystemExit:
        raise
    except Exception as e:  # generate() API drift must not block fixtures; the loop is the reference
        log(f"  warning: model.generate() cross-check skipped: {type(e).__name__}: {e}")
    return new, margin


def fmt_float(x):
    v = float(x)
    if not math.isfinite(v):
        raise ValueError(f"non-finite value {v}")
    return repr(v)


def write_reference(path, ref):
    """JSON with one key per line, id lists on one line, and one line per logits row."""
    lines = ["{"]
    items = list(ref.items())
    for i, (k, v) in enumerate(items):
        comma = "," if i + 1 < len(items) else ""
        if k == "logits":
            rows = ["[" + ", ".join(fmt_float(x) for x in row) + "]" for row in v]
            lines.append(f'  "{k}": [\n    ' + ",\n    ".join(rows) + "\n  ]" + comma)
        else:
            lines.append(f"  {json.dumps(k)}: {json.dumps(v)}{comma}")
    lines.append("}")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    with open(path) as f:  # must be valid JSON
        json.load(f)


def versions():
    return {"transformers_version": transformers.__version__, "torch_version": torch.__version__}


def dir_size(path):
    return sum(os.path.getsize(os.path.join(path, f)) for f in os.listdir(path))


# ----------------------------------------------------------------------------- tiny models

def check_rope(model, name):
    """For scaled rope variants, make sure the scaling actually changes some frequencies."""
    rope = getattr(model.config, "rope_parameters", None) or getattr(model.config, "rope_scaling", None) or {}
    rtype = rope.get("rope_type", rope.get("type", "default"))
    if rtype == "default":
        return
    head_dim = getattr(model.config, "head_dim", None) or model.config.hidden_size // model.config.num_attention_heads
    theta = rope.get("rope_theta", getattr(model.config, "rope_theta", None))
    base = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim))
    inv = model.model.rotary_emb.inv_freq.double()
    changed = int((~torch.isclose(inv, base, rtol=1e-5, atol=0)).sum())
    log(f"  rope {rtype}: {changed} of {len(base)} frequencies changed by scaling")
    assert changed > 0, f"{name}: rope scaling changed nothing"
    if rtype == "llama3":  # expect the three regimes: unchanged, smoothed, divided by factor
        ratio = (base / inv).tolist()
        factor = rope["factor"]
        n_same = sum(abs(r - 1) < 1e-6 for r in ratio)
        n_div = sum(abs(r - factor) < 1e-6 for r in ratio)
        n_mid = len(ratio) - n_same - n_div
        log(f"  llama3 rope: {n_same} unchanged, {n_mid} smoothed, {n_div} divided by {factor}")
        assert n_same and n_mid and n_div, ratio


def make_tiny(out_dir, name, config_cls, model_cls, extra, saved_dtype, seed, shards, base=COMMON):
    model_dir = os.path.join(out_dir, "hf", name)
    log(f"{name}: {model_cls.__name__}, saved as {saved_dtype}, seed {seed}")
    kwargs = dict(base)
    kwargs.update(extra)
    config = make_config(config_cls, **kwargs)
    torch.manual_seed(seed)
    model = model_cls(config)
    randomize_(model, seed)
    model = model.to(DTYPES[saved_dtype])  # round to the saved dtype before saving
    model.eval()
    rounded = {k: v.detach().float().clone() for k, v in model.state_dict().items()}
    save_checkpoint(model, model_dir, saved_dtype, shards)
    del model

    tied = bool(config.tie_word_embeddings)
    names = check_saved_files(model_dir, saved_dtype, tied, shards)

    # Reference from the checkpoint as written, in float32 on CPU.
    model = load_pretrained(model_cls, model_dir)
    state = model.state_dict()
    saved_as = {"embed_out.weight": "lm_head.weight"}  # GPT-NeoX: transformers 5 saves its head as embed_out
    for k in names:
        k = k if k in state else saved_as.get(k, k)
        assert torch.equal(state[k], rounded[k]), f"{name}: {k} changed across save/load"
    if tied:
        assert model.get_output_embeddings().weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()
    check_rope(model, name)

    vocab = config.vocab_size
    rng = np.random.default_rng(seed)
    logits_ids = [int(x) for x in rng.integers(0, vocab, size=LOGITS_LEN)]
    prompt = [int(x) for x in rng.integers(0, vocab, size=PROMPT_LEN)]
    logits = full_logits(model, logits_ids)
    assert torch.isfinite(logits).all()
    max_abs = float(logits.abs().max())
    assert max_abs > 1.0, f"{name}: logits too flat (max |logit| {max_abs})"
    new, margin = greedy(model, prompt, GREEDY_NEW)

    ref = {
        "name": name,
        "architecture": model_cls.__name__,
        "saved_dtype": saved_dtype,
        "logits_input_ids": logits_ids,
        "logits": logits.tolist(),
        "greedy_prompt_ids": prompt,
        "greedy_output_ids": new,
        "greedy_min_margin": margin,
        **versions(),
    }
    write_reference(os.path.join(model_dir, "reference.json"), ref)
    log(f"  max |logit| {max_abs:.3f}, greedy min top1-top2 margin {margin:.4f}, "
        f"files {sorted(os.listdir(model_dir))}, {dir_size(model_dir) / 1024:.0f} KiB")


# ----------------------------------------------------------------------------- famB: mixture of experts

# name -> (config class name, model class name, full config, saved dtype, seed). Mixtral: 5 experts (odd), top 2,
# softmax over all experts, then top-k renormalized (transformers' MixtralTopKRouter).
MOE_MODELS = [
    ("mixtral_moe", "MixtralConfig", "MixtralForCausalLM",
     dict(hidden_size=64, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
          head_dim=16, vocab_size=256, max_position_embeddings=256, rms_norm_eps=1e-5, rope_theta=1000000.0,
          num_local_experts=5, num_experts_per_tok=2, router_jitter_noise=0.0, sliding_window=None,
          tie_word_embeddings=False, hidden_act="silu", bos_token_id=1, eos_token_id=2, pad_token_id=0),
     "float32", 301),
]


@torch.no_grad()
def router_reference(model, ids):
    """Per layer: HF's router logits for `ids` and the experts its router picks (with their weights), in its order."""
    out = model(torch.tensor([ids], dtype=torch.long), use_cache=False, output_router_logits=True)
    logits, experts, weights = [], [], []
    k = model.config.num_experts_per_tok
    for layer_logits in out.router_logits:
        rl = layer_logits.reshape(len(ids), -1).float()
        probs = torch.softmax(rl, dim=-1)
        top_w, top_i = torch.topk(probs, k, dim=-1)
        top_w = top_w / top_w.sum(dim=-1, keepdim=True)
        # The picks must be clear of ties (and near-ties) for the comparison to mean something.
        sorted_p = torch.sort(probs, dim=-1, descending=True).values
        gap = float((sorted_p[:, k - 1] - sorted_p[:, k]).min())
        if gap <= 1e-4:
            raise SystemExit(f"router top-{k} near-tie ({gap})")
        logits.append([[float(x) for x in row] for row in rl])
        experts.append([[int(x) for x in row] for row in top_i])
        weights.append([[float(x) for x in row] for row in top_w])
    return logits, experts, weights


def make_moe(out_dir, name, config_cls, model_cls, config, saved_dtype, seed):
    """Like make_tiny, for MoE models: transformers 5 keeps experts fused in memory ([experts, 2 inter, hidden]) and
    writes them per expert (the checkpoint format), so saved names are checked against a reload, not the state.
    Routing is discontinuous: a seed whose cached generate() flips an expert pick against the full-forward argmax
    loop (a routing near-tie) is skipped for the next one, at most 8 times; the seed used is in reference.json."""
    for attempt in range(8):
        try:
            return make_moe_seed(out_dir, name, config_cls, model_cls, config, saved_dtype, seed + attempt)
        except SystemExit as e:
            log(f"  seed {seed + attempt}: {e}; trying the next seed")
    raise SystemExit(f"{name}: no seed in {seed}..{seed + 7} gave a routing free of near-ties")


def make_moe_seed(out_dir, name, config_cls, model_cls, config, saved_dtype, seed):
    model_dir = os.path.join(out_dir, "hf", name)
    log(f"{name}: {model_cls.__name__}, saved as {saved_dtype}, seed {seed}")
    cfg = make_config(config_cls, **config)
    torch.manual_seed(seed)
    model = model_cls(cfg)
    randomize_(model, seed)
    model = model.to(DTYPES[saved_dtype]).eval()
    before = {k: v.detach().float().clone() for k, v in model.state_dict().items()}
    save_checkpoint(model, model_dir, saved_dtype, 1)
    del model
    names = check_saved_files(model_dir, saved_dtype, bool(cfg.tie_word_embeddings), 1)
    assert any(".experts.0." in n for n in names), sorted(names)[:8]
    model = load_pretrained(model_cls, model_dir)
    after = model.state_dict()
    for k, v in before.items():
        assert torch.equal(after[k].float(), v), f"{name}: {k} changed across save/load"
    rng = np.random.default_rng(seed)
    logits_ids = [int(x) for x in rng.integers(0, cfg.vocab_size, size=LOGITS_LEN)]
    prompt = [int(x) for x in rng.integers(0, cfg.vocab_size, size=PROMPT_LEN)]
    logits = full_logits(model, logits_ids)
    assert torch.isfinite(logits).all()
    max_abs = float(logits.abs().max())
    assert max_abs > 1.0, f"{name}: logits too flat (max |logit| {max_abs})"
    router_logits, router_experts, router_weights = router_reference(model, logits_ids)
    used = sorted({e for layer in router_experts for row in layer for e in row})
    assert len(used) == cfg.num_local_experts, f"{name}: only experts {used} are ever picked"
    new, margin = greedy(model, prompt, GREEDY_NEW)
    ref = {
        "name": name,
        "architecture": model_cls.__name__,
        "saved_dtype": saved_dtype,
        "logits_input_ids": logits_ids,
        "logits": logits.tolist(),
        "router_logits": router_logits,
        "router_top_experts": router_experts,
        "router_top_weights": router_weights,
        "greedy_prompt_ids": prompt,
        "greedy_output_ids": new,
        "greedy_min_margin": margin,
        "seed": seed,
        **versions(),
    }
    write_reference(os.path.join(model_dir, "reference.json"), ref)
    log(f"  max |logit| {max_abs:.3f}, greedy min top1-top2 margin {margin:.4f}, experts used {used}, "
        f"{dir_size(model_dir) / 1024:.0f} KiB")


# ----------------------------------------------------------------------------- stories260K

def read_llama2c(path):
    """Read a llama2.c legacy (version 0) fp32 checkpoint. Returns (header dict, weights dict)."""
    with open(path, "rb") as f:
        raw = f.read()
    dim, hidden, n_layers, n_heads, n_kv, vocab, seq_len = struct.unpack("<7i", raw[:28])
    shared = vocab > 0
    vocab = abs(vocab)
    hs = dim // n_heads
    shapes = [
        ("tok_embeddings", (vocab, dim)),
        ("rms_att", (n_layers, dim)),
        ("wq", (n_layers, n_heads * hs, dim)),
        ("wk", (n_layers, n_kv * hs, dim)),
        ("wv", (n_layers, n_kv * hs, dim)),
        ("wo", (n_layers, dim, n_heads * hs)),
        ("rms_ffn", (n_layers, dim)),
        ("w1", (n_layers, hidden, dim)),
        ("w2", (n_layers, dim, hidden)),
        ("w3", (n_layers, hidden, dim)),
        ("rms_final", (dim,)),
        ("freq_cis_real", (seq_len, hs // 2)),
        ("freq_cis_imag", (seq_len, hs // 2)),
    ]
    if not shared:
        shapes.append(("wcls", (vocab, dim)))
    n_floats = sum(int(np.prod(s)) for _, s in shapes)
    expected = 28 + 4 * n_floats
    if len(raw) != expected:
        raise SystemExit(f"{path}: {len(raw)} bytes, expected {expected} for this header")
    data = np.frombuffer(raw, dtype="<f4", offset=28)
    weights, off = {}, 0
    for name, shape in shapes:
        n = int(np.prod(shape))
        weights[name] = data[off:off + n].reshape(shape).copy()
        off += n
    hdr = dict(dim=dim, hidden_dim=hidden, n_layers=n_layers, n_heads=n_heads, n_kv_heads=n_kv,
               vocab_size=vocab, seq_len=seq_len, head_size=hs, shared_classifier=shared)
    return hdr, weights


def permute_rotary(w, n_heads, head_dim, dim):
    """llama2.c rotates adjacent pairs (2i, 2i+1); HF rotates halves (i, i + head_dim/2)."""
    return w.view(n_heads, head_dim // 2, 2, dim).transpose(1, 2).reshape(n_heads * head_dim, dim)


def llama2c_forward(hdr, w, ids):
    """Independent float64 numpy forward in llama2.c's own convention (run.c), for checking."""
    dim, hs = hdr["dim"], hdr["head_size"]
    nh, nkv = hdr["n_heads"], hdr["n_kv_heads"]
    T = len(ids)
    W = {k: v.astype(np.float64) for k, v in w.items()}

    def rmsnorm(x, g):
        return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + 1e-5) * g

    def rope(v, n):  # v [T, n*hs]; pairs (2i, 2i+1) rotated by freq_cis[pos, i]
        v = v.reshape(T, n, hs // 2, 2).copy()
        c = W["freq_cis_real"][:T][:, None, :]
        s = W["freq_cis_imag"][:T][:, None, :]
        a, b = v[..., 0].copy(), v[..., 1].copy()
        v[..., 0] = a * c - b * s
        v[..., 1] = a * s + b * c
        return v.reshape(T, n * hs)

    x = W["tok_embeddings"][ids]
    mask = np.triu(np.full((T, T), -np.inf), 1)
    for l in range(hdr["n_layers"]):
        h = rmsnorm(x, W["rms_att"][l])
        q = rope(h @ W["wq"][l].T, nh).reshape(T, nh, hs)
        k = rope(h @ W["wk"][l].T, nkv).reshape(T, nkv, hs)
        v = (h @ W["wv"][l].T).reshape(T, nkv, hs)
        att_out = np.zeros((T, nh, hs))
        for hd in range(nh):
            kv = hd // (nh // nkv)
            sc = q[:, hd] @ k[:, kv].T / math.sqrt(hs) + mask
            sc = np.exp(sc - sc.max(axis=-1, keepdims=True))
            sc /= sc.sum(axis=-1, keepdims=True)
            att_out[:, hd] = sc @ v[:, kv]
        x = x + att_out.reshape(T, dim) @ W["wo"][l].T
        h = rmsnorm(x, W["rms_ffn"][l])
        a = h @ W["w1"][l].T
        x = x + ((a / (1 + np.exp(-a))) * (h @ W["w3"][l].T)) @ W["w2"][l].T
    x = rmsnorm(x, W["rms_final"])
    return x @ W.get("wcls", W["tok_embeddings"]).T


def decode_pieces(tok_path, ids):
    """Decode with a llama2.c tokenizer.bin (for a printed sanity check only)."""
    with open(tok_path, "rb") as f:
        raw = f.read()
    off = 4
    pieces = []
    while off < len(raw):
        _score, n = struct.unpack("<fi", raw[off:off + 8])
        off += 8
        pieces.append(raw[off:off + n])
        off += n
    out = b""
    for prev, t in zip([1] + ids[:-1], ids):
        p = pieces[t] if t < len(pieces) else b"?"
        if prev == 1 and p.startswith(b" "):
            p = p[1:]
        if len(p) == 6 and p.startswith(b"<0x") and p.endswith(b">"):
            p = bytes([int(p[3:5], 16)])
        out += p
    return out.decode("utf-8", errors="replace")


def make_stories(out_dir, stories_path):
    log(f"stories260K: reading {stories_path}")
    hdr, w = read_llama2c(stories_path)
    log(f"  header {hdr}; file size matches")
    dim, hs, L = hdr["dim"], hdr["head_size"], hdr["n_layers"]
    nh, nkv = hdr["n_heads"], hdr["n_kv_heads"]
    assert hdr["shared_classifier"], "expected a classifier shared with the embedding"

    # The stored rope tables must be the theta=10000 ones we configure for HF.
    inv = 1.0 / (10000.0 ** (np.arange(0, hs, 2, dtype=np.float64) / hs))
    ang = np.arange(hdr["seq_len"], dtype=np.float64)[:, None] * inv[None, :]
    assert np.allclose(w["freq_cis_real"], np.cos(ang), atol=1e-4)
    assert np.allclose(w["freq_cis_imag"], np.sin(ang), atol=1e-4)

    config = make_config(
        LlamaConfig, hidden_size=dim, intermediate_size=hdr["hidden_dim"], num_hidden_layers=L,
        num_attention_heads=nh, num_key_value_heads=nkv, head_dim=hs, vocab_size=hdr["vocab_size"],
        max_position_embeddings=hdr["seq_len"], rms_norm_eps=1e-5, rope_theta=10000.0,
        tie_word_embeddings=True, bos_token_id=1, eos_token_id=2, pad_token_id=0, hidden_act="silu",
    )
    t = {k: torch.from_numpy(v) for k, v in w.items()}
    sd = {"model.embed_tokens.weight": t["tok_embeddings"], "model.norm.weight": t["rms_final"]}
    for l in range(L):
        p = f"model.layers.{l}."
        sd[p + "self_attn.q_proj.weight"] = permute_rotary(t["wq"][l], nh, hs, dim)
        sd[p + "self_attn.k_proj.weight"] = permute_rotary(t["wk"][l], nkv, hs, dim)
        sd[p + "self_attn.v_proj.weight"] = t["wv"][l]
        sd[p + "self_attn.o_proj.weight"] = t["wo"][l]
        sd[p + "mlp.gate_proj.weight"] = t["w1"][l]
        sd[p + "mlp.down_proj.weight"] = t["w2"][l]
        sd[p + "mlp.up_proj.weight"] = t["w3"][l]
        sd[p + "input_layernorm.weight"] = t["rms_att"][l]
        sd[p + "post_attention_layernorm.weight"] = t["rms_ffn"][l]
    model = LlamaForCausalLM(config)
    model.eval()
    with torch.no_grad():
        own = model.state_dict()
        missing = set(own) - set(sd) - {"lm_head.weight"}
        extra = set(sd) - set(own)
        assert not missing and not extra, (missing, extra)
        for k, v in sd.items():
            assert own[k].shape == v.shape, (k, own[k].shape, v.shape)
            own[k].copy_(v)
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()

    tmp = tempfile.mkdtemp(prefix="stories260K_hf_")
    try:
        model.save_pretrained(tmp)
        del model
        model = load_pretrained(LlamaForCausalLM, tmp)

        rng = np.random.default_rng(260)
        logits_ids = [1, 403, 407, 261, 378] + [int(x) for x in rng.integers(3, hdr["vocab_size"], size=7)]
        logits = full_logits(model, logits_ids)
        assert torch.isfinite(logits).all()

        # Independent check of the conversion (q/k permutation, GQA, tied classifier).
        ref = llama2c_forward(hdr, w, logits_ids)
        diff = float(np.abs(ref - logits.double().numpy()).max())
        log(f"  HF vs llama2.c-convention numpy forward: max |logit diff| {diff:.2e}")
        assert diff < 1e-3, diff

        out1, m1 = greedy(model, [1], 64)
        out2, m2 = greedy(model, [1, 403, 407, 261, 378], 32)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    tok = os.path.join(os.path.dirname(os.path.abspath(stories_path)), "tok512.bin")
    if os.path.exists(tok):
        log(f"  greedy after BOS: {decode_pieces(tok, out1)!r}")
        log(f"  greedy after 'Once upon a time': {decode_pieces(tok, out2)!r}")
    else:
        log(f"  greedy after BOS: {out1}")
    if 2 in out1 or 2 in out2:
        log("  note: EOS (2) appears among the greedy tokens; decoding went on past it (pure argmax)")

    ref = {
        "name": "stories260K",
        "architecture": "LlamaForCausalLM",
        "saved_dtype": "float32",
        "logits_input_ids": logits_ids,
        "logits": logits.tolist(),
        "greedy_prompt_ids": [1],
        "greedy_output_ids": out1,
        "greedy_prompt2_ids": [1, 403, 407, 261, 378],
        "greedy_output2_ids": out2,
        "greedy_min_margin": min(m1, m2),
        **versions(),
    }
    path = os.path.join(out_dir, "stories260K_reference.json")
    write_reference(path, ref)
    log(f"  wrote {path} ({os.path.getsize(path) / 1024:.0f} KiB)")


# ----------------------------------------------------------------------------- main

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="output folder (e.g. tests/data)")
    ap.add_argument("--stories", help="path to llama2.c stories260K.bin (optional)")
    ap.add_argument("--only", nargs="*", help="make only these tiny models (default: all)")
    args = ap.parse_args()

    # References are computed on CPU in float32 (tiny models; CPU is deterministic and has no TF32).
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_grad_enabled(False)
    try:
        transformers.utils.logging.disable_progress_bar()
    except AttributeError:
        pass
    log(f"torch {torch.__version__}, transformers {transformers.__version__}, reference device cpu, float32")

    os.makedirs(os.path.join(args.out, "hf"), exist_ok=True)
    for name, config_cls, model_cls, extra, saved_dtype, seed, shards in MODELS:
        if args.only and name not in args.only:
            continue
        make_tiny(args.out, name, config_cls, model_cls, extra, saved_dtype, seed, shards)
    failed = []
    for name, config_name, model_name, config, saved_dtype, seed in FAMILY_MODELS + LN_FAMILY_MODELS:
        if args.only and name not in args.only:
            continue
        config_cls = getattr(transformers, config_name, None)
        model_cls = getattr(transformers, model_name, None)
        if config_cls is None or model_cls is None:
            log(f"{name}: transformers {transformers.__version__} has no {model_name}; skipped")
            failed.append(name)
            continue
        try:
            make_tiny(args.out, name, config_cls, model_cls, config, saved_dtype, seed, 1, base={})
        except Exception as e:  # one family's failure must not stop the others; reported and exit code 1
            import traceback

            traceback.print_exc()
            log(f"{name}: FAILED: {type(e).__name__}: {e}")
            failed.append(name)
            shutil.rmtree(os.path.join(args.out, "hf", name), ignore_errors=True)
    for name, config_name, model_name, config, saved_dtype, seed in MOE_MODELS:  # famB
        if args.only and name not in args.only:
            continue
        try:
            make_moe(args.out, name, getattr(transformers, config_name), getattr(transformers, model_name), config,
                     saved_dtype, seed)
        except Exception as e:
            import traceback

            traceback.print_exc()
            log(f"{name}: FAILED: {type(e).__name__}: {e}")
            failed.append(name)
            shutil.rmtree(os.path.join(args.out, "hf", name), ignore_errors=True)
    if args.stories:
        make_stories(args.out, args.stories)

    total = 0
    for root, _dirs, files in os.walk(args.out):
        for f in files:
            if f.endswith((".json", ".safetensors")) and ("hf" in root.split(os.sep) or f.startswith("stories260K")):
                total += os.path.getsize(os.path.join(root, f))
    log(f"done: {total / 1024:.0f} KiB written under {args.out}")
    if failed:
        log(f"not written: {failed}")
        return 1


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Convert the tiny Hugging Face fixtures of each model family to GGUF with llama.cpp's own converter.

Usage:
    pip download --no-deps --no-binary :all: llama-cpp-python==0.3.36 -d /tmp/lcp   # sdist: the converter
    tar xzf /tmp/lcp/llama_cpp_python-0.3.36.tar.gz -C /tmp/lcp
    python3 tools/make_family_ggufs.py --llama-cpp /tmp/lcp/llama_cpp_python-0.3.36/vendor/llama.cpp \
        --out tests/data/gguf/families [--only NAME ...]

For each fixture NAME below, writes <out>/NAME.gguf made by llama.cpp's convert_hf_to_gguf.py (run in a
subprocess, with its own gguf-py) from tests/data/hf/NAME. The output type is the fixture's saved dtype (bf16 / f16
weights convert without rounding; the converter keeps norms and other 1-D tensors in f32 anyway). Fixtures saved in
float32 would give files over the 200 KB fixture budget, so those (and the few in SHRINK, over it even in bf16) are
remade in a temporary folder in bfloat16
with tools/make_hf_fixtures.py's own make_tiny (same config, same seed) and their reference outputs are written
next to the GGUF as <out>/NAME.reference.json; the others keep tests/data/hf/NAME/reference.json.

The fixtures carry no tokenizer, and the converter needs one: each gets a 256-token byte-level BPE tokenizer with no
merges (tokenizer.json, tokenizer_config.json with tokenizer_class GPT2Tokenizer). Two things are patched in the
converter about the vocabulary: the BPE pre-tokenizer check (a hash of known tokenizers' output) answers "gpt-2",
and Gemma-2's set_vocab, which insists on a SentencePiece model, writes the gpt2 vocabulary instead. And one about
configs: the converter reads hparams through AutoConfig(...).to_dict(), which under transformers 5 lacks keys the
converter still reads (GPT-NeoX's rotary_pct, GPT-2's n_ctx); config.json keys missing from it are added, and
restore_legacy_keys writes those keys into the copied config.json as older configs had them. Tensors and the
converter's transformations are its own, unchanged.

Refused families (the converter has no class for the architecture, or fails) are reported and the exit code is 1.
Writes <out>/manifest.json: per fixture, the GGUF, its reference, the converter version and what was refused.
"""

import argparse
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HF_DIR = os.path.join(ROOT, "tests", "data", "hf")
BUDGET = 200 * 1024

# Every family fixture; those the converter refuses are recorded in the manifest.
FIXTURES = [
    "qwen3_qknorm", "mistral", "phi3", "gpt2_tied", "pythia_neox", "neox_sequential", "gptj_partial", "opt_relu",
    "bloom_alibi", "falcon_gqa", "falcon_mqa", "starcoder2", "gemma2", "gemma3_text", "mixtral_moe", "glm",
]

# Config changes for fixtures whose GGUF would be over the budget even in bf16; those are remade (see above) with
# these values over the fixture's config, and carry their own reference.
SHRINK = {
    "gpt2_tied": dict(n_positions=64),
    "bloom_alibi": dict(hidden_size=48),
    "gemma3_text": dict(head_dim=16, intermediate_size=48),
    "mixtral_moe": dict(num_local_experts=3, intermediate_size=32),
}

# Families the converter accepts but Anvil does not read from GGUF: converted (so the manifest shows the converter
# took them), not kept.
NOT_READ = {
    "gemma3_text": "Anvil reads no gemma3 GGUF: the file carries neither the checkpoint's layer pattern nor its "
                   "query_pre_attn_scalar (llama.cpp uses its own constants)",
    "mixtral_moe": "Anvil's Mixtral family has no GGUF mapping yet (stacked expert tensors ffn_*_exps)",
}

OUTTYPE = {"bfloat16": "bf16", "float16": "f16", "float32": "f32"}

# Runs convert_hf_to_gguf.main() with the vocabulary patches described above; argv: llama.cpp dir, then its args.
CONVERT = r"""
import sys
lcpp = sys.argv[1]
sys.path.insert(0, lcpp)
sys.argv = ["convert_hf_to_gguf.py"] + sys.argv[2:]
import convert_hf_to_gguf as c
import conversion.base as base
base.TextModel.get_vocab_base_pre = lambda self, tokenizer: "gpt-2"
# The converter reads its hparams through AutoConfig(...).to_dict(), which under transformers 5 drops keys older
# configs had (GPT-NeoX's rotary_pct): keys of config.json that to_dict lacks are put back.
import json, pathlib
_load_hparams = base.ModelBase.load_hparams
def load_hparams(dir_model, is_mistral_format):
    hparams = _load_hparams(dir_model, is_mistral_format)
    raw = json.loads((pathlib.Path(dir_model) / "config.json").read_text())
    for k, v in raw.items():
        hparams.setdefault(k, v)
    return hparams
base.ModelBase.load_hparams = staticmethod(load_hparams)
try:
    import conversion.gemma as gemma
    gemma.Gemma2Model.set_vocab = lambda self: self._set_vocab_gpt2()
except (ImportError, AttributeError):
    pass
c.main()
"""


def log(msg):
    print(msg, flush=True)


def write_tokenizer(model_dir):
    """A byte-level BPE of the 256 byte symbols and no merges, as tokenizer.json + tokenizer_config.json."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {ch: i for i, ch in enumerate(sorted(alphabet, key=lambda ch: ord(ch)))}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.save(os.path.join(model_dir, "tokenizer.json"))
    with open(os.path.join(model_dir, "tokenizer_config.json"), "w") as f:
        # Special tokens named as byte tokens 0-2 (the fixtures' pad 0, bos 1, eos 2), so that none is added.
        inv = {i: ch for ch, i in vocab.items()}
        json.dump({"tokenizer_class": "GPT2Tokenizer", "model_max_length": 256, "unk_token": inv[0],
                   "pad_token": inv[0], "bos_token": inv[1], "eos_token": inv[2]}, f)


def restore_legacy_keys(model_dir):
    """config.json keys the converter reads that transformers 5 no longer writes, put back as older configs had them:
    GPT-2's n_ctx (= n_positions), GPT-NeoX's rotary_pct and rotary_emb_base (now in rope_parameters)."""
    path = os.path.join(model_dir, "config.json")
    with open(path) as f:
        c = json.load(f)
    rope = c.get("rope_parameters") or {}
    if c.get("model_type") == "gpt2" and "n_ctx" not in c:
        c["n_ctx"] = c["n_positions"]
    if c.get("model_type") == "gpt_neox":
        c.setdefault("rotary_pct", rope.get("partial_rotary_factor", 1.0))
        c.setdefault("rotary_emb_base", rope.get("rope_theta", 10000.0))
    with open(path, "w") as f:
        json.dump(c, f, indent=2)


def remake_in_bf16(name, tmp):
    """tools/make_hf_fixtures.py's fixture NAME remade with bfloat16 weights (and SHRINK's changes) under
    tmp/hf/NAME."""
    shrink = SHRINK.get(name, {})
    spec = importlib.util.spec_from_file_location("make_hf_fixtures", os.path.join(ROOT, "tools", "make_hf_fixtures.py"))
    mk = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mk)
    import torch
    import transformers

    torch.set_grad_enabled(False)
    for n, config_cls, model_cls, extra, _dtype, seed, _shards in mk.MODELS:
        if n == name:
            mk.make_tiny(tmp, name, config_cls, model_cls, dict(extra, **shrink), "bfloat16", seed, 1)
            return os.path.join(tmp, "hf", name)
    for n, config_name, model_name, config, _dtype, seed in mk.FAMILY_MODELS + mk.LN_FAMILY_MODELS:
        if n == name:
            mk.make_tiny(tmp, name, getattr(transformers, config_name), getattr(transformers, model_name),
                         dict(config, **shrink), "bfloat16", seed, 1, base={})
            return os.path.join(tmp, "hf", name)
    for n, config_name, model_name, config, _dtype, seed in mk.MOE_MODELS:
        if n == name:
            mk.make_moe(tmp, name, getattr(transformers, config_name), getattr(transformers, model_name),
                        dict(config, **shrink), "bfloat16", seed)
            return os.path.join(tmp, "hf", name)
    raise KeyError(name)


def convert(lcpp, name, out_dir, tmp):
    src = os.path.join(HF_DIR, name)
    with open(os.path.join(src, "config.json")) as f:
        dtype = json.load(f).get("dtype") or "float32"
    reference = os.path.relpath(os.path.join(src, "reference.json"), ROOT)
    if dtype == "float32" or name in SHRINK:
        src = remake_in_bf16(name, os.path.join(tmp, "bf16"))
        dtype = "bfloat16"
        reference = os.path.relpath(os.path.join(out_dir, name + ".reference.json"), ROOT)
        shutil.copy(os.path.join(src, "reference.json"), os.path.join(ROOT, reference))
    work = os.path.join(tmp, name)
    shutil.copytree(src, work)
    write_tokenizer(work)
    restore_legacy_keys(work)
    out = os.path.join(out_dir, name + ".gguf")
    env = dict(os.environ, PYTHONPATH=os.path.join(lcpp, "gguf-py"), HF_HUB_OFFLINE="1")
    r = subprocess.run([sys.executable, "-c", CONVERT, lcpp, work, "--outtype", OUTTYPE[dtype], "--outfile", out],
                       env=env, capture_output=True, text=True)
    if r.returncode != 0:
        lines = [ln for ln in (r.stderr + r.stdout).splitlines() if ln.strip()]
        why = next((ln for ln in reversed(lines) if "rror" in ln or "not supported" in ln), lines[-1] if lines else "")
        if os.path.exists(out):
            os.remove(out)
        if reference.startswith(os.path.relpath(out_dir, ROOT)):
            os.remove(os.path.join(ROOT, reference))
        return {"name": name, "refused": why.strip()}
    size = os.path.getsize(out)
    if name in NOT_READ:
        os.remove(out)
        if reference.startswith(os.path.relpath(out_dir, ROOT)):
            os.remove(os.path.join(ROOT, reference))
        return {"name": name, "converted_bytes": size, "not_read": NOT_READ[name]}
    if size > BUDGET:  # not kept: the family needs a smaller fixture first
        os.remove(out)
        if reference.startswith(os.path.relpath(out_dir, ROOT)):
            os.remove(os.path.join(ROOT, reference))
        return {"name": name, "over_budget": f"{size} bytes from {OUTTYPE[dtype]} weights (budget {BUDGET})"}
    return {"name": name, "gguf": os.path.relpath(out, ROOT), "reference": reference, "outtype": OUTTYPE[dtype],
            "bytes": size, "config_changes": SHRINK.get(name, {})}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--llama-cpp", required=True, help="llama.cpp source folder (holds convert_hf_to_gguf.py)")
    ap.add_argument("--out", required=True, help="output folder (tests/data/gguf/families)")
    ap.add_argument("--only", nargs="*", help="convert only these fixtures")
    args = ap.parse_args()
    out_dir = os.path.abspath(args.out)
    os.makedirs(out_dir, exist_ok=True)
    manifest_path = os.path.join(out_dir, "manifest.json")
    entries = {}
    if os.path.exists(manifest_path):
        with open(manifest_path) as f:
            entries = {e["name"]: e for e in json.load(f)["fixtures"]}
    with tempfile.TemporaryDirectory() as tmp:
        for name in FIXTURES:
            if args.only and name not in args.only:
                continue
            e = convert(os.path.abspath(args.llama_cpp), name, out_dir, tmp)
            log(f"{name}: " + (f"refused: {e['refused']}" if "refused" in e else
                               f"over budget: {e['over_budget']}" if "over_budget" in e else
                               f"not kept: {e['not_read']}" if "not_read" in e else f"{e['bytes'] / 1024:.0f} KiB"))
            entries[name] = e
    version = "unknown"
    pkg = os.path.join(os.path.abspath(args.llama_cpp), "..", "..", "PKG-INFO")
    if os.path.exists(pkg):
        with open(pkg) as f:
            version = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("Version:")), version)
    manifest = {"converter": "llama.cpp convert_hf_to_gguf.py from llama-cpp-python " + version,
                "fixtures": [entries[n] for n in FIXTURES if n in entries]}
    with open(manifest_path, "w") as f:
        json.dump(manifest, f, indent=1)
        f.write("\n")
    return 1 if any("refused" in e for e in entries.values()) else 0


if __name__ == "__main__":
    sys.exit(main())

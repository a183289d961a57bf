"""Converts a GGUF file to a Hugging Face directory (config.json, fp32 model.safetensors, tokenizer files) with
transformers' own GGUF loader, which dequantizes every tensor and undoes llama.cpp's q/k row permutation: the
unquantized SmolLM2-135M of the quantization accuracy table (bench/results/2026-12-03_quant_accuracy.md), whose only
shipped checkpoint is the demo's Q4_1 GGUF (scripts/fetch_model.sh).

Usage: /work/venv-hf/bin/python tools/gguf_to_hf.py IN.gguf OUT_DIR
"""
import json
import os
import sys

import torch
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM, AutoTokenizer


def main(src: str, out: str) -> None:
    folder, name = os.path.split(os.path.abspath(src))
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    # NOTE: save_pretrained refuses a model loaded from GGUF ("not serializable"), so the weights and the config
    # (without its GGUF quantization_config) are written directly; a tied lm_head is left out as HF does.
    os.makedirs(out, exist_ok=True)
    config = model.config.to_dict()
    config.pop("quantization_config", None)
    config["dtype"] = "float32"
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    if config.get("tie_word_embeddings"):
        state.pop("lm_head.weight", None)
    save_file(state, os.path.join(out, "model.safetensors"), metadata={"format": "pt"})
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(config, f, indent=2, sort_keys=True)
    tokenizer.save_pretrained(out)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])

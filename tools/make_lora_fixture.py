"""A tiny PEFT LoRA adapter over the llama_mha fixture and the logits of HF peft's merged model, for
`anvil build --lora` (tests/unit/test_lora.cpp). Writes tests/data/hf/llama_mha_lora/{adapter_config.json,
adapter_model.safetensors,reference.json}. The adapter's A and B are seeded random (PEFT starts B at zero, which
would make the merge a no-op), on every projection, with a lora_alpha != r so the scaling is exercised.

Usage: /work/venv-hf/bin/python tools/make_lora_fixture.py
"""
import json
import os

import torch
from peft import LoraConfig, get_peft_model
from transformers import LlamaForCausalLM

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "data", "hf")
BASE = os.path.join(ROOT, "llama_mha")
OUT = os.path.join(ROOT, "llama_mha_lora")


def main() -> None:
    torch.manual_seed(1234)
    base = LlamaForCausalLM.from_pretrained(BASE, dtype=torch.float32, attn_implementation="eager").eval()
    config = LoraConfig(r=4, lora_alpha=12, lora_dropout=0.0, bias="none",
                        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    model = get_peft_model(base, config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_A" in name or "lora_B" in name:
                p.copy_(torch.randn_like(p) * 0.1)
    os.makedirs(OUT, exist_ok=True)
    model.save_pretrained(OUT, safe_serialization=True)
    config_path = os.path.join(OUT, "adapter_config.json")
    with open(config_path) as f:
        saved = json.load(f)
    saved["base_model_name_or_path"] = "tests/data/hf/llama_mha"  # not this machine's absolute path
    with open(config_path, "w") as f:
        json.dump(saved, f, indent=2, sort_keys=True)
        f.write("\n")
    merged = model.merge_and_unload().eval()
    with open(os.path.join(BASE, "reference.json")) as f:
        ids = json.load(f)["logits_input_ids"]
    with torch.no_grad():
        logits = merged(torch.tensor([ids])).logits[0].float().tolist()
        base_logits = LlamaForCausalLM.from_pretrained(BASE, dtype=torch.float32)(torch.tensor([ids])).logits[0]
    diff = max(abs(a - b) for ra, rb in zip(logits, base_logits.tolist()) for a, b in zip(ra, rb))
    print(f"merged vs base max |logit diff| {diff:.4f} (the adapter changes the model)")
    assert diff > 0.1
    ref = {"base": "llama_mha", "r": 4, "lora_alpha": 12, "logits_input_ids": ids, "logits": logits}
    with open(os.path.join(OUT, "reference.json"), "w") as f:
        f.write("{\n")
        f.write(",\n".join(f'  {json.dumps(k)}: {json.dumps(v)}' for k, v in ref.items() if k != "logits"))
        f.write(',\n  "logits": [\n    ' + ",\n    ".join(json.dumps(r) for r in logits) + "\n  ]\n}\n")
    for leftover in ("README.md",):
        path = os.path.join(OUT, leftover)
        if os.path.exists(path):
            os.remove(path)


if __name__ == "__main__":
    main()

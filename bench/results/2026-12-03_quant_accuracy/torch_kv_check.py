# Which scale granularity for the fp8 / int8 KV cache: the same text and windows as torch_check.py on SmolLM2 (HF,
# fp32), keys (after RoPE) and values quantized before attention, KL of the second half of 4 windows of 256 tokens
# against fp32, for (a) one scale per token and kv head (what Anvil stores), (b) one scale per layer for K and one
# for V, the amax over the whole text (a per-tensor calibrated scale, TRT-LLM's choice), (c) as (b) over one
# other window only (calibration on different data).
import sys, torch
import transformers.models.llama.modeling_llama as ml
from transformers import AutoModelForCausalLM, AutoTokenizer
torch.set_num_threads(2)
d = "/tmp/qa/smollm2-hf"
tok = AutoTokenizer.from_pretrained(d)
ids = tok(open("/tmp/qa/ppl.txt").read(), return_tensors="pt").input_ids[0]
model = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32, attn_implementation="eager").eval()
def windows(first=0, n=4):
    for c in range(first, first + n):
        yield torch.cat([torch.tensor([tok.bos_token_id or 1]), ids[c * 255:(c + 1) * 255]])[None]
orig = ml.eager_attention_forward
mode = {"q": None}
amax = {}
def quant(x, kind, scale):
    qmax = 448.0 if kind == "fp8" else 127.0
    y = x / scale
    y = y.to(torch.float8_e4m3fn).float() if kind == "fp8" else y.round().clamp(-127, 127)
    return y * scale
def attn(module, query, key, value, *args, **kwargs):
    m = mode["q"]
    if m == "calibrate":
        for name, t in (("k", key), ("v", value)):
            k = (module.layer_idx, name)
            amax[k] = max(amax.get(k, 0.0), float(t.abs().max()))
    elif m is not None:
        kind, gran = m
        qmax = 448.0 if kind == "fp8" else 127.0
        out = []
        for name, t in (("k", key), ("v", value)):
            if gran == "token":  # [batch, kv_heads, tokens, head_dim]: one scale per (head, token)
                s = (t.abs().amax(-1, keepdim=True) / qmax).clamp_min(1e-30)
            else:
                s = torch.tensor(amax[(module.layer_idx, name)] / qmax)
            out.append(quant(t, kind, s))
        key, value = out
    return orig(module, query, key, value, *args, **kwargs)
ml.eager_attention_forward = attn
def logits():
    with torch.no_grad():
        return [model(w).logits[0, 128:].log_softmax(-1) for w in windows()]
ref = logits()
def kl(got):
    return float(sum((r.exp() * (r - g)).sum(-1).mean() for r, g in zip(ref, got)) / len(ref))
def top(got):
    return float(sum((r.argmax(-1) == g.argmax(-1)).float().mean() for r, g in zip(ref, got)) / len(ref))
for kind in ("fp8", "int8"):
    mode["q"] = (kind, "token")
    g = logits(); print(f"{kind} per token per kv head: KL {kl(g):.5f} same top {top(g):.4f}")
mode["q"] = "calibrate"
with torch.no_grad():
    for w in windows(8, 1):
        model(w)
for kind in ("fp8", "int8"):
    mode["q"] = (kind, "tensor")
    g = logits(); print(f"{kind} per tensor, amax of another window: KL {kl(g):.5f} same top {top(g):.4f}")
mode["q"] = "calibrate"
with torch.no_grad():
    for w in windows():
        model(w)
for kind in ("fp8", "int8"):
    mode["q"] = (kind, "tensor")
    g = logits(); print(f"{kind} per tensor, amax of the scored windows: KL {kl(g):.5f} same top {top(g):.4f}")

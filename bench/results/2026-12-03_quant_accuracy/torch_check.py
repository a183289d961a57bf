# Independent check of the fp8 W8A8 / int8-wo figures: the same schemes simulated in torch on SmolLM2 (HF), KL of
# the second half of 256-token windows of the same text against fp32.
import sys, torch
from transformers import AutoModelForCausalLM, AutoTokenizer
torch.set_num_threads(2)
d = "/tmp/qa/smollm2-hf"
tok = AutoTokenizer.from_pretrained(d)
ids = tok(open("/tmp/qa/ppl.txt").read(), return_tensors="pt").input_ids[0]
model = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32).eval()
lins = [m for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and "lm_head" not in n]
orig = {m: m.weight.data.clone() for m in lins}
def windows():
    for c in range(4):
        yield torch.cat([torch.tensor([tok.bos_token_id or 1]), ids[c * 255:(c + 1) * 255]])[None]
def logits():
    with torch.no_grad():
        return [model(w).logits[0, 128:].log_softmax(-1) for w in windows()]
ref = logits()
def kl(got):
    return float(sum((r.exp() * (r - g)).sum(-1).mean() for r, g in zip(ref, got)) / len(ref))
for m in lins:  # int8 per-row weight-only
    w = orig[m]; s = w.abs().amax(1, keepdim=True) / 127
    m.weight.data = (w / s).round().clamp(-127, 127) * s
print("int8-wo KL", kl(logits()))
f8 = torch.float8_e4m3fn
def fwd(self, x):
    xs = x.abs().amax(-1, keepdim=True) / 448
    xq = (x / xs).to(f8).float()
    return (xq @ self.wq.T) * xs * self.ws.T
for m in lins:
    w = orig[m]; s = w.abs().amax(1, keepdim=True) / 448
    m.wq = (w / s).to(f8).float(); m.ws = s
    m.forward = fwd.__get__(m)
print("fp8 W8A8 KL", kl(logits()))

# Which part of fp8 W8A8 costs SmolLM2 its accuracy: KL vs fp32 of each ablation (torch simulation, like torch_check.py).
import sys, torch
from transformers import AutoModelForCausalLM, AutoTokenizer
torch.set_num_threads(2)
d = sys.argv[1]; txt = sys.argv[2]
tok = AutoTokenizer.from_pretrained(d)
ids = tok(open(txt).read(), return_tensors="pt").input_ids[0]
model = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32).eval()
lins = {n: m for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and "lm_head" not in n}
orig = {m: m.weight.data.clone() for m in lins.values()}
def windows():
    for c in range(4):
        yield torch.cat([torch.tensor([tok.bos_token_id or 1]), ids[c * 255:(c + 1) * 255]])[None]
def logits():
    with torch.no_grad():
        return [model(w).logits[0, 128:].log_softmax(-1) for w in windows()]
ref = logits()
def kl(got):
    return float(sum((r.exp() * (r - g)).sum(-1).mean() for r, g in zip(ref, got)) / len(ref))
f8 = torch.float8_e4m3fn
stats = {}
def make_fwd(qw, qa, name):
    def fwd(self, x):
        stats.setdefault(name, []).append(float((x.abs().amax(-1) / x.abs().mean(-1)).mean()))
        w = orig[self]
        if qw:
            s = w.abs().amax(1, keepdim=True) / 448
            w = (w / s).to(f8).float() * s
        if qa:
            xs = x.abs().amax(-1, keepdim=True).clamp(min=1e-12) / 448
            x = (x / xs).to(f8).float() * xs
        return x @ w.T
    return fwd
def apply(sel_w, sel_a):
    for n, m in lins.items():
        m.forward = make_fwd(sel_w(n), sel_a(n), n).__get__(m)
def run(label, sel_w, sel_a):
    apply(sel_w, sel_a); print(f"{label:40s} KL {kl(logits()):.5f}", flush=True)
run("W8A8 all", lambda n: True, lambda n: True)
run("W8 only (A16)", lambda n: True, lambda n: False)
run("A8 only (W fp32)", lambda n: False, lambda n: True)
for part in ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]:
    run(f"A8 only on {part}", lambda n: False, lambda n, p=part: p in n)
for part in ["q_proj|k_proj|v_proj", "gate_proj|up_proj"]:
    ps = part.split("|")
    run(f"W8A8 except A of {part}", lambda n: True, lambda n, ps=ps: not any(p in n for p in ps))
run("W8A8 except down_proj A", lambda n: True, lambda n: "down_proj" not in n)
nl = model.config.num_hidden_layers
for L in [0, 1, nl - 1]:
    run(f"W8A8 except layer {L}", lambda n, L=L: f"layers.{L}." not in n, lambda n, L=L: f"layers.{L}." not in n)
# per-layer contribution of A8 (one layer at a time)
per = []
for L in range(nl):
    apply(lambda n: False, lambda n, L=L: f"layers.{L}." in n)
    per.append((kl(logits()), L))
print("A8 one layer at a time, top 6:", sorted(per, reverse=True)[:6])
print("sum of one-layer KLs", sum(k for k, _ in per))
stats.clear(); apply(lambda n: False, lambda n: False); logits()
worst = sorted(((sum(v) / len(v), n) for n, v in stats.items()), reverse=True)[:8]
print("mean amax/mean|x| per token, worst linears:", [(round(a, 1), n) for a, n in worst])

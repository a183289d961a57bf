#!/usr/bin/env python3
"""Each op of one step kind against its floor, from an `ANVIL_CUDA_PROFILE=1` op table (lines "label calls total_ms
us_per_call") and the ceilings measured in the same call (bench/ceilings.py).

Floors: a GEMM/GEMV reads its weight once and does 2*T*N*K flops, so its floor is max(weight bytes / copy bandwidth,
flops / dense GEMM rate); decode attention reads T*context*2*kv_heads*head_dim*2 bytes; prefill attention does
2*2*heads*head_dim*T^2/2 (causal) flops; element-wise ops move their activations in and out. Copy bandwidth (read +
write of a large copy) stands for the read rate, as BENCHMARKS.md's W1 limit does.

    python3 bench/op_floors.py --profile p.txt --config bench/configs/llama3-8b/config.json --ceilings c.json \
        --tokens 256 --context 144 [--title "..."]
Prints a Markdown table for the rows whose label has T=<tokens> (GEMMs, attention, norms) plus the step's sum.
"""
import argparse
import json
import re


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", required=True)
    ap.add_argument("--config", required=True)
    ap.add_argument("--ceilings", required=True)
    ap.add_argument("--tokens", type=int, required=True, help="tokens in the step (decode: the batch)")
    ap.add_argument("--context", type=float, required=True, help="mean KV length the step's attention reads")
    ap.add_argument("--prefill", action="store_true", help="the step is one causal prefill of --tokens tokens")
    ap.add_argument("--title", default="")
    a = ap.parse_args()
    cfg = json.load(open(a.config))
    ceil = json.load(open(a.ceilings))
    bw = ceil["copy_tb_s"] * 1e12
    flops = ceil["bf16_gemm_tflops"] * 1e12
    layers = cfg["num_hidden_layers"]
    heads, kv_heads = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    head_dim = cfg.get("head_dim", cfg["hidden_size"] // heads)
    hidden = cfg["hidden_size"]
    t = a.tokens
    rows = []
    for line in open(a.profile):
        m = re.match(r"^(\S+)(?: T=(\d+))?(?: (\S+))?\s+(\d+)\s+([\d.]+)\s+([\d.]+)\s*$", line)
        if not m:
            continue
        op, tt, shape, calls, total_ms, us = m.groups()
        calls, us = int(calls), float(us)
        floor = None
        g = re.match(r"^(\d+)x(\d+)->(\d+)$", shape or "") if op == "gemv_swiglu" else None
        if op == "linear" and tt and int(tt) == t:
            n, k = map(int, shape.split("x"))
            floor = max(n * k * 2 / bw, 2 * t * n * k / flops)
        elif g and int(g.group(1)) == t:
            k, n = int(g.group(2)), 2 * int(g.group(3))
            floor = max(n * k * 2 / bw, 2 * t * n * k / flops)
        elif op == "paged_attention" and tt and int(tt) == t:
            if a.prefill:
                floor = 2 * 2 * heads * head_dim * t * t / 2 / flops
            else:
                floor = t * a.context * 2 * kv_heads * head_dim * 2 / bw
        elif op in ("add_rms_norm", "rms_norm", "rope_cache_write", "swiglu", "silu_mul") and tt and int(tt) == t:
            width = {"swiglu": 3 * cfg["intermediate_size"], "silu_mul": 3 * cfg["intermediate_size"],
                     "add_rms_norm": 4 * hidden, "rms_norm": 2 * hidden,
                     "rope_cache_write": 2 * (heads + 2 * kv_heads) * head_dim}[op]
            floor = t * width * 2 / bw
        else:
            continue
        rows.append((f"{op} {shape or ''}".strip(), calls, us, floor * 1e6))
    per_step = layers  # per-layer ops are called once per layer per step; lm_head once
    steps = max((c for name, c, _, _ in rows if name.startswith("rope_cache_write")), default=layers) / layers
    total_us = sum(c * us for _, c, us, _ in rows) / steps
    total_floor = sum(c * f for _, c, _, f in rows) / steps
    print(f"### {a.title or a.profile}: T={t}, context {a.context:g}, {steps:g} steps profiled")
    print(f"ceilings: copy {ceil['copy_tb_s']:.2f} TB/s, bf16 GEMM {ceil['bf16_gemm_tflops']:.0f} TFLOP/s\n")
    print("| op | calls/step | us/call | floor us | x floor | share of step |")
    print("|---|---|---|---|---|---|")
    for name, c, us, f in sorted(rows, key=lambda r: -r[1] * r[2]):
        print(f"| {name} | {c / steps:g} | {us:.1f} | {f:.1f} | {us / f:.2f} | {100 * c * us / steps / total_us:.1f}% |")
    print(f"| **step (these ops)** | | {total_us:.0f} | {total_floor:.0f} | {total_us / total_floor:.2f} | |")
    _ = per_step


if __name__ == "__main__":
    main()

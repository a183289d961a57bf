#!/usr/bin/env python3
"""Hugging Face transformers baseline for W1 (batch-1 decode) and W2 (time to first token), random weights.

Runs on the GPU machine in the same invocation as `anvil bench`, so Anvil/HF ratios come from one run.
Usage: python3 bench/hf_baseline.py --config bench/configs/llama3-8b/config.json --dtype bfloat16 --out hf.json
"""
import argparse
import json
import time

import torch
from transformers import AutoConfig, LlamaForCausalLM


def timed_generate(model, ids, new_tokens, **kw):
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    model.generate(ids, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False, **kw)
    torch.cuda.synchronize()
    return time.perf_counter() - t0


def median(xs):
    xs = sorted(xs)
    return xs[len(xs) // 2]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", required=True)
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--out", required=True)
    ap.add_argument("--modes", default="eager,static")
    ap.add_argument("--w3-batch", type=int, default=0, help="also W3 128/128 at this batch size (eager)")
    args = ap.parse_args()
    dtype = getattr(torch, args.dtype)
    config = AutoConfig.from_pretrained(args.config)
    torch.manual_seed(0)
    with torch.device("meta"):
        model = LlamaForCausalLM(config)
    model = model.to_empty(device="cuda").to(dtype)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.02)
    model.eval()
    gen = torch.Generator(device="cuda").manual_seed(1)
    results = {"config": args.config, "dtype": args.dtype, "transformers": __import__("transformers").__version__,
               "torch": torch.__version__, "gpu": torch.cuda.get_device_name()}
    ids128 = torch.randint(3, config.vocab_size, (1, 128), device="cuda", generator=gen)
    ids2048 = torch.randint(3, config.vocab_size, (1, 2048), device="cuda", generator=gen)
    for mode in args.modes.split(","):
        kw = {"cache_implementation": "static"} if mode == "static" else {}
        print(f"[hf] {mode}: warm-up", flush=True)
        timed_generate(model, ids128, 8, **kw)
        timed_generate(model, ids128, 8, **kw)
        t1 = median([timed_generate(model, ids128, 1, **kw) for _ in range(3)])
        t128 = median([timed_generate(model, ids128, 128, **kw) for _ in range(3)])
        w1 = 127 / (t128 - t1)
        entry = {"w1_decode_tok_per_s": w1, "w2_ttft_128_ms": t1 * 1e3}
        if mode == "eager":
            timed_generate(model, ids2048, 1, **kw)
            entry["w2_ttft_2048_ms"] = median([timed_generate(model, ids2048, 1, **kw) for _ in range(3)]) * 1e3
        results[mode] = entry
        print(f"[hf] {mode}: {entry}", flush=True)
    if args.w3_batch:
        ids = torch.randint(3, config.vocab_size, (args.w3_batch, 128), device="cuda", generator=gen)
        timed_generate(model, ids, 8)
        t = timed_generate(model, ids, 128)
        results["eager"]["w3_128_128_batch"] = args.w3_batch
        results["eager"]["w3_128_128_output_tok_per_s"] = args.w3_batch * 128 / t
        print(f"[hf] eager W3 128/128 batch {args.w3_batch}: {args.w3_batch * 128 / t:.0f} output tok/s", flush=True)
    with open(args.out, "w") as f:
        json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()

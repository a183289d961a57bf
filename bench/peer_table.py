#!/usr/bin/env python3
"""Side-by-side table (markdown) and plot of one GPU call's results: Anvil (`anvil bench --json` files of
bench/gpu_calls/2026-12-03_final.sh part a) against llama.cpp (bench/peers/llama_cpp_bench.py, part b) and HF
transformers (bench/hf_baseline.py). Plot: decode tok/s against context length, and output tok/s against batch.
Usage: peer_table.py --anvil DIR --llamacpp DIR [--hf hf.json] [--plot out.png]
"""
import argparse
import json
import os


def load(path):
    return json.load(open(path)) if os.path.exists(path) else None


def ratio(a, b):
    return f"{a / b:.2f}x" if a and b else ""


def fmt(x, unit=""):
    return "" if x is None else (f"{x:,.0f}{unit}" if x >= 100 else f"{x:.1f}{unit}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--anvil", required=True)
    ap.add_argument("--llamacpp", required=True)
    ap.add_argument("--hf")
    ap.add_argument("--plot")
    args = ap.parse_args()
    A = lambda name: load(os.path.join(args.anvil, name))  # noqa: E731
    f16 = load(os.path.join(args.llamacpp, "F16.json")) or {"w1": {}, "w2": {}, "w3": []}
    hf = load(args.hf) if args.hf else None
    rows = []
    # W1 over context lengths: Anvil's prompt of C tokens then 128 decoded; llama-bench tg128 at depth C.
    w1_anvil = {}
    for c in (128, 2048, 8000, 32000):
        j = A(f"w1_{c}.json")
        if j:
            w1_anvil[c] = j["decode_tok_per_s"]
    w1_lc = {0 if k.endswith("@d0") else int(k.split("@d")[1]): v for k, v in f16["w1"].items()}
    w1_lc_at = {128: w1_lc.get(0), 2048: w1_lc.get(2048), 8000: w1_lc.get(8000), 32000: w1_lc.get(32000)}
    for c, v in w1_anvil.items():
        rows.append((f"W1 decode tok/s, {c:,} tokens of context", v, w1_lc_at.get(c)))
    for n in (128, 2048):
        j = A(f"w2_{n}.json")
        if j:
            rows.append((f"W2 ms to first token, {n:,}-token prompt", 1e3 * n / j["prompt_tok_per_s"],
                         f16["w2"].get(f"pp{n}_ms")))
    w3_lc = {(r["prompt"], r["batch"]): r["output_tok_s"] for r in f16["w3"]}
    for name, p in (("w3_128_128.json", 128), ("w3_2048_128.json", 2048)):
        j = A(name)
        for r in (j or {}).get("runs", []):
            rows.append((f"W3 {p}/128 output tok/s, batch {r['batch_size']}", r["output_tok_per_s"],
                         w3_lc.get((p, r["batch_size"]))))
    for t in ("Q4_K", "Q8_0"):
        q = load(os.path.join(args.llamacpp, f"{t}.json"))
        j = A(f"w1_{t}.json")
        if j:
            rows.append((f"{t} W1 decode tok/s", j["decode_tok_per_s"], q and q["w1"].get("tg128@d0")))
        j = A(f"w3_{t}.json")
        if j:
            lc = q and {(r["prompt"], r["batch"]): r["output_tok_s"] for r in q["w3"]}.get((128, 64))
            rows.append((f"{t} W3 128/128 output tok/s, batch 64", j["runs"][0]["output_tok_per_s"], lc))
    print("| workload | Anvil | llama.cpp | Anvil / llama.cpp |")
    print("|---|---|---|---|")
    for name, a, b in rows:
        better = ratio(b, a) if name.startswith("W2") else ratio(a, b)  # lower is better for times
        print(f"| {name} | {fmt(a)} | {fmt(b)} | {better} |")
    if hf:
        print(f"\nHF transformers (same session): {json.dumps(hf)[:600]}")
    if args.plot:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
        cs = sorted(w1_anvil)
        ax1.plot(cs, [w1_anvil[c] for c in cs], marker="o", label="Anvil")
        lc = [(c, w1_lc_at[c]) for c in cs if w1_lc_at.get(c)]
        ax1.plot([c for c, _ in lc], [v for _, v in lc], marker="s", label="llama.cpp")
        ax1.set_xscale("log"); ax1.set_xlabel("tokens of context"); ax1.set_ylabel("decode tok/s (batch 1)")
        ax1.set_title("W1: decode speed against context"); ax1.grid(True, alpha=0.3); ax1.legend()
        j = A("w3_128_128.json")
        if j:
            bs = [r["batch_size"] for r in j["runs"]]
            ax2.plot(bs, [r["output_tok_per_s"] for r in j["runs"]], marker="o", label="Anvil")
        lb = sorted((b, v) for (p, b), v in w3_lc.items() if p == 128)
        ax2.plot([b for b, _ in lb], [v for _, v in lb], marker="s", label="llama.cpp")
        ax2.set_xscale("log"); ax2.set_xlabel("batch (concurrent sequences)"); ax2.set_ylabel("output tok/s")
        ax2.set_title("W3 128/128: throughput against batch"); ax2.grid(True, alpha=0.3); ax2.legend()
        fig.suptitle("llama3-8b shape, bf16 (llama.cpp: F16 GGUF), one H200, same session")
        fig.tight_layout(); fig.savefig(args.plot, dpi=110)
        print(f"plot: {args.plot}")


if __name__ == "__main__":
    main()

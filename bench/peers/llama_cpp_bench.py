#!/usr/bin/env python3
"""Runs llama.cpp's llama-bench / llama-batched-bench on a GGUF with the workloads of ../shared/BENCHMARKS.md and
writes one JSON with the figures `anvil bench` reports for the same workloads:
  w1      decode tok/s after a 128-token prompt (llama-bench tg128) and at --depths tokens of context (-d)
  w2      prompt processing of 128 / 2,048 tokens (llama-bench pp), as ms to the first token
  w3      output tok/s of P/G at batch B = B*G / (prefill + decode seconds) (llama-batched-bench, prompts not shared)
Flash attention on, every layer on the GPU.
Usage: llama_cpp_bench.py --bin DIR/build/bin --model F.gguf --out F.json [--w3 128/128:64,256 --w3 2048/128:64]
"""
import argparse
import json
import subprocess
import sys


def run(cmd, timeout):
    print("[llama.cpp] " + " ".join(cmd), file=sys.stderr, flush=True)
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if p.returncode != 0:
        sys.stderr.write(p.stderr[-3000:])
        raise SystemExit(f"llama.cpp command failed with {p.returncode}")
    return p.stdout


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--depths", default="8000", help="contexts for the decode sweep (llama-bench -d)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--w3", action="append", default=[], help="P/G:B1,B2 (e.g. 128/128:64,256)")
    ap.add_argument("--skip-w2", action="store_true")
    ap.add_argument("--skip-depth", action="store_true")
    args = ap.parse_args()
    common = ["-m", args.model, "-ngl", "99", "-fa", "1", "-o", "json", "-r", str(args.repeats)]
    res = {"model": args.model, "w1": {}, "w2": {}, "w3": []}
    runs = json.loads(run([f"{args.bin}/llama-bench", *common, "-p", "0" if args.skip_w2 else "128,2048",
                           "-n", "128"], 600))
    if not args.skip_depth:
        runs += json.loads(run([f"{args.bin}/llama-bench", *common[:-2], "-r", "2", "-p", "0", "-n", "128",
                                "-d", args.depths], 600))
    for r in runs:
        ts = r["avg_ts"]
        if r["n_gen"] > 0:
            res["w1"][f"tg{r['n_gen']}@d{r.get('n_depth', 0)}"] = ts
        else:
            res["w2"][f"pp{r['n_prompt']}_ms"] = 1e3 * r["n_prompt"] / ts
        res.setdefault("build", r.get("build_commit"))
        res.setdefault("gpu", r.get("gpu_info"))
    for spec in args.w3:
        shape, batches = spec.split(":")
        p, g = (int(x) for x in shape.split("/"))
        bs = [int(b) for b in batches.split(",")]
        ctx = max(bs) * (p + g) + 256
        out = run([f"{args.bin}/llama-batched-bench", "-m", args.model, "-ngl", "99", "-fa", "on", "-c", str(ctx),
                   "-b", "2048", "-ub", "512", "-npp", str(p), "-ntg", str(g), "-npl", batches,
                   "--output-format", "jsonl"], 600)
        for line in out.splitlines():
            if line.startswith("{"):
                j = json.loads(line)
                res["w3"].append({"prompt": p, "gen": g, "batch": j["pl"], "t_prefill_s": j["t_pp"],
                                  "t_decode_s": j["t_tg"], "decode_tok_s": j["speed_tg"],
                                  "output_tok_s": j["pl"] * j["tg"] / j["t"]})
    json.dump(res, open(args.out, "w"), indent=1)
    print(json.dumps(res))


if __name__ == "__main__":
    main()

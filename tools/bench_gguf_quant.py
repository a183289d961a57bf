#!/usr/bin/env python3
"""Anvil's CPU quantized kernels against llama.cpp and against the same weights in fp32, one GGUF type at a time
(the files tools/make_quant_ggufs.py writes). For each type it records:

  ppl        `anvil perplexity --ctx-size C --chunks N` and `llama-perplexity -c C --chunks N` on the same text
             (same protocol: chunks of C tokens, second half scored); both engines quantize activations to 8 bits.
  kl         `anvil perplexity --ctx-size 8 --kl-reference <TYPE>.deq.gguf`: chunks of 8 tokens; KL(fp32 ||
             quantized) per scored token, top-token agreement and flips where the fp32 run's own gap is below
             --near-tie nats (needs the .deq.gguf twins: make_quant_ggufs.py --steps deq).
  greedy     greedy tokens of the quantized and the fp32 file for a few prompts (`anvil generate --prompts-file`):
             how many of the first --gen tokens agree before the first difference.
  speed      `anvil bench` (prompt P, decode G tokens) and `llama-bench -p P -n G`, on --threads, interleaved
             --rounds times (the machine is shared: medians of interleaved runs); the load average before and
             after each type's runs is recorded, and the peak resident memory of `anvil generate` (mem).

The lead's final table (2 threads; the three target types, one interleaved run):
  python3 tools/bench_gguf_quant.py --anvil build/anvil --llama-bin /work/peers/llama.cpp/build/bin \
      --ggufs /work/peers/ggufs --text /work/peers/ppl.txt --types Q4_1 Q8_0 Q4_K --skip kl greedy \
      --json bench/results/final.json

Writes a JSON file and prints a Markdown table. Example:
  python3 tools/bench_gguf_quant.py --anvil build/anvil --llama-bin /work/peers/llama.cpp/build/bin \
      --ggufs /work/peers/ggufs --text /work/peers/ppl.txt --json bench/results/x.json
"""
import argparse
import json
import os
import re
import statistics
import subprocess
import tempfile

TYPES = ["Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q4_K", "Q5_K", "Q6_K", "Q4_K_M"]
PROMPTS = ["The capital of France is", "Once upon a time, in a small village,",
           "def fibonacci(n):", "The three primary colors are"]


def run(cmd, env=None):
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if p.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{p.stderr[-2000:]}")
    return p.stdout, p.stderr


def fields(text):
    return {k.strip(): v.strip() for k, v in (line.split(":", 1) for line in text.splitlines() if ":" in line)}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--anvil", required=True)
    p.add_argument("--llama-bin", required=True, help="directory with llama-perplexity and llama-bench")
    p.add_argument("--ggufs", required=True)
    p.add_argument("--stem", default="SmolLM2-135M-Instruct")
    p.add_argument("--text", required=True)
    p.add_argument("--types", nargs="*", default=TYPES)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--ctx-size", type=int, default=512)
    p.add_argument("--chunks", type=int, default=8)
    p.add_argument("--kl-chunks", type=int, default=300)
    p.add_argument("--gen", type=int, default=32)
    p.add_argument("--prompt-tokens", type=int, default=128)
    p.add_argument("--gen-tokens", type=int, default=64)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--skip", nargs="*", default=[], choices=["ppl", "kl", "greedy", "speed", "mem"])
    p.add_argument("--quant-activations", default="precise", choices=["precise", "llama"],
                   help="Anvil's activation mode (llama: llama.cpp's one-pass numbers)")
    p.add_argument("--json", required=True)
    args = p.parse_args()
    env = dict(os.environ, LD_LIBRARY_PATH=args.llama_bin)
    t = str(args.threads)
    qa = ["--quant-activations", args.quant_activations]
    results = json.load(open(args.json)) if os.path.exists(args.json) else {}
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
        f.write("\n".join(PROMPTS) + "\n")
        prompts_file = f.name
    for qtype in args.types:
        model = os.path.join(args.ggufs, f"{args.stem}.{qtype}.gguf")
        deq = os.path.join(args.ggufs, f"{args.stem}.{qtype}.deq.gguf")
        r = results.setdefault(qtype, {"file_bytes": os.path.getsize(model)})
        r["quant_activations"] = args.quant_activations
        r["loadavg_before"] = os.getloadavg()
        if "ppl" not in args.skip:
            out, _ = run([args.anvil, "-q", "perplexity", "--model", model, "--threads", t, *qa, "--file", args.text,
                          "--ctx-size", str(args.ctx_size), "--chunks", str(args.chunks)])
            r["anvil_ppl"] = float(fields(out)["perplexity"])
            r["anvil_ppl_stderr"] = float(fields(out)["perplexity_stderr"])
            r["scored"] = int(fields(out)["scored"])
            _, err = run([os.path.join(args.llama_bin, "llama-perplexity"), "-m", model, "-f", args.text, "-c",
                          str(args.ctx_size), "-b", str(args.ctx_size), "--chunks", str(args.chunks), "-t", t],
                         env)
            m = re.search(r"Final estimate: PPL = ([0-9.]+) \+/- ([0-9.]+)", err)
            r["llama_ppl"], r["llama_ppl_stderr"] = float(m.group(1)), float(m.group(2))
            r["ppl_rel_diff"] = r["anvil_ppl"] / r["llama_ppl"] - 1.0
        if "kl" not in args.skip:
            out, _ = run([args.anvil, "-q", "perplexity", "--model", model, "--threads", t, *qa, "--file", args.text,
                          "--ctx-size", "8", "--chunks", str(args.kl_chunks), "--kl-reference", deq])
            fl = fields(out)
            r["kl"] = {k: float(fl[k]) for k in ("scored", "perplexity", "reference_perplexity", "kl_mean", "kl_max",
                                                   "same_top", "top_flips", "top_flips_near_tie")}
        if "greedy" not in args.skip:
            outs = []
            for path in (model, deq):
                out, _ = run([args.anvil, "-q", "generate", "--model", path, "--threads", t, *qa, "--prompts-file",
                              prompts_file, "--max-tokens", str(args.gen), "--temperature", "0", "--ignore-eos"])
                outs.append([json.loads(line)["token_ids"] for line in out.splitlines() if line.strip()])
            agree = []
            for a, b in zip(*outs):
                n = 0
                while n < min(len(a), len(b)) and a[n] == b[n]:
                    n += 1
                agree.append(n)
            r["greedy_agree"] = agree
        if "speed" not in args.skip:
            ours_pp, ours_tg, ll_pp, ll_tg = [], [], [], []
            for _ in range(args.rounds):
                _, err = run([args.anvil, "-q", "bench", "--model", model, "--threads", t, *qa, "--prompt-tokens",
                              str(args.prompt_tokens), "--gen-tokens", str(args.gen_tokens), "--repeats", "1"])
                out_all = _ + err
                m = re.search(r"prompt \d+ tokens: ([0-9.]+) tok/s \| decode \d+ tokens: ([0-9.]+) tok/s", out_all)
                ours_pp.append(float(m.group(1)))
                ours_tg.append(float(m.group(2)))
                out, _ = run([os.path.join(args.llama_bin, "llama-bench"), "-m", model, "-t", t, "-p",
                              str(args.prompt_tokens), "-n", str(args.gen_tokens), "-r", "1", "-o", "json"], env)
                for test in json.loads(out):
                    (ll_pp if test["n_prompt"] > 0 else ll_tg).append(test["avg_ts"])
            r["speed"] = {"anvil_pp": ours_pp, "anvil_tg": ours_tg, "llama_pp": ll_pp, "llama_tg": ll_tg}
        if "mem" not in args.skip:
            with tempfile.NamedTemporaryFile("r", suffix=".time") as tf:
                run(["/usr/bin/time", "-o", tf.name, "-f", "%M", args.anvil, "-q", "generate", "--model", model,
                     "--threads", t, *qa, "--prompts-file", prompts_file, "--max-tokens", str(args.gen),
                     "--temperature", "0", "--ignore-eos"])
                r["anvil_peak_rss_bytes"] = int(open(tf.name).read().split()[-1]) * 1024
        r["loadavg_after"] = os.getloadavg()
        json.dump(results, open(args.json, "w"), indent=1)
        print(qtype, json.dumps(r), flush=True)
    os.unlink(prompts_file)
    med = statistics.median
    print("| type | file MB | PPL anvil | PPL llama.cpp | diff | KL mean | same top | flips (near-tie) | greedy agree "
          "| pp anvil / llama.cpp | tg anvil / llama.cpp | pp ratio | tg ratio | peak RSS MB | load avg |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for qtype, r in results.items():
        s, k = r.get("speed"), r.get("kl")
        print(f"| {qtype} | {r['file_bytes'] / 1e6:.1f} | {r.get('anvil_ppl', float('nan')):.4f} | "
              f"{r.get('llama_ppl', float('nan')):.4f} | {100 * r.get('ppl_rel_diff', float('nan')):+.2f}% | "
              + (f"{k['kl_mean']:.5f} | {100 * k['same_top']:.2f}% | {k['top_flips']:.0f} ({k['top_flips_near_tie']:.0f}) | "
                 if k else "| | | ")
              + (f"{r['greedy_agree']} | " if "greedy_agree" in r else "| ")
              + (f"{med(s['anvil_pp']):.0f} / {med(s['llama_pp']):.0f} | {med(s['anvil_tg']):.1f} / "
                 f"{med(s['llama_tg']):.1f} | {med(s['anvil_pp']) / med(s['llama_pp']):.2f} | "
                 f"{med(s['anvil_tg']) / med(s['llama_tg']):.2f} |" if s else "| | | |")
              + (f" {r['anvil_peak_rss_bytes'] / 1e6:.0f} |" if "anvil_peak_rss_bytes" in r else " |")
              + f" {r.get('loadavg_before', [float('nan')])[0]:.1f}-{r.get('loadavg_after', [float('nan')])[0]:.1f} |")


if __name__ == "__main__":
    main()

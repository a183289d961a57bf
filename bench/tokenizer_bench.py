#!/usr/bin/env python3
"""Tokenizer encode throughput: `anvil tokenize --benchmark` against the PyPI `tokenizers` package, one thread
each, on the tokenizer test corpus (tests/data/tokenizers/corpus.json, every entry joined into one document),
for every family fixture. Also checks that both produce the same ids on that document.

Usage:
    python3 bench/tokenizer_bench.py --anvil build/anvil [--repeats 40] [--markdown]

Needs the `tokenizers` package. HF runs with TOKENIZERS_PARALLELISM=false and RAYON_NUM_THREADS=1.
"""
import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time

os.environ["TOKENIZERS_PARALLELISM"] = "false"
os.environ["RAYON_NUM_THREADS"] = "1"
from tokenizers import Tokenizer  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(ROOT, "tests", "data", "tokenizers")
FAMILIES = ["gpt2", "llama3", "qwen2", "smollm2", "llama2", "mistral"]


def corpus_document():
    entries = json.load(open(os.path.join(DATA, "corpus.json"), encoding="utf-8"))["entries"]
    texts = [e["text"] if "text" in e else bytes.fromhex(e["hex"]).decode("utf-8", "replace") for e in entries]
    return "\n\n".join(texts)


def bench_hf(path, text, repeats):
    tok = Tokenizer.from_file(path)
    ids = tok.encode(text, add_special_tokens=False).ids
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        for _ in range(repeats):
            tok.encode(text, add_special_tokens=False)
        best = min(best, time.perf_counter() - t0)
    return ids, len(text.encode("utf-8")) * repeats / best / 1e6


def bench_anvil(anvil, path, text_file, repeats):
    best = 0.0
    ids = None
    for _ in range(3):
        proc = subprocess.run([anvil, "tokenize", "--model", path, "--file", text_file, "--no-special-tokens",
                               "--benchmark", str(repeats)], capture_output=True, text=True, check=True)
        ids = json.loads(proc.stdout)
        best = max(best, float(re.search(r"encode: ([0-9.]+) MB/s", proc.stderr).group(1)))
    return ids, best


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--anvil", default=os.path.join(ROOT, "build", "anvil"))
    parser.add_argument("--repeats", type=int, default=40)
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table")
    args = parser.parse_args()
    text = corpus_document()
    with tempfile.NamedTemporaryFile("w", encoding="utf-8", suffix=".txt", delete=False) as f:
        f.write(text)
        text_file = f.name
    rows = []
    try:
        for family in FAMILIES:
            path = os.path.join(DATA, family, "tokenizer.json")
            hf_ids, hf_mbs = bench_hf(path, text, args.repeats)
            anvil_ids, anvil_mbs = bench_anvil(args.anvil, path, text_file, args.repeats)
            if anvil_ids != hf_ids:
                sys.exit(f"{family}: anvil and tokenizers disagree on the benchmark document")
            rows.append((family, len(hf_ids), hf_mbs, anvil_mbs))
    finally:
        os.unlink(text_file)
    size = len(text.encode("utf-8"))
    if args.markdown:
        print(f"| family | tokens | tokenizers MB/s | anvil MB/s | speedup |")
        print("|---|---:|---:|---:|---:|")
        for family, n, hf, an in rows:
            print(f"| {family} | {n} | {hf:.2f} | {an:.2f} | {an / hf:.2f}x |")
        print(f"\nDocument: {size} bytes (corpus.json joined), {args.repeats} encodes per run, best of 3 runs.")
    else:
        for family, n, hf, an in rows:
            print(f"{family:10s} {n:7d} tokens  tokenizers {hf:7.2f} MB/s  anvil {an:7.2f} MB/s  ({an / hf:.2f}x)")


if __name__ == "__main__":
    main()

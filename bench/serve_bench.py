#!/usr/bin/env python3
"""W5 through HTTP: the serving workload of `anvil bench --workload serving` (src/cli/bench_serving.cpp), sent to a
running `anvil serve` as streaming /v1/completions requests. Requests arrive as a Poisson process at each given
rate ("inf": all at once), with seeded lognormal prompt and output lengths, random token-id prompts, greedy
decoding and `ignore_eos` (so each request generates exactly its planned length). Reports time to first token,
time per output token and end-to-end latency (mean, P50/P95/P99, measured by the client) and throughput, as JSON
in the same layout as the direct-engine driver; --compare prints how much HTTP adds to its median TPOT.

Usage:
  anvil serve --model M --device cuda --port 8000 &
  python3 bench/serve_bench.py --base-url http://127.0.0.1:8000 --request-rates 1,4,16,inf --json http.json
  anvil bench --workload serving --model M --device cuda --request-rates 1,4,16,inf --json direct.json
  python3 bench/serve_bench.py --compare direct.json --from-json http.json

For a like-for-like comparison, --plan FILE writes the plan this run uses (every request's arrival time, prompt
ids and output length; or reads it when FILE exists) and `anvil bench --workload serving --plan-file FILE`
replays exactly that plan through the engine directly.
"""
import argparse
import asyncio
import json
import math
import os
import random
import sys
import time

import httpx


def summarize(values):
    """mean/p50/p95/p99 in ms of seconds `values`, interpolated as bench_serving.cpp does."""
    if not values:
        return {"mean": 0.0, "p50": 0.0, "p95": 0.0, "p99": 0.0}
    v = sorted(values)

    def at(q):
        pos = q * (len(v) - 1)
        lo = math.floor(pos)
        hi = min(lo + 1, len(v) - 1)
        return v[lo] + (v[hi] - v[lo]) * (pos - lo)

    return {"mean": sum(v) / len(v) * 1e3, "p50": at(0.50) * 1e3, "p95": at(0.95) * 1e3, "p99": at(0.99) * 1e3}


def draw_length(rng, mean, sigma, lo, hi):
    x = round(rng.lognormvariate(math.log(mean) - sigma * sigma / 2.0, sigma))
    return int(min(max(x, lo), hi))


def plan_requests(args, rate, max_len, seed):
    rng = random.Random(seed)
    plan, t = [], 0.0
    for _ in range(args.num_requests):
        if not math.isinf(rate):
            t += rng.expovariate(rate)
        prompt_len = draw_length(rng, args.input_len_mean, args.length_sigma, 1, max(max_len - 1, 1))
        output_len = draw_length(rng, args.output_len_mean, args.length_sigma, 1, max(max_len - prompt_len, 1))
        plan.append((t, prompt_len, output_len))
    return plan


def make_prompts(plan, vocab_size, seed):
    rng = random.Random(seed)
    return [[rng.randrange(3, vocab_size) for _ in range(prompt_len)] for (_, prompt_len, _) in plan]


async def one_request(client, model, prompt, max_tokens, t0, record):
    body = {"model": model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "ignore_eos": True,
            "stream": True, "stream_options": {"include_usage": True}}
    record["submit"] = time.perf_counter() - t0
    try:
        async with client.stream("POST", "/v1/completions", json=body) as r:
            if r.status_code != 200:
                record["error"] = f"HTTP {r.status_code}: {(await r.aread())[:200]!r}"
                return
            async for line in r.aiter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                now = time.perf_counter() - t0
                # NOTE: only the usage chunk (empty choices) is parsed; token chunks are timed unread, to keep the
                # client's CPU per token small next to the server's.
                if '"choices":[]' in line:
                    usage = json.loads(line[6:]).get("usage") or {}
                    record["num_tokens"] = usage.get("completion_tokens", 0)
                    continue
                if "first_token" not in record:
                    record["first_token"] = now
                record["last_token"] = now
            record["done"] = time.perf_counter() - t0
    except httpx.HTTPError as e:
        record["error"] = repr(e)


async def run_rate(args, model, plan, prompts, rate):
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    records = [dict() for _ in plan]
    max_lag = 0.0
    async with httpx.AsyncClient(base_url=args.base_url, limits=limits, timeout=None, headers=headers) as client:
        t0 = time.perf_counter()
        tasks = []
        for (offset, prompt_len, output_len), prompt, record in zip(plan, prompts, records):
            wait = offset - (time.perf_counter() - t0)
            if wait > 0:
                await asyncio.sleep(wait)
            max_lag = max(max_lag, time.perf_counter() - t0 - offset)
            tasks.append(asyncio.create_task(one_request(client, model, prompt, output_len, t0, record)))
        await asyncio.gather(*tasks)
    ttft, tpot, e2e = [], [], []
    completed = failed = prompt_tokens = output_tokens = 0
    last_done = 0.0
    for (_, prompt_len, _), r in zip(plan, records):
        if "error" in r or "first_token" not in r or "done" not in r:
            failed += 1
            if "error" in r and failed <= 3:
                print(f"  request failed: {r['error']}", file=sys.stderr)
            continue
        completed += 1
        n = r.get("num_tokens", 0)
        prompt_tokens += prompt_len
        output_tokens += n
        ttft.append(r["first_token"] - r["submit"])
        e2e.append(r["done"] - r["submit"])
        if n > 1:
            tpot.append((r["last_token"] - r["first_token"]) / (n - 1))
        last_done = max(last_done, r["done"])
    d = last_done if last_done > 0 else 1.0
    return {"request_rate": "inf" if math.isinf(rate) else f"{rate:g}", "duration_s": last_done,
            "num_requests": len(plan), "max_schedule_lag_ms": max_lag * 1e3,
            "num_completed": completed, "num_failed": failed, "request_throughput": completed / d,
            "output_tok_per_s": output_tokens / d, "total_tok_per_s": (prompt_tokens + output_tokens) / d,
            "prompt_tokens": prompt_tokens, "output_tokens": output_tokens, "ttft_ms": summarize(ttft),
            "tpot_ms": summarize(tpot), "e2e_latency_ms": summarize(e2e)}


def parse_rate(text):
    if text == "inf":
        return math.inf
    rate = float(text)
    if not (rate > 0 and math.isfinite(rate)):
        raise argparse.ArgumentTypeError(f"--request-rates: '{text}' is not a positive number or 'inf'")
    return rate


def print_table(result):
    print(f"{'rate':>8} {'req/s':>10} {'output tok/s':>12} {'TTFT p50 ms':>12} {'TTFT p99 ms':>12} "
          f"{'TPOT p50 ms':>12} {'TPOT p99 ms':>12} {'E2E p50 ms':>12} {'E2E p99 ms':>12}")
    for r in result["results"]:
        print(f"{r['request_rate']:>8} {r['request_throughput']:>10.2f} {r['output_tok_per_s']:>12.1f} "
              f"{r['ttft_ms']['p50']:>12.1f} {r['ttft_ms']['p99']:>12.1f} {r['tpot_ms']['p50']:>12.2f} "
              f"{r['tpot_ms']['p99']:>12.2f} {r['e2e_latency_ms']['p50']:>12.1f} {r['e2e_latency_ms']['p99']:>12.1f}")


def compare(http, direct):
    """Prints, per rate found in both, how much HTTP adds to the median TPOT (and TTFT) of the direct engine."""
    by_rate = {r["request_rate"]: r for r in direct["results"]}
    print(f"{'rate':>8} {'TPOT p50 direct':>16} {'TPOT p50 HTTP':>14} {'added':>8} {'TTFT p50 direct':>16} "
          f"{'TTFT p50 HTTP':>14} {'lag ms direct/HTTP':>19}")
    worst = -math.inf
    for r in http["results"]:
        d = by_rate.get(r["request_rate"])
        if not d:
            continue
        a, b = d["tpot_ms"]["p50"], r["tpot_ms"]["p50"]
        added = (b - a) / a * 100 if a > 0 else float("nan")
        worst = max(worst, added)
        lags = f"{d.get('max_schedule_lag_ms', float('nan')):.1f} / {r.get('max_schedule_lag_ms', float('nan')):.1f}"
        print(f"{r['request_rate']:>8} {a:>16.3f} {b:>14.3f} {added:>7.2f}% {d['ttft_ms']['p50']:>16.1f} "
              f"{r['ttft_ms']['p50']:>14.1f} {lags:>19}")
    print(f"HTTP adds at most {worst:.2f}% to the median time per output token (target: < 5%)")


async def main_async(args):
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    async with httpx.AsyncClient(base_url=args.base_url, headers=headers, timeout=30) as c:
        models = (await c.get("/v1/models")).json()["data"]
    info = models[0]
    model = args.model or info["id"]
    max_len = args.max_model_len or info.get("max_model_len") or 2048
    vocab_size = args.vocab_size or info.get("vocab_size") or 32000
    warm = argparse.Namespace(**{**vars(args), "num_requests": 2, "input_len_mean": min(args.input_len_mean, 16.0),
                                 "output_len_mean": 4.0})
    warm_plan = plan_requests(warm, math.inf, max_len, args.seed + 99)
    await run_rate(args, model, warm_plan, make_prompts(warm_plan, vocab_size, args.seed + 99), math.inf)
    if args.plan and os.path.exists(args.plan):
        saved = json.load(open(args.plan))
        rate_plans = [(parse_rate(r["request_rate"]), [(q["arrival_s"], len(q["prompt"]), q["output_len"])
                                                       for q in r["requests"]], [q["prompt"] for q in r["requests"]])
                      for r in saved["rates"]]
    else:
        rate_plans = []
        for k, rate in enumerate(args.request_rates):
            plan = plan_requests(args, rate, max_len, args.seed + k)
            rate_plans.append((rate, plan, make_prompts(plan, vocab_size, args.seed + 1000 + k)))
        if args.plan:
            with open(args.plan, "w") as f:
                json.dump({"rates": [{"request_rate": "inf" if math.isinf(rate) else f"{rate:g}",
                                      "requests": [{"arrival_s": t, "prompt": p, "output_len": o}
                                                   for (t, _, o), p in zip(plan, prompts)]}
                                     for rate, plan, prompts in rate_plans]}, f)
    results = []
    for rate, plan, prompts in rate_plans:
        r = await run_rate(args, model, plan, prompts, rate)
        print(f"rate {r['request_rate']}: {r['num_completed']} requests in {r['duration_s']:.2f} s, TTFT p50 "
              f"{r['ttft_ms']['p50']:.1f} ms, TPOT p50 {r['tpot_ms']['p50']:.2f} ms, schedule lag "
              f"{r['max_schedule_lag_ms']:.1f} ms", file=sys.stderr)
        results.append(r)
    return {"workload": "W5-http", "base_url": args.base_url, "model": model, "max_model_len": max_len,
            "num_requests": args.num_requests, "input_len_mean": args.input_len_mean,
            "output_len_mean": args.output_len_mean, "length_sigma": args.length_sigma, "seed": args.seed,
            "plan": args.plan,
            "results": results}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--base-url", default="http://127.0.0.1:8000")
    p.add_argument("--api-key", default="")
    p.add_argument("--model", default="", help="default: the server's model")
    p.add_argument("--request-rates", default="1,4,16,inf",
                   type=lambda s: [parse_rate(x) for x in s.split(",")], help="requests/s, comma separated")
    p.add_argument("--num-requests", type=int, default=200, help="requests per rate")
    p.add_argument("--input-len-mean", type=float, default=512.0)
    p.add_argument("--output-len-mean", type=float, default=256.0)
    p.add_argument("--length-sigma", type=float, default=0.5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-model-len", type=int, default=0, help="default: from /v1/models")
    p.add_argument("--vocab-size", type=int, default=0, help="random prompt ids below this (default: /v1/models)")
    p.add_argument("--json", default="", help="write the results here")
    p.add_argument("--plan", default="", help="read the request plan from this file, or write it there if missing")
    p.add_argument("--compare", default="", help="a direct-engine JSON (anvil bench --workload serving --json)")
    p.add_argument("--from-json", default="", help="with --compare: HTTP results from this file instead of a run")
    args = p.parse_args()
    if args.from_json:
        result = json.load(open(args.from_json))
    else:
        result = asyncio.run(main_async(args))
    print(f"model: {result['model']} | W5 through HTTP: {result['num_requests']} requests per rate, lognormal "
          f"lengths (mean {result['input_len_mean']:.0f} in / {result['output_len_mean']:.0f} out, sigma "
          f"{result['length_sigma']:.2f})")
    print_table(result)
    if args.json and not args.from_json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
            f.write("\n")
    if args.compare:
        compare(result, json.load(open(args.compare)))


if __name__ == "__main__":
    main()

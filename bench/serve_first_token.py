#!/usr/bin/env python3
"""Seconds from starting `anvil serve` to its first completed token (issue 13: an 8B engine directory should serve
its first token within 10 s of start). Starts the server, posts a one-token completion (token-id prompt, so a model
without a tokenizer works) until one succeeds, and prints/writes the times: to /health and to the first token.

  python3 bench/serve_first_token.py --anvil .carry/bin/anvil --port 8124 --json out.json -- --model ENGINE --device cuda
"""
import argparse
import json
import subprocess
import sys
import time
import urllib.error
import urllib.request


def post(url, body, timeout):
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return r.status, json.loads(r.read())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--anvil", required=True)
    ap.add_argument("--port", type=int, default=8124)
    ap.add_argument("--timeout", type=float, default=120.0)
    ap.add_argument("--json")
    ap.add_argument("serve_args", nargs=argparse.REMAINDER)
    a = ap.parse_args()
    args = [x for x in a.serve_args if x != "--"]
    base = f"http://127.0.0.1:{a.port}"
    t0 = time.monotonic()
    proc = subprocess.Popen([a.anvil, "serve", "--port", str(a.port), *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    health = first = None
    try:
        while time.monotonic() - t0 < a.timeout and proc.poll() is None:
            if health is None:
                try:
                    with urllib.request.urlopen(base + "/health", timeout=1) as r:
                        if r.status == 200:
                            health = time.monotonic() - t0
                except (urllib.error.URLError, OSError):
                    time.sleep(0.05)
                    continue
            try:
                status, body = post(base + "/v1/completions",
                                    {"model": "m", "prompt": [1, 2, 3, 4], "max_tokens": 1, "temperature": 0}, 30)
                if status == 200 and body["choices"]:
                    first = time.monotonic() - t0
                    break
            except (urllib.error.URLError, OSError):
                time.sleep(0.05)
    finally:
        proc.terminate()
        try:
            _, err = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
    if first is None:
        print("no first token within %.0f s (server exit %s); its log ends:\n%s" % (a.timeout, proc.returncode,
                                                                                   err[-2000:]), file=sys.stderr)
        return 1
    res = {"seconds_to_health": health, "seconds_to_first_token": first, "serve_args": args}
    print("to /health %.2f s, to the first token %.2f s" % (health, first))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""W5 drivers: bench/serve_bench.py through HTTP and `anvil bench --workload serving` directly replay one shared
plan file (arrival times, prompt ids, output lengths), so their figures come from identical workloads."""
import json
import subprocess
import sys

from conftest import ROOT
from test_server_common import STORIES_MODEL, Server


def test_http_and_direct_drivers_replay_the_same_plan(anvil_bin, tmp_path):
    plan = tmp_path / "plan.json"
    http_json = tmp_path / "http.json"
    direct_json = tmp_path / "direct.json"
    server = Server(anvil_bin, STORIES_MODEL, tmp_path / "server.log")
    try:
        subprocess.run([sys.executable, str(ROOT / "bench" / "serve_bench.py"), "--base-url", server.base,
                        "--request-rates", "20,inf", "--num-requests", "6", "--input-len-mean", "12",
                        "--output-len-mean", "8", "--plan", str(plan), "--json", str(http_json)],
                       check=True, timeout=120, capture_output=True)
    finally:
        server.stop()
    saved = json.loads(plan.read_text())
    assert [r["request_rate"] for r in saved["rates"]] == ["20", "inf"]
    for r in saved["rates"]:
        assert len(r["requests"]) == 6
        arrivals = [q["arrival_s"] for q in r["requests"]]
        assert arrivals == sorted(arrivals)
        assert all(len(q["prompt"]) >= 1 and q["output_len"] >= 1 for q in r["requests"])
    assert all(q["arrival_s"] == 0.0 for q in saved["rates"][1]["requests"])
    assert saved["rates"][0]["requests"][-1]["arrival_s"] > 0.0

    out = subprocess.run([anvil_bin, "bench", "--workload", "serving", *STORIES_MODEL, "--threads", "1",
                          "--plan-file", str(plan), "--json", str(direct_json)],
                         check=True, timeout=120, capture_output=True, text=True, cwd=ROOT)
    assert "TPOT p50 ms" in out.stdout
    http = json.loads(http_json.read_text())
    direct = json.loads(direct_json.read_text())
    for h, d, p in zip(http["results"], direct["results"], saved["rates"]):
        assert h["request_rate"] == d["request_rate"] == p["request_rate"]
        assert h["num_completed"] == d["num_completed"] == 6
        prompt_tokens = sum(len(q["prompt"]) for q in p["requests"])
        output_tokens = sum(q["output_len"] for q in p["requests"])
        assert h["prompt_tokens"] == d["prompt_tokens"] == prompt_tokens
        assert h["output_tokens"] == d["output_tokens"] == output_tokens
        assert d["max_schedule_lag_ms"] >= 0.0 and h["max_schedule_lag_ms"] >= 0.0

    cmp = subprocess.run([sys.executable, str(ROOT / "bench" / "serve_bench.py"), "--compare", str(direct_json),
                          "--from-json", str(http_json)], check=True, timeout=60, capture_output=True, text=True)
    assert "HTTP adds at most" in cmp.stdout


def test_plan_file_errors_are_clear(anvil_bin, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"rates": [{"request_rate": "1", "requests": [
        {"arrival_s": 0.0, "prompt": [1, 99999], "output_len": 4}]}]}))
    out = subprocess.run([anvil_bin, "bench", "--workload", "serving", *STORIES_MODEL, "--plan-file", str(bad)],
                         timeout=60, capture_output=True, text=True, cwd=ROOT)
    assert out.returncode != 0
    assert "token id out of range" in out.stderr
    bad.write_text("{not json")
    out = subprocess.run([anvil_bin, "bench", "--workload", "serving", *STORIES_MODEL, "--plan-file", str(bad)],
                         timeout=60, capture_output=True, text=True, cwd=ROOT)
    assert out.returncode != 0
    assert "plan file" in out.stderr

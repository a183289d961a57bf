"""`anvil generate --prompts-file` (one in-flight batch, one JSON line per prompt in input order) and the batch
benchmark modes (W3 throughput, W4 latency by batch size, W5 serving) on a tiny dummy config."""
import json

import pytest

from conftest import DATA, STORIES
from test_cli import assert_clean_error

# NOTE: one thread: many short runs, and outputs do not depend on the thread count.
STORIES_ARGS = ["--model", STORIES / "stories260K.bin", "--tokenizer", STORIES / "tok512.bin", "--threads", "1"]

PROMPTS = ["Once upon a time", "", "The little dog", "Lily and Tom went to the park. They", "Once upon a time there"]


def write_prompts(tmp_path, prompts=PROMPTS):
    path = tmp_path / "prompts.txt"
    path.write_text("\n".join(prompts) + "\n")
    return path


def run_batch(run, tmp_path, *extra):
    proc = run("generate", *STORIES_ARGS, "--prompts-file", write_prompts(tmp_path), "--temperature", "0",
               "--max-tokens", "24", "-q", *extra)
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(l) for l in proc.stdout.splitlines()]
    assert [l["index"] for l in lines] == list(range(len(PROMPTS)))
    for l in lines:
        assert set(l) >= {"index", "text", "token_ids", "finish_reason"}
        assert l["finish_reason"] in ("stop", "length")
    return lines


def test_prompts_file_gives_each_prompt_what_it_gets_alone(run, tmp_path):
    lines = run_batch(run, tmp_path)
    for prompt, line in zip(PROMPTS, lines):
        alone = run("generate", *STORIES_ARGS, "--prompt", prompt, "--temperature", "0", "--max-tokens", "24", "-q")
        assert alone.returncode == 0, alone.stderr
        assert alone.stdout.rstrip("\n") == line["text"], prompt
        assert 0 < len(line["token_ids"]) <= 24


def test_prompts_file_is_unchanged_by_chunking_preemption_swap_and_prefix_reuse(run, tmp_path):
    reference = run_batch(run, tmp_path)
    for flags in (["--max-num-batched-tokens", "5", "--max-num-seqs", "2"],
                  ["--block-size", "4", "--num-kv-blocks", "12"],
                  ["--block-size", "4", "--num-kv-blocks", "12", "--swap-space", "0.001"],
                  ["--no-prefix-caching"]):
        assert run_batch(run, tmp_path, *flags) == reference, flags


def test_prompts_file_with_samples_and_seed(run, tmp_path):
    args = ["generate", *STORIES_ARGS, "--prompts-file", write_prompts(tmp_path, PROMPTS[:2]), "--temperature", "1.0",
            "--seed", "11", "--num-samples", "3", "--max-tokens", "12", "-q"]
    a = run(*args)
    b = run(*args, "--block-size", "4", "--num-kv-blocks", "12")
    assert a.returncode == 0 and b.returncode == 0, (a.stderr, b.stderr)
    assert a.stdout == b.stdout
    for line in map(json.loads, a.stdout.splitlines()):
        assert len(line["samples"]) == 3
        assert line["samples"][0]["token_ids"] == line["token_ids"]
        assert len({tuple(s["token_ids"]) for s in line["samples"]}) > 1


def test_prompts_file_bad_input(run, tmp_path):
    assert_clean_error(run("generate", *STORIES_ARGS, "--prompts-file", tmp_path / "missing.txt"), "missing.txt")
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    assert_clean_error(run("generate", *STORIES_ARGS, "--prompts-file", empty), "empty.txt", "no prompts")
    long_line = write_prompts(tmp_path, ["fine", "Once upon a time " * 20])
    assert_clean_error(run("generate", *STORIES_ARGS, "--max-model-len", "32", "--prompts-file", long_line),
                       "line 2", "prompt")
    tiny_pool = run("generate", *STORIES_ARGS, "--block-size", "4", "--num-kv-blocks", "2", "--max-tokens", "20",
                    "--prompts-file", write_prompts(tmp_path, ["Once upon a time"]))
    assert_clean_error(tiny_pool, "line 1", "KV cache")
    both = run("generate", *STORIES_ARGS, "--prompt", "x", "--prompts-file", long_line)
    assert both.returncode != 0 and "excludes" in both.stderr
    neither = run("generate", *STORIES_ARGS)
    assert neither.returncode != 0 and "--prompts-file" in neither.stderr
    assert run("generate", *STORIES_ARGS, "--prompt", "x", "--swap-space", "-1").returncode != 0
    assert run("generate", *STORIES_ARGS, "--prompt", "x", "--max-num-seqs", "0").returncode != 0


@pytest.fixture
def tiny_dummy(tmp_path):
    cfg = json.loads((DATA / "hf" / "llama3_gqa" / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    return ["--model", tmp_path, "--load-format", "dummy", "--threads", "1", "-q"]


@pytest.mark.parametrize("workload", ["throughput", "latency"])
def test_bench_batch_workloads_on_dummy_weights(run, tmp_path, tiny_dummy, workload):
    out = tmp_path / f"{workload}.json"
    proc = run("bench", *tiny_dummy, "--workload", workload, "--batch-sizes", "1,4", "--prompt-tokens", "12",
               "--gen-tokens", "6", "--json", out)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    assert result["workload"] == ("W3" if workload == "throughput" else "W4")
    assert [r["batch_size"] for r in result["runs"]] == [1, 4]
    for r in result["runs"]:
        assert r["output_tokens"] == 6 * r["batch_size"]
        assert r["output_tok_per_s"] > 0 and r["median_decode_step_ms"] > 0
        assert r["num_decode_steps_measured"] >= 4


def test_bench_serving_on_dummy_weights(run, tmp_path, tiny_dummy):
    out = tmp_path / "serving.json"
    proc = run("bench", *tiny_dummy, "--workload", "serving", "--request-rates", "100,inf", "--num-requests", "10",
               "--input-len-mean", "20", "--output-len-mean", "6", "--seed", "3", "--json", out)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    assert result["workload"] == "W5"
    assert [r["request_rate"] for r in result["results"]] == ["100", "inf"]
    for r in result["results"]:
        assert r["num_completed"] == 10 and r["num_failed"] == 0
        assert r["output_tok_per_s"] > 0 and r["request_throughput"] > 0
        for key in ("ttft_ms", "tpot_ms", "e2e_latency_ms"):
            assert 0 < r[key]["p50"] <= r[key]["p95"] <= r[key]["p99"]
        assert r["ttft_ms"]["p50"] <= r["e2e_latency_ms"]["p50"]


def test_bench_serving_bad_rate(run, tiny_dummy):
    assert_clean_error(run("bench", *tiny_dummy, "--workload", "serving", "--request-rates", "fast"), "fast")


def test_bench_prefix_reuse_on_dummy_weights(run, tmp_path, tiny_dummy):
    out = tmp_path / "prefix.json"
    proc = run("bench", *tiny_dummy, "--workload", "prefix", "--prompt-tokens", "160", "--repeats", "2", "--json", out)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    assert result["prefix_tokens"] == 160 and len(result["ttft_cold_seconds_runs"]) == 2
    assert result["ttft_cold_ms"] > 0 and result["ttft_shared_prefix_ms"] > 0

"""The `anvil` CLI end to end: generation, perplexity, and every bad input giving a one-line error."""
import json
import os
import pathlib
import signal
import subprocess
import time
import shutil

import pytest

from conftest import DATA, STORIES

STORIES_ARGS = ["--model", STORIES / "stories260K.bin", "--tokenizer", STORIES / "tok512.bin", "--threads", "2"]


def assert_clean_error(proc, *needles):
    """A non-zero exit (not a signal), and exactly one line on stderr starting with 'error:', naming the problem
    (log lines such as the model-load message may come before it)."""
    assert proc.returncode > 0, proc
    errors = [l for l in proc.stderr.splitlines() if l.startswith("error:")]
    assert len(errors) == 1, proc.stderr
    assert proc.stderr.rstrip().splitlines()[-1] == errors[0], proc.stderr
    for n in needles:
        assert n in errors[0], (n, errors[0])


def test_greedy_story_matches_hf_reference(run):
    ref = json.loads((DATA / "stories260K_reference.json").read_text())
    proc = run("generate", *STORIES_ARGS, "--prompt", "", "--temperature", "0", "--max-tokens", "64", "--ignore-eos", "-q")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("Once upon a time, there was a little girl named Lily.")
    assert "tok/s" in proc.stderr and "decode" in proc.stderr


@pytest.mark.parametrize("executor", ["processes", "threads"])
@pytest.mark.parametrize("layout", [["--tensor-parallel-size", "2"], ["--pipeline-parallel-size", "2"],
                                    ["--tensor-parallel-size", "2", "--pipeline-parallel-size", "2"]])
def test_parallel_generate_matches_the_single_rank_text(run, layout, executor):
    args = ["generate", *STORIES_ARGS, "--prompt", "Once upon a time", "--temperature", "0", "--max-tokens", "48",
            "--ignore-eos", "-q"]
    single = run(*args)
    parallel = run(*args, *layout, "--distributed-executor", executor)
    assert single.returncode == 0 and parallel.returncode == 0, parallel.stderr
    assert parallel.stdout == single.stdout
    assert len(single.stdout) > 40


def test_parallel_size_that_does_not_divide_is_a_clean_error(run):
    assert_clean_error(run("generate", *STORIES_ARGS, "--prompt", "x", "--tensor-parallel-size", "3"),
                       "does not divide", "num_attention_heads")


def test_same_seed_same_text_and_different_seed_differs(run):
    args = ["generate", *STORIES_ARGS, "--prompt", "Once upon a time", "--temperature", "1.0", "--top-p", "0.95",
            "--max-tokens", "40", "-q"]
    a = run(*args, "--seed", "7")
    b = run(*args, "--seed", "7")
    c = run(*args, "--seed", "8")
    assert a.returncode == 0 and b.returncode == 0 and c.returncode == 0
    assert a.stdout == b.stdout
    assert a.stdout != c.stdout


def test_stop_string_cuts_the_output(run):
    proc = run("generate", *STORIES_ARGS, "--prompt", "Once upon a time", "--temperature", "0", "--max-tokens", "60",
               "--stop", "Lily", "-q")
    assert proc.returncode == 0
    assert proc.stdout.strip() == ", there was a little girl named"
    assert "finish: stop" in proc.stderr


def test_perplexity_prints_counts_and_value(run, tmp_path):
    text = tmp_path / "t.txt"
    text.write_text("Once upon a time, there was a little girl named Lily. She loved to play outside.")
    proc = run("perplexity", *STORIES_ARGS, "--file", text, "-q")
    assert proc.returncode == 0, proc.stderr
    fields = dict(line.split(": ") for line in proc.stdout.strip().splitlines())
    assert int(fields["scored"]) == int(fields["tokens"]) - 1 > 10
    assert 1.0 < float(fields["perplexity"]) < 20.0


def test_bench_runs_on_dummy_weights(run, tmp_path):
    cfg = json.loads((DATA / "hf" / "llama3_gqa" / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    out = tmp_path / "bench.json"
    proc = run("bench", "--model", tmp_path, "--load-format", "dummy", "--prompt-tokens", "16", "--gen-tokens", "8",
               "--repeats", "1", "--json", out, "-q")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    assert result["decode_tok_per_s"] > 0 and result["prompt_tok_per_s"] > 0


# ---- bad input ---------------------------------------------------------------------------------------------

def test_missing_model_path(run):
    assert_clean_error(run("generate", "--model", "/nonexistent/model.bin", "--prompt", "x"), "/nonexistent/model.bin")


def test_directory_without_config(run, tmp_path):
    assert_clean_error(run("generate", "--model", tmp_path, "--prompt", "x"), "config.json")


def test_unknown_architecture(run, tmp_path):
    cfg = json.loads((DATA / "hf" / "llama_mha" / "config.json").read_text())
    cfg["architectures"] = ["FooForCausalLM"]
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    shutil.copy(DATA / "hf" / "llama_mha" / "model.safetensors", tmp_path)
    assert_clean_error(run("generate", "--model", tmp_path, "--prompt", "x"), "FooForCausalLM")


def test_truncated_safetensors(run, tmp_path):
    shutil.copy(DATA / "hf" / "llama_mha" / "config.json", tmp_path)
    data = (DATA / "hf" / "llama_mha" / "model.safetensors").read_bytes()
    (tmp_path / "model.safetensors").write_bytes(data[: len(data) // 2])
    assert_clean_error(run("generate", "--model", tmp_path, "--prompt", "x"), "model.safetensors")


def test_lying_safetensors_header_length(run, tmp_path):
    shutil.copy(DATA / "hf" / "llama_mha" / "config.json", tmp_path)
    data = bytearray((DATA / "hf" / "llama_mha" / "model.safetensors").read_bytes())
    data[0:8] = (10**12).to_bytes(8, "little")
    (tmp_path / "model.safetensors").write_bytes(bytes(data))
    assert_clean_error(run("generate", "--model", tmp_path, "--prompt", "x"), "model.safetensors")


def test_tensor_of_wrong_shape(run, tmp_path):
    cfg = json.loads((DATA / "hf" / "llama_mha" / "config.json").read_text())
    cfg["intermediate_size"] = 128  # the file holds 96
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    shutil.copy(DATA / "hf" / "llama_mha" / "model.safetensors", tmp_path)
    assert_clean_error(run("generate", "--model", tmp_path, "--prompt", "x"), "mlp", "shape")


def test_truncated_llama2c_checkpoint(run, tmp_path):
    data = (STORIES / "stories260K.bin").read_bytes()
    (tmp_path / "m.bin").write_bytes(data[:100000])
    assert_clean_error(run("generate", "--model", tmp_path / "m.bin", "--tokenizer", STORIES / "tok512.bin",
                           "--prompt", "x"), "m.bin")


def test_corrupt_tokenizer(run, tmp_path):
    data = (STORIES / "tok512.bin").read_bytes()
    (tmp_path / "tok.bin").write_bytes(data[:3000])
    assert_clean_error(run("generate", "--model", STORIES / "stories260K.bin", "--tokenizer", tmp_path / "tok.bin",
                           "--prompt", "x"), "tok.bin")


def test_prompt_longer_than_context(run):
    assert_clean_error(run("generate", *STORIES_ARGS, "--max-model-len", "16", "--prompt", "Once upon a time " * 10),
                       "prompt", "16")


@pytest.mark.parametrize("value", ["0", "-3"])
def test_max_tokens_not_positive(run, value):
    assert_clean_error(run("generate", *STORIES_ARGS, "--prompt", "x", "--max-tokens", value), "max_tokens")


def test_negative_temperature(run):
    assert_clean_error(run("generate", *STORIES_ARGS, "--prompt", "x", "--temperature", "-1"), "temperature")


def test_unknown_flag_is_an_error(run):
    proc = run("generate", "--model", "x", "--prompt", "y", "--no-such-flag")
    assert proc.returncode != 0 and "no-such-flag" in proc.stderr


@pytest.mark.parametrize("dtype", ["fp8", "int8"])
def test_quantized_kv_cache_generates_a_story_and_says_its_dtype(run, dtype):
    proc = run("generate", *STORIES_ARGS, "--prompt", "Once upon a time", "--temperature", "0", "--max-tokens", "16",
               "--max-model-len", "256", "--kv-cache-dtype", dtype)
    assert proc.returncode == 0, proc.stderr
    # The completion alone goes to stdout; both caches keep the fp32 cache's first 16 greedy tokens here.
    assert proc.stdout.startswith(", there was a little girl named Lily"), proc.stdout
    assert ("(float8_e4m3)" if dtype == "fp8" else "(int8)") in proc.stderr, proc.stderr


def test_unknown_kv_cache_dtype_is_a_clean_error(run):
    proc = run("generate", *STORIES_ARGS, "--prompt", "y", "--kv-cache-dtype", "fp4")
    assert_clean_error(proc, "--kv-cache-dtype", "fp4")


# ---- chat and GGUF ---------------------------------------------------------------------------------------

SMOLLM2 = __import__("pathlib").Path.home() / ".cache" / "anvil" / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
needs_smollm2 = pytest.mark.skipif(not SMOLLM2.exists(), reason="demo model not fetched (scripts/fetch_model.sh)")


def run_chat(anvil_bin, args, stdin, timeout=300):
    import subprocess
    return subprocess.run([anvil_bin, "chat", *map(str, args)], input=stdin, capture_output=True, text=True,
                          timeout=timeout)


@needs_smollm2
def test_chat_with_the_demo_model_answers_over_two_turns(anvil_bin):
    proc = run_chat(anvil_bin, ["--model", SMOLLM2, "--temperature", "0", "--max-tokens", "30", "--threads", "2", "-q"],
                    "What is the capital of France?\nAnd of Italy?\n")
    assert proc.returncode == 0, proc.stderr
    replies = proc.stdout.strip().splitlines()
    assert "Paris" in replies[0]
    assert "Rome" in replies[-1]  # the second turn sees the first through the template


@needs_smollm2
def test_generate_on_a_gguf_path(run):
    proc = run("generate", "--model", SMOLLM2, "--prompt", "The capital of France is", "--temperature", "0",
               "--max-tokens", "8", "--threads", "2", "-q")
    assert proc.returncode == 0, proc.stderr
    assert "Paris" in proc.stdout


def test_chat_with_a_template_file_and_a_bad_template(anvil_bin, tmp_path):
    template = DATA / "chat_templates" / "smollm2.jinja"
    ok = run_chat(anvil_bin, [*STORIES_ARGS, "--chat-template", template, "--temperature", "0", "--max-tokens", "10",
                              "-q"], "Tell me a story\n")
    assert ok.returncode == 0, ok.stderr
    assert len(ok.stdout.strip()) > 0
    bad = tmp_path / "bad.jinja"
    bad.write_text("{% include 'x.jinja' %}")
    proc = run_chat(anvil_bin, [*STORIES_ARGS, "--chat-template", bad, "-q"], "hi\n")
    assert_clean_error(proc, "include")


def test_chat_without_a_template_is_a_clear_error(anvil_bin):
    proc = run_chat(anvil_bin, [*STORIES_ARGS, "-q"], "hi\n")
    assert_clean_error(proc, "chat template")


def _children(pid):
    out = []
    for entry in pathlib.Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()
        if int(fields[1]) == pid and fields[0] != "Z":
            out.append(int(entry.name))
    return out


def test_killing_a_worker_process_ends_the_group_with_an_error(anvil_bin, tmp_path):
    # Many prompts x long outputs keep the two ranks busy for far longer than the test waits.
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(["Once upon a time"] * 16) + "\n")
    proc = subprocess.Popen([anvil_bin, "generate", *map(str, STORIES_ARGS), "--prompts-file", str(prompts),
                             "--max-tokens", "400", "--ignore-eos", "--num-samples", "4", "--max-num-seqs", "64",
                             "--tensor-parallel-size", "2", "-q"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 20
    workers = []
    while not workers and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
        workers = _children(proc.pid)
    assert workers, "no worker process started"
    time.sleep(1.0)
    assert proc.poll() is None, proc.communicate()
    os.kill(workers[0], signal.SIGKILL)
    t0 = time.monotonic()
    _, err = proc.communicate(timeout=20)
    assert time.monotonic() - t0 < 10
    assert proc.returncode != 0
    assert "rank 1" in err and "killed by signal 9" in err, err

"""What a newcomer meets first: `anvil --version`, the KV-cache size the engine chose and why, and damaged weights
(NaN/Inf, which llama2.c files carry no checksum against) refused with the tensor's name instead of printing
garbage."""
import json
import math
import re
import shutil
import struct

from conftest import DATA, STORIES
from test_cli import STORIES_ARGS, assert_clean_error


def test_version_names_version_commit_and_backends(run):
    proc = run("--version")
    assert proc.returncode == 0, proc.stderr
    first, second = proc.stdout.strip().splitlines()
    assert re.fullmatch(r"anvil \d+\.\d+\.\d+ \(commit ([0-9a-f]{12}(-dirty)?|unknown)\)", first), first
    assert re.fullmatch(r"backends: cpu(, cuda \(sm_\w+(, sm_\w+)*\))?", second), second


def test_one_prompt_sizes_the_cpu_kv_cache_for_one_sequence(run):
    proc = run("generate", *STORIES_ARGS, "--prompt", "Once upon a time", "--temperature", "0", "--max-tokens", "8",
               "--max-model-len", "256")
    assert proc.returncode == 0, proc.stderr
    m = re.search(r"KV cache (\d+) blocks = [\d.]+ MiB, ([\d.]+) sequences of 256 tokens", proc.stderr)
    assert m, proc.stderr
    assert int(m.group(1)) == 16 and float(m.group(2)) == 1.0, m.group(0)


def test_kv_cache_follows_max_num_seqs(run, tmp_path):
    prompts = tmp_path / "p.txt"
    prompts.write_text("Once upon a time\nThe cat\n")
    proc = run("generate", *STORIES_ARGS, "--prompts-file", prompts, "--temperature", "0", "--max-tokens", "4",
               "--max-model-len", "128", "--max-num-seqs", "6")
    assert proc.returncode == 0, proc.stderr
    m = re.search(r"KV cache (\d+) blocks = [\d.]+ MiB, ([\d.]+) sequences of 128 tokens \(room for every", proc.stderr)
    assert m and int(m.group(1)) == 6 * 8, proc.stderr


def damaged_llama2c(tmp_path, float_index, value):
    """stories260K with one float of its weights (counted after the 7-int header) replaced by `value`."""
    src = STORIES / "stories260K.bin"
    dst = tmp_path / "damaged.bin"
    shutil.copy(src, dst)
    with open(dst, "r+b") as f:
        f.seek(28 + 4 * float_index)
        f.write(struct.pack("<f", value))
    return dst


def llama2c_dims():
    with open(STORIES / "stories260K.bin", "rb") as f:
        return struct.unpack("<7i", f.read(28))  # dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab, seq_len


def test_nan_in_a_llama2c_embedding_names_the_tensor_and_element(run, tmp_path):
    dim = llama2c_dims()[0]
    bad = damaged_llama2c(tmp_path, 3 * dim + 5, math.nan)
    args = ["generate", "--model", bad, "--tokenizer", STORIES / "tok512.bin", "--prompt", "Once", "--max-tokens", "4"]
    proc = run(*args)
    assert_clean_error(proc, "model.embed_tokens.weight", "NaN", f"element {3 * dim + 5} (row 3, column 5)",
                       "damaged.bin", "--skip-weight-check")
    skipped = run(*args, "--skip-weight-check", "-q")
    assert skipped.returncode == 0, skipped.stderr


def test_inf_in_a_llama2c_layer_weight_is_refused(run, tmp_path):
    dim, hidden, layers, heads, kv_heads, vocab, _ = llama2c_dims()
    # After the embedding [vocab, dim] come rms_att [layers, dim], then wq [layers, dim, dim]: layer 1's wq, row 2.
    index = abs(vocab) * dim + layers * dim + dim * dim + 2 * dim + 7
    bad = damaged_llama2c(tmp_path, index, -math.inf)
    proc = run("generate", "--model", bad, "--tokenizer", STORIES / "tok512.bin", "--prompt", "Once")
    assert_clean_error(proc, "model.layers.1.self_attn.q_proj.weight", "-Inf", "(row 2, column 7)")


def test_inf_in_a_safetensors_checkpoint_is_refused(run, tmp_path):
    ckpt = tmp_path / "ckpt"
    shutil.copytree(DATA / "hf" / "llama_mha", ckpt)
    path = ckpt / "model.safetensors"
    blob = bytearray(path.read_bytes())
    n = struct.unpack("<Q", blob[:8])[0]
    header = json.loads(blob[8:8 + n])
    name = "model.layers.0.mlp.down_proj.weight"
    info = header[name]
    assert info["dtype"] == "F32"
    start = 8 + n + info["data_offsets"][0]
    blob[start + 4 * 9:start + 4 * 10] = struct.pack("<f", math.inf)
    path.write_bytes(bytes(blob))
    proc = run("generate", "--model", ckpt, "--prompt", "hi", "--max-tokens", "2")
    assert_clean_error(proc, name, "+Inf", "element 9")

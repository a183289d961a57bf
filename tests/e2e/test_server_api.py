"""`anvil serve` through the official `openai` client on stories260K (CPU): both endpoints streaming and not, n,
stop strings, seeds, logprobs, usage, echo, token-id and batched prompts, the model list, health, metrics, and
the results checked against `anvil generate` and against each other."""
import json
import math

import httpx
import pytest

from test_server_common import CHAT_TEMPLATE, STORIES_MODEL, Server, assert_api_error


@pytest.fixture(scope="module")
def server(anvil_bin, tmp_path_factory):
    s = Server(anvil_bin, [*STORIES_MODEL, "--chat-template", CHAT_TEMPLATE],
               tmp_path_factory.mktemp("srv") / "server.log")
    yield s
    assert s.terminate() == 0, s.log_text()


@pytest.fixture(scope="module")
def client(server):
    return server.client()


MODEL = "stories260K.bin"


def greedy(client, prompt, max_tokens=24, **kw):
    return client.completions.create(model=MODEL, prompt=prompt, max_tokens=max_tokens, temperature=0, **kw)


def test_completion_matches_anvil_generate(client, run):
    out = greedy(client, "Once upon a time", max_tokens=30)
    proc = run("generate", *STORIES_MODEL, "--prompt", "Once upon a time", "--temperature", "0", "--max-tokens", "30",
               "--threads", "1", "-q")
    assert proc.returncode == 0, proc.stderr
    assert out.choices[0].text == proc.stdout.rstrip("\n")
    assert out.object == "text_completion" and out.id.startswith("cmpl-") and out.model == MODEL
    assert out.choices[0].finish_reason == "length"
    assert out.usage.completion_tokens == 30
    assert out.usage.prompt_tokens == 5  # BOS + 4 tokens
    assert out.usage.total_tokens == 35


def test_streamed_completion_equals_the_whole_one(client):
    whole = greedy(client, "The little dog", max_tokens=40)
    chunks = list(greedy(client, "The little dog", max_tokens=40, stream=True,
                         stream_options={"include_usage": True}))
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert text == whole.choices[0].text
    assert all(c.object == "text_completion" for c in chunks)
    assert len({c.id for c in chunks}) == 1
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "length" and all(f is None for f in finishes[:-1])
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 40
    assert chunks[-1].usage.prompt_tokens == whole.usage.prompt_tokens
    assert all(c.usage is None for c in chunks[:-1])


def test_stream_without_include_usage_has_no_usage_chunk(client):
    chunks = list(greedy(client, "Once", max_tokens=8, stream=True))
    assert all(c.choices for c in chunks)
    assert all(getattr(c, "usage", None) is None for c in chunks)


def test_sse_framing_ends_with_done(server):
    with server.http() as h, h.stream("POST", "/v1/completions", json={
            "prompt": "Once", "max_tokens": 5, "temperature": 0, "stream": True}) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        lines = [l for l in r.iter_lines() if l]
    assert lines[-1] == "data: [DONE]"
    assert all(l.startswith("data: ") for l in lines)
    for l in lines[:-1]:
        json.loads(l[len("data: "):])


def test_chat_uses_the_template_and_streams_the_same(client, server):
    messages = [{"role": "system", "content": "You tell stories."}, {"role": "user", "content": "A story please"}]
    whole = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=30, temperature=0)
    assert whole.object == "chat.completion" and whole.id.startswith("chatcmpl-")
    msg = whole.choices[0].message
    assert msg.role == "assistant" and msg.content
    # The prompt is the template's rendering: "<s>[INST] <<SYS>>\n...\n<</SYS>>\n\nA story please [/INST]".
    rendered = "[INST] <<SYS>>\nYou tell stories.\n<</SYS>>\n\nA story please [/INST]"
    direct = greedy(client, rendered, max_tokens=30)
    assert direct.choices[0].text == msg.content
    assert whole.usage.prompt_tokens == direct.usage.prompt_tokens
    chunks = list(client.chat.completions.create(model=MODEL, messages=messages, max_tokens=30, temperature=0,
                                                 stream=True, stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == msg.content
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].usage.completion_tokens == 30


def test_chat_max_completion_tokens_and_default_length(client):
    messages = [{"role": "user", "content": "Hi"}]
    out = client.chat.completions.create(model=MODEL, messages=messages, max_completion_tokens=7, temperature=0,
                                         extra_body={"ignore_eos": True})
    assert out.usage.completion_tokens == 7 and out.choices[0].finish_reason == "length"
    # Without a limit chat may run to the end of the context (512): ignore_eos makes it do so.
    out = client.chat.completions.create(model=MODEL, messages=messages, temperature=0,
                                         extra_body={"ignore_eos": True})
    assert out.usage.prompt_tokens + out.usage.completion_tokens == 512
    assert out.choices[0].finish_reason == "length"


def test_n_2_gives_two_reproducible_samples(client):
    kw = dict(model=MODEL, prompt="Once upon a time", max_tokens=20, temperature=1.0, n=2, seed=1234,
              extra_body={"ignore_eos": True})
    a = client.completions.create(**kw)
    b = client.completions.create(**kw)
    assert [c.index for c in a.choices] == [0, 1]
    assert [c.text for c in a.choices] == [c.text for c in b.choices]
    assert a.choices[0].text != a.choices[1].text
    assert a.usage.completion_tokens == 40 and a.usage.prompt_tokens == 5
    streamed = list(client.completions.create(**kw, stream=True))
    for i in range(2):
        assert "".join(c.choices[0].text for c in streamed if c.choices[0].index == i) == a.choices[i].text
    chat = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Hi"}], n=2,
                                          max_tokens=10, temperature=1.0, seed=5)
    assert [c.index for c in chat.choices] == [0, 1]


def test_seed_reproducible_and_seeds_differ(client):
    kw = dict(model=MODEL, prompt="Lily and Tom", max_tokens=30, temperature=1.0, top_p=0.95)
    a = client.completions.create(**kw, seed=7).choices[0].text
    b = client.completions.create(**kw, seed=7).choices[0].text
    c = client.completions.create(**kw, seed=8).choices[0].text
    assert a == b
    assert a != c


def test_sampling_fields_are_honoured(client):
    base = greedy(client, "Once upon a time", max_tokens=30).choices[0].text
    # top_k=1 is greedy whatever the temperature.
    k1 = client.completions.create(model=MODEL, prompt="Once upon a time", max_tokens=30, temperature=1.5,
                                   seed=3, extra_body={"top_k": 1})
    assert k1.choices[0].text == base
    # A strong repetition penalty changes the greedy text (the story repeats words).
    rp = greedy(client, "Once upon a time", max_tokens=30, extra_body={"repetition_penalty": 2.0})
    assert rp.choices[0].text != base
    fp = greedy(client, "Once upon a time", max_tokens=30, frequency_penalty=2.0)
    assert fp.choices[0].text != base
    mp = client.completions.create(model=MODEL, prompt="Once upon a time", max_tokens=30, temperature=1.0, seed=3,
                                   extra_body={"min_p": 1.0})
    assert mp.choices[0].text == base  # min_p = 1 keeps only the most likely token


def test_stop_strings(client):
    base = greedy(client, "Once upon a time", max_tokens=40).choices[0].text
    assert "Lily" in base
    out = greedy(client, "Once upon a time", max_tokens=40, stop="Lily")
    assert out.choices[0].text == base[:base.index("Lily")]
    assert out.choices[0].finish_reason == "stop"
    out = greedy(client, "Once upon a time", max_tokens=40, stop=["zzz", "girl", "Lily"])
    assert out.choices[0].text == base[:base.index("girl")]
    chunks = list(greedy(client, "Once upon a time", max_tokens=40, stop=["girl"], stream=True))
    assert "".join(c.choices[0].text for c in chunks) == base[:base.index("girl")]
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_completion_logprobs(client):
    out = greedy(client, "Once upon a time", max_tokens=12, logprobs=3)
    lp = out.choices[0].logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == len(lp.text_offset) == 12
    assert "".join(lp.tokens) == out.choices[0].text
    assert lp.text_offset[0] == 0
    assert all(b - a == len(t) for a, b, t in zip(lp.text_offset, lp.text_offset[1:], lp.tokens))
    for tok, tok_lp, top in zip(lp.tokens, lp.token_logprobs, lp.top_logprobs):
        assert 3 <= len(top) <= 4 and tok in top
        assert tok_lp <= 0.0
        # Greedy: the chosen token is the most likely one.
        assert math.isclose(tok_lp, max(top.values()), rel_tol=1e-5, abs_tol=1e-6)
    streamed = list(greedy(client, "Once upon a time", max_tokens=12, logprobs=3, stream=True))
    assert [t for c in streamed for t in (c.choices[0].logprobs.tokens if c.choices[0].logprobs else [])] == lp.tokens


def test_chat_logprobs(client):
    out = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Hi"}], max_tokens=8,
                                         temperature=0, logprobs=True, top_logprobs=2)
    content = out.choices[0].logprobs.content
    assert len(content) == out.usage.completion_tokens
    assert "".join(e.token for e in content) == out.choices[0].message.content
    for e in content:
        assert len(e.top_logprobs) == 2
        assert bytes(e.bytes).decode("utf-8") == e.token
        assert math.isclose(e.logprob, e.top_logprobs[0].logprob, rel_tol=1e-5, abs_tol=1e-6)
    plain = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Hi"}], max_tokens=8,
                                           temperature=0)
    assert plain.choices[0].logprobs is None


def test_echo_token_ids_and_batched_prompts(client):
    base = greedy(client, "Once upon a time", max_tokens=10)
    echo = greedy(client, "Once upon a time", max_tokens=10, echo=True)
    assert echo.choices[0].text == "Once upon a time" + base.choices[0].text
    # The empty prompt is BOS alone (id 1): as token ids it gives the same story.
    ids = greedy(client, [1], max_tokens=10)
    assert ids.usage.prompt_tokens == 1
    assert ids.choices[0].text == greedy(client, "", max_tokens=10).choices[0].text
    assert ids.choices[0].text.startswith("Once upon a time")
    batch = greedy(client, ["Once upon a time", "The little dog"], max_tokens=10)
    assert [c.index for c in batch.choices] == [0, 1]
    assert batch.choices[0].text == base.choices[0].text
    assert batch.choices[1].text == greedy(client, "The little dog", max_tokens=10).choices[0].text
    assert batch.usage.completion_tokens == 20


def test_models_health_metrics(server, client):
    models = client.models.list()
    assert [m.id for m in models.data] == [MODEL]
    assert client.models.retrieve(MODEL).id == MODEL
    with server.http() as h:
        assert h.get("/health").status_code == 200
        assert h.get("/v1/models/nope").status_code == 404
    greedy(client, "Once", max_tokens=4)
    m = server.metrics()
    for name in ("anvil:num_requests_running", "anvil:num_requests_waiting", "anvil:kv_cache_usage_perc",
                 "anvil:prefix_cache_hit_rate", "anvil:prompt_tokens_total", "anvil:generation_tokens_total",
                 "anvil:time_to_first_token_seconds_count", "anvil:time_per_output_token_seconds_count",
                 "anvil:e2e_request_latency_seconds_count", "anvil:request_finished_total[length]"):
        assert name in m, name
    assert m["anvil:generation_tokens_total"] >= 4
    assert m["anvil:e2e_request_latency_seconds_count"] >= 1
    assert m["anvil:e2e_request_latency_seconds_bucket[+Inf]"] == m["anvil:e2e_request_latency_seconds_count"]
    assert m["anvil:kv_cache_usage_perc"] == 0.0 and m["anvil:num_requests_running"] == 0
    # The same prompt again hits the prefix cache.
    long_prompt = "Once upon a time there was a little girl named Lily who loved to play in the park with her dog"
    greedy(client, long_prompt, max_tokens=2)
    greedy(client, long_prompt, max_tokens=2)
    m2 = server.metrics()
    assert m2["anvil:prefix_cache_hits_total"] > m["anvil:prefix_cache_hits_total"]
    assert 0.0 < m2["anvil:prefix_cache_hit_rate"] <= 1.0

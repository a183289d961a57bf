"""`anvil serve` on the demo model (SmolLM2-135M-Instruct, Q4_1 GGUF, CPU) when it is in the cache: chat through the
model's own template and tokenizer (both read from the GGUF), streaming and not, and completions; skipped without
the model."""
import pytest

from test_server_common import Server, demo_model  # noqa: F401 (fixture)


@pytest.fixture(scope="module")
def server(anvil_bin, demo_model, tmp_path_factory):  # noqa: F811
    s = Server(anvil_bin, ["--model", demo_model, "--max-num-seqs", "8"],
               tmp_path_factory.mktemp("demo") / "server.log")
    try:
        assert "chat template from the model" in s.log_text()
        yield s
    finally:
        assert s.terminate() == 0, s.log_text()


def test_demo_serves_token_ids(server):
    with server.http() as h:
        r = h.post("/v1/completions", json={"prompt": [1, 504, 3458, 282, 4649], "max_tokens": 8, "temperature": 0,
                                            "ignore_eos": True, "logprobs": 2})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["usage"] == {"prompt_tokens": 5, "completion_tokens": 8, "total_tokens": 13}
        assert len(body["choices"][0]["logprobs"]["token_logprobs"]) == 8
        again = h.post("/v1/completions", json={"prompt": [1, 504, 3458, 282, 4649], "max_tokens": 8,
                                                "temperature": 0, "ignore_eos": True, "logprobs": 2}).json()
        assert again["choices"][0]["logprobs"]["token_logprobs"] == body["choices"][0]["logprobs"]["token_logprobs"]


MESSAGES = [{"role": "user", "content": "What is the capital of France?"}]


def test_demo_chat_with_its_own_template(server):
    client = server.client()
    model = client.models.list().data[0].id
    whole = client.chat.completions.create(model=model, messages=MESSAGES, max_tokens=24, temperature=0)
    reply = whole.choices[0].message.content
    assert reply == "The capital of France is Paris."
    assert whole.choices[0].finish_reason == "stop"  # the model's end of turn, <|im_end|>
    assert "<|im_start|>" not in reply and "<|im_end|>" not in reply
    assert whole.usage.prompt_tokens > 10  # the template's system prompt and turn markers are in
    again = client.chat.completions.create(model=model, messages=MESSAGES, max_tokens=24, temperature=0)
    assert again.choices[0].message.content == reply
    chunks = list(client.chat.completions.create(model=model, messages=MESSAGES, max_tokens=24, temperature=0,
                                                 stream=True, stream_options={"include_usage": True}))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == reply
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens


def test_demo_completions_and_n(server):
    client = server.client()
    model = client.models.list().data[0].id
    out = client.completions.create(model=model, prompt="The capital of France is", max_tokens=8, temperature=0,
                                    logprobs=2)
    assert out.choices[0].text.startswith(" Paris")
    assert "".join(out.choices[0].logprobs.tokens) == out.choices[0].text
    two = client.completions.create(model=model, prompt="Once upon a time", max_tokens=12, temperature=0.8,
                                    seed=4, n=2)
    assert len(two.choices) == 2 and all(c.text for c in two.choices)

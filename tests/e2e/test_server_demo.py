"""`anvil serve` on the demo model (SmolLM2-135M-Instruct, Q4_1 GGUF, CPU) when it is in the cache: chat through the
model's own template and tokenizer (both read from the GGUF), streaming and not, and completions, and memory that stays flat over rounds of 200 streaming clients; skipped
without the model."""
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


def rss_bytes(pid):
    status = open(f"/proc/{pid}/status").read()
    return int(next(l for l in status.splitlines() if l.startswith("VmRSS:")).split()[1]) * 1024


def test_demo_memory_is_flat_over_rounds_of_200_streams(anvil_bin, demo_model, tmp_path):  # noqa: F811
    """Three rounds of 200 concurrent streaming clients: RSS after the third stays within 10% of RSS after the first
    (nothing per request or per connection is kept), and every stream completes.

    NOTE: the demo's Q4_1 weights are not batch-invariant: steps of up to 8 tokens take 8-bit activations through
    the integer dot kernels, larger steps fp32 activations through dequantize + sgemm (cpu_quant_linear.cpp), so
    a stream decoded among 200 may take a near-tie the way its prompt alone does not. Identical greedy output under
    load is asserted for float weights below."""
    import asyncio

    from test_server_load import open_stream, parse_stream, read_stream
    prompts = [[1, 504, 3458 + i] for i in range(5)]
    # NOTE: the KV cache is allocated at start but its pages are touched lazily, and the block pool hands out
    # blocks no request has used yet before reusing freed ones: with the default cache (2,912 blocks here) RSS grew
    # 47 MiB a round over 6 rounds (measured), until every block has been used once. That is not a leak, so the
    # cache is sized to what one round holds (200 one-block requests): the first round touches every page, and any
    # later growth is real (measured: 1010, 1018, 1018 MiB).
    s = Server(anvil_bin, ["--model", demo_model, "--max-num-seqs", "200", "--num-kv-blocks", "200"],
               tmp_path / "server.log")
    try:
        async def one(i):
            reader, writer = await open_stream(s.port, {"prompt": prompts[i % 5], "max_tokens": 2, "temperature": 0,
                                                        "ignore_eos": True})
            return parse_stream(await read_stream(reader, writer))

        async def round_of(n):
            return await asyncio.gather(*(one(i) for i in range(n)))

        rss = []
        for _ in range(3):
            results = asyncio.run(round_of(200))
            for i, (status, events, done, complete) in enumerate(results):
                assert status == 200 and done and complete, (i, status, events)
                assert len("".join(e["choices"][0]["text"] for e in events)) > 0, i
                assert events[-1]["choices"][0]["finish_reason"] == "length"
            s.wait_metric("anvil:num_requests_running", lambda v: v == 0)
            rss.append(rss_bytes(s.proc.pid))
        assert rss[2] <= rss[0] * 1.10, [r >> 20 for r in rss]
    finally:
        assert s.terminate() == 0, s.log_text()


def test_float_weights_give_identical_greedy_output_under_load(anvil_bin, tmp_path):
    """200 concurrent greedy streams on stories260K (fp32 weights): each gets exactly the text its prompt gets alone."""
    import asyncio

    from conftest import STORIES
    from test_server_load import open_stream, parse_stream, read_stream
    s = Server(anvil_bin, ["--model", STORIES / "stories260K.bin", "--tokenizer", STORIES / "tok512.bin",
                           "--max-num-seqs", "200"], tmp_path / "server.log")
    prompts = ["Once upon a time", "The cat", "Lily wanted", "One day, a big", "Tom and"]
    try:
        with s.http() as h:
            alone = [h.post("/v1/completions", json={"prompt": p, "max_tokens": 24, "temperature": 0,
                                                     "ignore_eos": True}).json()["choices"][0]["text"] for p in prompts]

        async def one(i):
            reader, writer = await open_stream(s.port, {"prompt": prompts[i % 5], "max_tokens": 24, "temperature": 0,
                                                        "ignore_eos": True})
            return parse_stream(await read_stream(reader, writer))

        async def run_all():
            return await asyncio.gather(*(one(i) for i in range(200)))

        for i, (status, events, done, complete) in enumerate(asyncio.run(run_all())):
            assert status == 200 and done and complete, (i, status, events)
            assert "".join(e["choices"][0]["text"] for e in events) == alone[i % 5], i
    finally:
        assert s.terminate() == 0, s.log_text()

"""anvil.AsyncLLM: concurrent requests equal the synchronous ones, output kinds, abort and cancellation (KV
blocks freed, checked through the engine's stats), chat."""
import asyncio

import pytest

import anvil
from conftest import STORIES_MODEL, STORIES_TOKENIZER

PROMPTS = ["Once upon a time", "The little dog", "Lily wanted to", "One day, a big", "Tom and Sue", "The sun was",
           "She saw a", "There was a boy"]
GREEDY = anvil.SamplingParams(temperature=0, max_tokens=40)


@pytest.fixture(scope="module")
def async_llm():
    llm = anvil.AsyncLLM(STORIES_MODEL, tokenizer=STORIES_TOKENIZER, max_num_seqs=8)
    yield llm
    llm.shutdown()


async def collect(llm, prompt, params, request_id=None):
    outs = [o async for o in llm.generate(prompt, params, request_id=request_id)]
    return outs


async def wait_idle(llm, timeout=10.0):
    """Until the engine runs nothing and every KV block is free (stats are as of the loop's last step)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        s = llm.get_stats()
        if s.num_running == 0 and s.num_waiting == 0 and s.num_free_kv_blocks == s.num_kv_blocks:
            return s
        assert asyncio.get_running_loop().time() < deadline, f"engine not idle: {s}"
        await asyncio.sleep(0.01)


def test_concurrent_requests_equal_sync(async_llm, stories):
    async def main():
        return await asyncio.gather(*(collect(async_llm, p, GREEDY, f"r{i}") for i, p in enumerate(PROMPTS)))

    results = asyncio.run(main())
    want = stories.generate(PROMPTS, GREEDY)
    for i, (outs, w) in enumerate(zip(results, want)):
        final = outs[-1]
        assert final.finished and final.request_id == f"r{i}"
        assert final.outputs[0].token_ids == w.outputs[0].token_ids
        assert final.outputs[0].text == w.outputs[0].text
        assert all(not o.finished for o in outs[:-1])
        # cumulative outputs grow
        assert all(outs[k].outputs[0].text == final.outputs[0].text[:len(outs[k].outputs[0].text)]
                   for k in range(len(outs)))


def test_delta_and_final_only(async_llm, stories):
    want = stories.generate("Once upon a time", GREEDY)[0].outputs[0]

    async def main():
        delta = await collect(async_llm, "Once upon a time",
                              anvil.SamplingParams(temperature=0, max_tokens=40, output_kind="delta"))
        final = await collect(async_llm, "Once upon a time",
                              anvil.SamplingParams(temperature=0, max_tokens=40, output_kind="final_only"))
        return delta, final

    delta, final = asyncio.run(main())
    assert len(delta) > 5
    assert "".join(o.outputs[0].text for o in delta) == want.text
    assert sum((o.outputs[0].token_ids for o in delta), []) == want.token_ids
    assert len(final) == 1 and final[0].outputs[0].text == want.text


def test_cancel_frees_the_request(async_llm):
    long = anvil.SamplingParams(temperature=0, max_tokens=400, ignore_eos=True)

    async def main():
        await wait_idle(async_llm)
        started = asyncio.Event()

        async def consume():
            async for _ in async_llm.generate("Once upon a time", long, request_id="victim"):
                started.set()

        task = asyncio.create_task(consume())
        await started.wait()
        running = async_llm.get_stats()
        assert running.num_running == 1 and running.num_free_kv_blocks < running.num_kv_blocks
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        idle = await wait_idle(async_llm)
        assert idle.num_generated_tokens < running.num_generated_tokens + 400  # stopped early
        assert not async_llm.abort("victim")  # no longer known

    asyncio.run(main())


def test_abort_ends_with_abort(async_llm):
    async def main():
        outs = []
        async for o in async_llm.generate("Once upon a time",
                                          anvil.SamplingParams(temperature=0, max_tokens=400, ignore_eos=True),
                                          request_id="to-abort"):
            outs.append(o)
            if len(outs) == 3:
                assert async_llm.abort("to-abort")
        await wait_idle(async_llm)
        return outs

    outs = asyncio.run(main())
    assert outs[-1].finished and outs[-1].outputs[0].finish_reason == "abort"
    assert len(outs[-1].outputs[0].token_ids) < 400


def test_break_out_of_async_for_aborts(async_llm):
    async def main():
        gen = async_llm.generate("Once upon a time",
                                 anvil.SamplingParams(temperature=0, max_tokens=400, ignore_eos=True))
        async for _ in gen:
            break
        await gen.aclose()
        await wait_idle(async_llm)

    asyncio.run(main())


def test_duplicate_request_id_and_bad_params(async_llm):
    async def main():
        gen = async_llm.generate("Once upon a time", anvil.SamplingParams(max_tokens=400, ignore_eos=True),
                                 request_id="dup")
        first = await gen.__anext__()
        assert first.request_id == "dup"
        with pytest.raises(ValueError, match="already running"):
            await collect(async_llm, "Hello", GREEDY, "dup")
        await gen.aclose()
        with pytest.raises(ValueError, match="prompt|token|context"):
            await collect(async_llm, {"prompt_token_ids": [1, 999999]}, GREEDY)
        await wait_idle(async_llm)

    asyncio.run(main())


def test_chat_async(smollm2, smollm2_path):
    conv = [{"role": "user", "content": "What is the capital of France?"}]
    params = anvil.SamplingParams(temperature=0, max_tokens=12)
    want = smollm2.chat(conv, params)[0].outputs[0].text

    async def main():
        async with anvil.AsyncLLM(smollm2_path, max_model_len=1024, max_num_seqs=2) as llm:
            return [o async for o in llm.chat(conv, params)][-1]

    assert asyncio.run(main()).outputs[0].text == want


def test_shutdown_ends_requests():
    llm = anvil.AsyncLLM(STORIES_MODEL, tokenizer=STORIES_TOKENIZER, max_num_seqs=2)

    async def main():
        outs = []
        async for o in llm.generate("Once upon a time",
                                    anvil.SamplingParams(temperature=0, max_tokens=400, ignore_eos=True)):
            outs.append(o)
            if len(outs) == 2:
                llm.shutdown()
        return outs

    outs = asyncio.run(main())
    assert outs[-1].outputs[0].finish_reason == "abort"
    assert not llm.is_running
    with pytest.raises(RuntimeError, match="shut down"):
        asyncio.run(collect(llm, "Hello", GREEDY))

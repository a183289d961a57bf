"""Every bad input is a Python exception carrying the engine's message (ValueError, FileNotFoundError,
RuntimeError, TypeError for wrong types); none aborts the process."""
import shutil

import pytest

import anvil
from conftest import STORIES_MODEL, STORIES_TOKENIZER


def test_missing_model():
    with pytest.raises(FileNotFoundError, match="no/such/model.bin"):
        anvil.LLM("no/such/model.bin")


def test_missing_tokenizer():
    with pytest.raises(FileNotFoundError, match="missing_tok.bin"):
        anvil.LLM(STORIES_MODEL, tokenizer="missing_tok.bin")


def test_truncated_model_file(tmp_path):
    bad = tmp_path / "truncated.bin"
    bad.write_bytes(open(STORIES_MODEL, "rb").read()[:1000])
    with pytest.raises((RuntimeError, ValueError), match="truncated.bin"):
        anvil.LLM(str(bad), tokenizer=STORIES_TOKENIZER)


def test_garbage_tokenizer_file(tmp_path):
    bad = tmp_path / "tok.bin"
    bad.write_bytes(b"\xff" * 37)
    with pytest.raises((RuntimeError, ValueError), match="tok.bin"):
        anvil.LLM(STORIES_MODEL, tokenizer=str(bad))


@pytest.mark.parametrize("kwargs, error, match", [
    ({"device": "tpu"}, ValueError, "device"),
    ({"dtype": "int3"}, ValueError, "dtype"),
    ({"max_num_seqs": 0}, ValueError, "max_num_seqs"),
    ({"max_model_len": -5}, ValueError, "max_model_len"),
    ({"no_such_option": 1}, TypeError, "no_such_option"),
    ({"block_size": "big"}, TypeError, "block_size"),
])
def test_bad_engine_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        anvil.LLM(STORIES_MODEL, tokenizer=STORIES_TOKENIZER, **kwargs)


@pytest.mark.parametrize("kwargs, error, match", [
    ({"temperature": -1.0}, ValueError, "temperature"),
    ({"top_p": 0.0}, ValueError, "top_p"),
    ({"min_p": 2.0}, ValueError, "min_p"),
    ({"max_tokens": 0}, ValueError, "max_tokens"),
    ({"n": 0}, ValueError, "n must be"),
    ({"seed": -1}, ValueError, "seed"),
    ({"presence_penalty": 9.0}, ValueError, "presence_penalty"),
    ({"logprobs": -2}, ValueError, "logprobs"),
    ({"output_kind": "sometimes"}, ValueError, "output_kind"),
    ({"stop": [1]}, TypeError, "stop"),
    ({"temperature": "hot"}, TypeError, None),
])
def test_bad_sampling_params(kwargs, error, match):
    with pytest.raises(error, match=match):
        anvil.SamplingParams(**kwargs)


def test_prompt_longer_than_context(stories):
    with pytest.raises(ValueError, match="context|long"):
        stories.generate({"prompt_token_ids": [1] + [403] * 5000}, anvil.SamplingParams(max_tokens=4))


def test_token_ids_outside_vocabulary(stories):
    with pytest.raises(ValueError, match="512|vocab"):
        stories.generate({"prompt_token_ids": [1, 100000]})
    with pytest.raises(ValueError, match="token id"):
        stories.generate({"prompt_token_ids": [1, -3]})
    with pytest.raises(ValueError, match="token id"):
        stories.generate({"prompt_token_ids": [1, 2**40]})
    with pytest.raises(ValueError, match="vocab"):
        stories.tokenizer.decode([5, 100000])
    with pytest.raises(ValueError, match="prompt_token_ids"):
        stories.generate({"prompt_token_ids": ["a"]})


def test_batch_error_names_the_prompt(stories):
    with pytest.raises(ValueError, match="prompt 1"):
        stories.generate(["Once", {"prompt_token_ids": [1, 100000]}])
    assert stories.get_stats().num_running == 0 and stories.get_stats().num_waiting == 0


def test_bad_prompt_types(stories):
    with pytest.raises(TypeError, match="prompt"):
        stories.generate([42])
    with pytest.raises(ValueError, match="no prompts"):
        stories.generate([])
    with pytest.raises(ValueError, match="one per prompt"):
        stories.generate(["a", "b"], [anvil.SamplingParams()])
    with pytest.raises(ValueError, match="n = 1"):
        stories.stream("a", anvil.SamplingParams(n=2))


def test_chat_errors(stories, smollm2):
    with pytest.raises(ValueError, match="no chat template"):
        stories.chat([{"role": "user", "content": "hi"}])
    with pytest.raises(ValueError, match="role"):
        smollm2.chat([{"content": "no role"}])
    with pytest.raises(ValueError, match="chat template|line"):
        smollm2.chat([{"role": "user", "content": "hi"}], chat_template="{% for m in messages %}{{ m.content ")
    with pytest.raises(ValueError, match="boom"):
        smollm2.chat([{"role": "user", "content": "hi"}], chat_template="{{ raise_exception('boom') }}")


def test_closed_engine():
    llm = anvil.LLM(STORIES_MODEL, tokenizer=STORIES_TOKENIZER, max_num_seqs=1)
    llm.close()
    llm.close()
    with pytest.raises(RuntimeError, match="closed"):
        llm.generate("Once")


def test_model_directory_without_checkpoint(tmp_path):
    with pytest.raises((FileNotFoundError, ValueError, RuntimeError)):
        anvil.LLM(str(tmp_path))
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises((ValueError, RuntimeError), match="config.json"):
        anvil.LLM(str(tmp_path))

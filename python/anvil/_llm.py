"""anvil.LLM: offline generation, chat, streaming and scoring over the C++ Engine (in-flight batching)."""
from __future__ import annotations

import itertools
import os
import random
import threading
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

from . import _anvil
from ._outputs import RequestOutput, RequestState, ScoreOutput
from ._params import SamplingParams

PromptType = Union[str, Dict[str, Any]]

# LLM(...) keyword -> EngineConfig field, for the options beyond the named arguments.
_ENGINE_OPTIONS = {
    "block_size": "block_size",
    "kv_cache_dtype": "kv_cache_dtype",
    "num_kv_blocks": "num_kv_blocks",
    "max_num_batched_tokens": "max_num_batched_tokens",
    "swap_space": "swap_space_gb",
    "enable_prefix_caching": "enable_prefix_caching",
    "load_format": "load_format",
    "gpu_memory_utilization": "gpu_memory_utilization",
    "enforce_eager": "enforce_eager",
    "max_graph_batch": "max_graph_batch",
    "check_weights": "check_weights",
    "tensor_parallel_size": "tensor_parallel_size",
    "pipeline_parallel_size": "pipeline_parallel_size",
}
_DTYPES = {"auto": "auto", "float32": "float32", "float": "float32", "fp32": "float32", "float16": "float16",
           "half": "float16", "fp16": "float16", "bfloat16": "bfloat16", "bf16": "bfloat16"}


def _engine_config(model, tokenizer, device, dtype, max_model_len, max_num_seqs, num_threads,
                   options: Dict[str, Any]) -> "_anvil.EngineConfig":
    c = _anvil.EngineConfig()
    c.model_path = os.fspath(model)
    if not c.model_path:
        raise ValueError("model must name a checkpoint (a Hugging Face directory, a GGUF file or a llama2.c .bin)")
    if tokenizer is not None:
        c.tokenizer_path = os.fspath(tokenizer)
    if device not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'cpu' or 'cuda' (got {device!r})")
    c.device = device
    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(sorted(_DTYPES))} (got {dtype!r})")
    # As the CLI's --dtype: the dtype of dummy weights and, when 16-bit, the CUDA compute dtype.
    c.dummy_dtype = _DTYPES[dtype]
    if c.dummy_dtype in ("float16", "bfloat16"):
        c.cuda_dtype = c.dummy_dtype
    for name, value in (("max_model_len", max_model_len), ("max_num_seqs", max_num_seqs),
                        ("num_threads", num_threads)):
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name} must be an int (got {value!r})")
        if value < (0 if name == "num_threads" else 1) or value >= 2**31:
            raise ValueError(f"{name} must be {'>= 0' if name == 'num_threads' else '>= 1'} (got {value})")
    c.max_model_len = max_model_len or 0
    if max_num_seqs is not None:
        c.max_num_seqs = max_num_seqs
    c.num_threads = num_threads or 0
    for key, value in options.items():
        if key not in _ENGINE_OPTIONS:
            raise TypeError(f"unknown engine option {key!r}; known: {', '.join(sorted(_ENGINE_OPTIONS))}")
        try:
            setattr(c, _ENGINE_OPTIONS[key], value)
        except TypeError:
            raise TypeError(f"{key}: wrong type ({value!r})") from None
    return c


def _message_pairs(messages) -> List[Tuple[str, str]]:
    pairs = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            raise ValueError(f"message {i} must be a dict with 'role' and 'content'")
        content = m["content"]
        if isinstance(content, list):  # OpenAI content parts: only text parts are understood
            texts = []
            for part in content:
                if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                    raise ValueError(f"message {i}: only text content parts are supported")
                texts.append(part["text"])
            content = "".join(texts)
        if not isinstance(m["role"], str) or not isinstance(content, str):
            raise ValueError(f"message {i}: role and content must be strings")
        pairs.append((m["role"], content))
    return pairs


class Tokenizer:
    """The model's tokenizer (as loaded by the engine)."""

    def __init__(self, engine) -> None:
        self._engine = engine

    def encode(self, text: str, add_special_tokens: bool = True) -> List[int]:
        """Token ids of `text`; with add_special_tokens the BOS id comes first (as the engine tokenizes prompts)."""
        if not isinstance(text, str):
            raise TypeError(f"text must be a str (got {type(text).__name__})")
        return list(self._engine.tokenize(text, add_special_tokens))

    def decode(self, token_ids: Sequence[int]) -> str:
        """The text of `token_ids` (ids outside the vocabulary raise ValueError)."""
        return self._engine.detokenize([int(t) for t in token_ids])

    @property
    def vocab_size(self) -> int:
        return int(self._engine.info.vocab_size)

    def __call__(self, text: str) -> List[int]:
        return self.encode(text)


class _Prompts:
    """Prompt forms shared by LLM and AsyncLLM: a str, {"prompt": str} or {"prompt_token_ids": [...]}."""

    _engine: Any

    def _prompt_ids(self, prompt: PromptType) -> Tuple[Optional[str], List[int]]:
        if isinstance(prompt, str):
            return prompt, list(self._engine.tokenize(prompt, True))
        if isinstance(prompt, dict):
            if "prompt_token_ids" in prompt:
                ids = prompt["prompt_token_ids"]
                if not isinstance(ids, (list, tuple)) or not all(isinstance(t, int) for t in ids):
                    raise ValueError("prompt_token_ids must be a list of ints")
                return prompt.get("prompt"), list(ids)
            if isinstance(prompt.get("prompt"), str):
                return prompt["prompt"], list(self._engine.tokenize(prompt["prompt"], True))
        raise TypeError("a prompt is a str, {'prompt': str} or {'prompt_token_ids': [int, ...]} "
                        f"(got {type(prompt).__name__})")

    def _chat_ids(self, messages, chat_template: Optional[str], add_generation_prompt: bool) -> Tuple[str, List[int]]:
        text, add_bos = self._engine.render_chat(_message_pairs(messages), add_generation_prompt, chat_template)
        return text, list(self._engine.tokenize(text, add_bos))

    def _decode_token(self, token_id: int) -> str:
        return self._engine.detokenize([token_id])


class LLM(_Prompts):
    """A model loaded into an in-flight-batching engine, for offline use (names follow vLLM's ``LLM``).

    Args:
        model: a Hugging Face directory, a GGUF file or a llama2.c ``.bin``.
        tokenizer: a tokenizer file or directory (default: the one beside the model / inside the GGUF).
        device: "cpu" or "cuda".
        dtype: "auto", "float32", "float16" or "bfloat16": the CUDA compute dtype when 16-bit, and the dtype of
            dummy weights (load_format="dummy"). The CPU backend always computes in float32.
        max_model_len: context length (default: the model's).
        max_num_seqs: sequences running at once (each of n samples counts); the KV cache is sized for them.
        seed: makes requests without their own SamplingParams.seed reproducible from run to run.
        num_threads: CPU threads for this engine (default: OMP_NUM_THREADS, else all cores). Each engine keeps
            its own count; see the README on threads.
        **engine_options: block_size, kv_cache_dtype ("auto", "fp8" or "int8"), num_kv_blocks, max_num_batched_tokens, swap_space (GiB),
            enable_prefix_caching, load_format ("auto" or "dummy"), gpu_memory_utilization, enforce_eager,
            max_graph_batch, check_weights.

    Raises FileNotFoundError for a missing model or tokenizer, ValueError for bad arguments or files it cannot
    use, RuntimeError otherwise. The engine (weights, KV cache) is freed when the object is deleted or close()d.

    Example::

        llm = anvil.LLM("../shared/models/stories260K/stories260K.bin",
                        tokenizer="../shared/models/stories260K/tok512.bin")
        out = llm.generate(["Once upon a time"], anvil.SamplingParams(temperature=0, max_tokens=32))
        print(out[0].outputs[0].text)
    """

    def __init__(self, model: Union[str, os.PathLike], *, tokenizer: Optional[Union[str, os.PathLike]] = None,
                 device: str = "cpu", dtype: str = "auto", max_model_len: Optional[int] = None,
                 max_num_seqs: Optional[int] = None, seed: Optional[int] = None, num_threads: Optional[int] = None,
                 **engine_options: Any) -> None:
        config = _engine_config(model, tokenizer, device, dtype, max_model_len, max_num_seqs, num_threads,
                                engine_options)
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise TypeError(f"seed must be an int or None (got {seed!r})")
        self._engine = _anvil.Engine.create(config)
        self._rng = random.Random(seed) if seed is not None else None
        self._lock = threading.RLock()  # one step at a time; outputs routed to their requests' inboxes
        self._inbox: Dict[int, list] = {}
        self._ids = itertools.count()
        self.tokenizer = Tokenizer(self._engine)

    # ---- engine ------------------------------------------------------------------------------------------
    @property
    def model_info(self) -> "_anvil.ModelInfo":
        """What was loaded: architecture, vocab_size, max_model_len, num_params, KV cache blocks and bytes."""
        return self._engine.info

    @property
    def num_threads(self) -> int:
        """The CPU threads this engine runs with."""
        return self._engine.num_threads

    def get_tokenizer(self) -> Tokenizer:
        return self.tokenizer

    def get_stats(self) -> "_anvil.EngineStats":
        """The engine's counters: running/waiting sequences, free KV blocks, prefix-cache hits, steps."""
        return self._engine.stats()

    def close(self) -> None:
        """Frees the engine (weights and KV cache) now; later calls raise RuntimeError."""
        self._engine.close()

    def __enter__(self) -> "LLM":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- requests ----------------------------------------------------------------------------------------
    def _seed(self, params: SamplingParams) -> Optional[int]:
        if params.seed is not None or self._rng is None:
            return params.seed
        return self._rng.getrandbits(63)

    def _add(self, prompt_ids: List[int], params: SamplingParams) -> int:
        with self._lock:
            rid = self._engine.add_request(prompt_ids, params._to_cpp(self._seed(params)), params.n)
            self._inbox[rid] = []
            return rid

    def _abort(self, rid: int) -> None:
        with self._lock:
            if self._inbox.pop(rid, None) is not None:
                self._engine.abort(rid)

    def _take(self, rid: int) -> list:
        """The outputs of request `rid` since the last take, stepping the engine once if there are none."""
        with self._lock:
            box = self._inbox[rid]
            if not box:
                for o in self._engine.step():  # the GIL is released while the engine steps
                    target = self._inbox.get(o.request_id)
                    if target is not None:
                        target.append(o)
            self._inbox[rid] = []
            return box

    def _run(self, prompts: List[Tuple[Optional[str], List[int]]],
             params: Sequence[SamplingParams]) -> List[RequestOutput]:
        states: Dict[int, RequestState] = {}
        order: List[int] = []
        try:
            for i, ((text, ids), p) in enumerate(zip(prompts, params)):
                try:
                    rid = self._add(ids, p)
                except (ValueError, FileNotFoundError, RuntimeError) as e:
                    raise type(e)(f"prompt {i}: {e}" if len(prompts) > 1 else str(e)) from None
                order.append(rid)
                states[rid] = RequestState(str(next(self._ids)), text, ids, p.n, p.logprobs, self._decode_token)
            pending = set(order)
            while pending:
                for rid in list(pending):
                    for o in self._take(rid):
                        states[rid].update(o)
                    if states[rid].finished:
                        pending.discard(rid)
                        with self._lock:
                            self._inbox.pop(rid, None)
        finally:  # an error or KeyboardInterrupt: free what is still running
            for rid in order:
                if not states[rid].finished:
                    self._abort(rid)
        return [states[rid].output() for rid in order]

    @staticmethod
    def _params_list(sampling_params, count: int) -> List[SamplingParams]:
        if sampling_params is None:
            return [SamplingParams()] * count
        if isinstance(sampling_params, SamplingParams):
            return [sampling_params] * count
        params = list(sampling_params)
        if len(params) != count or not all(isinstance(p, SamplingParams) for p in params):
            raise ValueError(f"sampling_params must be one SamplingParams or a list of {count} (one per prompt)")
        return params

    def generate(self, prompts: Union[PromptType, Sequence[PromptType]],
                 sampling_params: Optional[Union[SamplingParams, Sequence[SamplingParams]]] = None
                 ) -> List[RequestOutput]:
        """Generates for one prompt or a list of them, run as one in-flight batch; outputs in input order.

        A prompt is a str (tokenized with BOS), {"prompt": str} or {"prompt_token_ids": [...]}.
        sampling_params is one SamplingParams for all prompts or one per prompt (default: SamplingParams()).
        Returns one RequestOutput per prompt, with text, token ids, logprobs, finish reason and timings.
        """
        if isinstance(prompts, (str, dict)):
            prompts = [prompts]
        prompts = list(prompts)
        if not prompts:
            raise ValueError("no prompts")
        tokenized = [self._prompt_ids(p) for p in prompts]
        return self._run(tokenized, self._params_list(sampling_params, len(prompts)))

    def chat(self, messages, sampling_params: Optional[Union[SamplingParams, Sequence[SamplingParams]]] = None, *,
             chat_template: Optional[str] = None, add_generation_prompt: bool = True) -> List[RequestOutput]:
        """Generates replies to one conversation or a list of them, through the model's chat template.

        messages: [{"role": "user", "content": "..."}, ...], or a list of such conversations.
        chat_template: Jinja text that replaces the model's own template.
        The RequestOutput's prompt is the rendered conversation.
        """
        if not isinstance(messages, (list, tuple)) or not messages:
            raise ValueError("messages must be a non-empty list of {'role', 'content'} dicts (or of conversations)")
        conversations = [messages] if isinstance(messages[0], dict) else list(messages)
        rendered = [self._chat_ids(c, chat_template, add_generation_prompt) for c in conversations]
        return self._run(rendered, self._params_list(sampling_params, len(conversations)))

    def stream(self, prompt: PromptType, sampling_params: Optional[SamplingParams] = None) -> Iterator[str]:
        """Yields the text of one prompt's generation as it comes (deltas that concatenate to the final text).

        Closing the generator early (break, or its deletion) aborts the request.
        """
        params = sampling_params or SamplingParams()
        if params.n != 1:
            raise ValueError(f"stream needs n = 1 (got {params.n})")
        text, ids = self._prompt_ids(prompt)
        rid = self._add(ids, params)
        state = RequestState(str(next(self._ids)), text, ids, 1, None, self._decode_token)

        def deltas() -> Iterator[str]:
            try:
                while not state.finished:
                    for o in self._take(rid):
                        delta = state.update(o)
                        if delta:
                            yield delta
            finally:
                if state.finished:
                    with self._lock:
                        self._inbox.pop(rid, None)
                else:
                    self._abort(rid)

        return deltas()

    def score(self, texts: Union[str, Sequence[str]]) -> List[ScoreOutput]:
        """Per-token log-probabilities of each text (BOS first; every later token scored in context)."""
        if isinstance(texts, str):
            texts = [texts]
        results = []
        for text in texts:
            if not isinstance(text, str):
                raise TypeError(f"score takes strings (got {type(text).__name__})")
            ids = list(self._engine.tokenize(text, True))
            with self._lock:
                lps = self._engine.score(ids)
            results.append(ScoreOutput(text, ids, [None] + list(lps)))
        return results

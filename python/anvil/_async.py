"""anvil.AsyncLLM: asyncio generation over the C++ AsyncEngine (a background engine loop thread).

The engine's loop thread never takes the GIL: when a request has outputs it makes an eventfd readable, the asyncio
loop (loop.add_reader) wakes the request's consumer, which drains its stream without blocking.
"""
from __future__ import annotations

import asyncio
import itertools
import random
import weakref
from typing import Any, AsyncIterator, Dict, Optional, Union

from . import _anvil
from ._llm import PromptType, Tokenizer, _engine_config, _Prompts
from ._outputs import RequestOutput, RequestState
from ._params import SamplingParams


class _Entry:
    __slots__ = ("stream", "event")

    def __init__(self, stream, event: asyncio.Event) -> None:
        self.stream = stream
        self.event = event


def _on_ready(ref: "weakref.ref[AsyncLLM]") -> None:
    llm = ref()
    if llm is not None:
        llm._wake()


class AsyncLLM(_Prompts):
    """A model served by a background engine loop, for asyncio callers (names follow vLLM's ``AsyncLLM``).

    Takes the same arguments as anvil.LLM. Many ``generate`` calls may run at once (from tasks of one event
    loop); each is an async iterator of RequestOutput. Cancelling the consuming task (or leaving the ``async for``
    early) aborts the request and frees its KV cache blocks. Call shutdown() (or use ``async with``) to stop the
    engine loop; deleting the object does it too.

    Example::

        llm = anvil.AsyncLLM(model_path)
        async for out in llm.generate("Once upon a time", anvil.SamplingParams(max_tokens=32), request_id="a"):
            print(out.outputs[0].text)
    """

    def __init__(self, model, *, tokenizer=None, device: str = "cpu", dtype: str = "auto",
                 max_model_len: Optional[int] = None, max_num_seqs: Optional[int] = None,
                 seed: Optional[int] = None, num_threads: Optional[int] = None, **engine_options: Any) -> None:
        config = _engine_config(model, tokenizer, device, dtype, max_model_len, max_num_seqs, num_threads,
                                engine_options)
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise TypeError(f"seed must be an int or None (got {seed!r})")
        self._engine = _anvil.AsyncEngine.create(config)
        self._rng = random.Random(seed) if seed is not None else None
        self._keys = itertools.count(1)
        self._ids = itertools.count()
        self._by_key: Dict[int, _Entry] = {}
        self._requests: Dict[str, _Entry] = {}
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._is_shut_down = False
        self.tokenizer = Tokenizer(self._engine)

    @property
    def model_info(self) -> "_anvil.ModelInfo":
        return self._engine.info

    @property
    def num_threads(self) -> int:
        return self._engine.num_threads

    def get_tokenizer(self) -> Tokenizer:
        return self.tokenizer

    def get_stats(self) -> "_anvil.EngineStats":
        """The engine's counters as of its last step."""
        return self._engine.stats()

    @property
    def is_running(self) -> bool:
        return self._engine.is_alive()

    # ---- the event loop side -----------------------------------------------------------------------------
    def _bind(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._loop is loop:
            return
        if self._loop is not None:
            if self._requests:
                raise RuntimeError("this AsyncLLM has requests running on another event loop")
            self._unbind()
        loop.add_reader(self._engine.ready_fd(), _on_ready, weakref.ref(self))
        self._loop = loop

    def _unbind(self) -> None:
        loop, self._loop = self._loop, None
        if loop is not None and not loop.is_closed():
            try:
                loop.remove_reader(self._engine.ready_fd())
            except (RuntimeError, ValueError, OSError):
                pass

    def _wake(self) -> None:
        for key in self._engine.take_ready():
            entry = self._by_key.get(key)
            if entry is not None:
                entry.event.set()

    # ---- requests ----------------------------------------------------------------------------------------
    async def generate(self, prompt: PromptType, sampling_params: Optional[SamplingParams] = None,
                       request_id: Optional[str] = None) -> AsyncIterator[RequestOutput]:
        """Generates for one prompt, yielding RequestOutputs as tokens come (see SamplingParams.output_kind).

        request_id names the request (for abort()); default: a fresh one. An id already running raises ValueError.
        """
        params = sampling_params or SamplingParams()
        text, ids = self._prompt_ids(prompt)
        async for out in self._generate_ids(text, ids, params, request_id):
            yield out

    async def chat(self, messages, sampling_params: Optional[SamplingParams] = None,
                   request_id: Optional[str] = None, *, chat_template: Optional[str] = None,
                   add_generation_prompt: bool = True) -> AsyncIterator[RequestOutput]:
        """Like generate(), for one conversation rendered with the model's chat template."""
        params = sampling_params or SamplingParams()
        text, ids = self._chat_ids(messages, chat_template, add_generation_prompt)
        async for out in self._generate_ids(text, ids, params, request_id):
            yield out

    async def _generate_ids(self, text, ids, params: SamplingParams, request_id) -> AsyncIterator[RequestOutput]:
        loop = asyncio.get_running_loop()
        self._bind(loop)
        rid = str(request_id) if request_id is not None else f"req-{next(self._ids)}"
        if rid in self._requests:
            raise ValueError(f"request id {rid!r} is already running")
        seed = params.seed if params.seed is not None or self._rng is None else self._rng.getrandbits(63)
        key = next(self._keys)
        entry = _Entry(None, asyncio.Event())
        self._by_key[key] = entry
        try:
            entry.stream = self._engine.submit(ids, params._to_cpp(seed), params.n, key)
        except BaseException:
            del self._by_key[key]
            raise
        self._requests[rid] = entry
        state = RequestState(rid, text, ids, params.n, params.logprobs, self._decode_token)
        kind = params.output_kind
        stream = entry.stream
        try:
            while True:
                entry.event.clear()
                got = False
                while True:
                    o = stream.try_next()
                    if o is None:
                        break
                    state.update(o)
                    got = True
                if got and (kind != "final_only" or state.finished):
                    yield state.output(delta=kind == "delta")
                if stream.finished():
                    if not self._is_shut_down:  # shutdown() ends requests with "abort", not an error
                        stream.check_status()  # the engine failed the request: RuntimeError with its message
                    return
                await entry.event.wait()
        finally:  # cancelled, closed early or failed: drop the stream, which aborts the request
            stream.close()
            self._by_key.pop(key, None)
            if self._requests.get(rid) is entry:
                del self._requests[rid]

    def abort(self, request_id: str) -> bool:
        """Aborts a running request (its generate() then ends with finish_reason "abort"); False if unknown."""
        entry = self._requests.get(str(request_id))
        if entry is None:
            return False
        entry.stream.abort()
        return True

    def shutdown(self) -> None:
        """Stops the engine loop (requests running end with "abort") and frees the engine. Idempotent."""
        self._is_shut_down = True
        self._engine.shutdown()  # joins the loop thread: every stream has its last output now
        for entry in list(self._by_key.values()):
            entry.event.set()
        self._unbind()

    async def __aenter__(self) -> "AsyncLLM":
        return self

    async def __aexit__(self, *exc) -> None:
        self.shutdown()

    def __del__(self) -> None:
        engine = getattr(self, "_engine", None)
        if engine is not None:
            self._unbind()

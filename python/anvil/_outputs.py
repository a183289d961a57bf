"""Outputs (names as vLLM's: RequestOutput, CompletionOutput, Logprob) and how engine news turns into them."""
from __future__ import annotations

import dataclasses
import math
from typing import Callable, Dict, List, Optional


@dataclasses.dataclass
class Logprob:
    """The log-probability of one token (from the raw logits); rank 1 is the most likely, None when unknown."""

    logprob: float
    rank: Optional[int] = None
    decoded_token: Optional[str] = None


@dataclasses.dataclass
class CompletionOutput:
    """One sample of a request.

    Attributes:
        index: the sample's index, 0 .. n-1.
        text: the generated text (a stop string excluded).
        token_ids: the generated token ids (an EOS that ended generation excluded).
        cumulative_logprob: the sum of the generated tokens' log-probabilities.
        logprobs: with SamplingParams.logprobs set, one dict per token: token id -> Logprob (the sampled token
            and the most likely ones); else None.
        finish_reason: "stop" (EOS or a stop string), "length" (max_tokens or the context), "abort", or None
            while running.
    """

    index: int
    text: str
    token_ids: List[int]
    cumulative_logprob: Optional[float]
    logprobs: Optional[List[Dict[int, Logprob]]]
    finish_reason: Optional[str] = None

    def finished(self) -> bool:
        return self.finish_reason is not None


@dataclasses.dataclass
class RequestMetrics:
    """Monotonic timestamps in seconds (anvil.monotonic_seconds()); 0 when not reached yet."""

    arrival_time: float
    first_scheduled_time: float
    first_token_time: float
    finished_time: float

    @property
    def time_to_first_token(self) -> Optional[float]:
        return self.first_token_time - self.arrival_time if self.first_token_time else None

    @property
    def time_in_queue(self) -> Optional[float]:
        return self.first_scheduled_time - self.arrival_time if self.first_scheduled_time else None


@dataclasses.dataclass
class RequestOutput:
    """A request's outputs: its prompt and one CompletionOutput per sample."""

    request_id: str
    prompt: Optional[str]
    prompt_token_ids: List[int]
    outputs: List[CompletionOutput]
    finished: bool
    metrics: RequestMetrics
    num_cached_tokens: int = 0


@dataclasses.dataclass
class ScoreOutput:
    """Per-token log-probabilities of a text under the model.

    logprobs[i] is log p(token_ids[i] | token_ids[:i]); logprobs[0] (the BOS token) is None.
    """

    text: str
    token_ids: List[int]
    logprobs: List[Optional[float]]

    @property
    def sum_logprob(self) -> float:
        return float(sum(x for x in self.logprobs if x is not None))

    @property
    def perplexity(self) -> float:
        scored = [x for x in self.logprobs if x is not None]
        return math.exp(-sum(scored) / len(scored)) if scored else float("nan")


class _Sample:
    __slots__ = ("text", "token_ids", "logprobs", "top", "finish_reason", "first_token_time", "finish_time",
                 "sent_text", "sent_tokens")

    def __init__(self) -> None:
        self.text = ""
        self.token_ids: List[int] = []
        self.logprobs: List[float] = []
        self.top: List[Dict[int, Logprob]] = []
        self.finish_reason: Optional[str] = None
        self.first_token_time = 0.0
        self.finish_time = 0.0
        self.sent_text = 0
        self.sent_tokens = 0


class RequestState:
    """Collects the engine's per-step news (_anvil.RequestOutput) of one request into RequestOutputs."""

    def __init__(self, request_id: str, prompt: Optional[str], prompt_ids: List[int], n: int,
                 logprobs: Optional[int], decode_token: Callable[[int], str]) -> None:
        self.request_id = request_id
        self.prompt = prompt
        self.prompt_ids = list(prompt_ids)
        self.samples = [_Sample() for _ in range(n)]
        self.want_logprobs = logprobs
        self.decode_token = decode_token
        self.finished = False
        self.arrival_time = 0.0
        self.first_scheduled_time = 0.0
        self.num_cached_tokens = 0

    def update(self, o) -> str:
        """Adds one engine output; returns its text delta."""
        s = self.samples[o.sample_index]
        s.text += o.text
        ids = list(o.token_ids)
        s.token_ids += ids
        lps = list(o.logprobs)
        s.logprobs += lps
        if self.want_logprobs is not None:
            for tok, lp, top in zip(ids, lps, o.top_logprobs):
                d: Dict[int, Logprob] = {}
                for rank, e in enumerate(top, start=1):
                    d[e.token_id] = Logprob(e.logprob, rank, self.decode_token(e.token_id))
                if tok not in d:
                    d[tok] = Logprob(lp, None, self.decode_token(tok))
                s.top.append(d)
        if o.finished:
            s.finish_reason = o.finish_reason
        t = o.timings
        self.arrival_time = t.arrival_time
        self.first_scheduled_time = t.first_scheduled_time
        s.first_token_time = t.first_token_time
        s.finish_time = t.finish_time
        self.num_cached_tokens = o.num_cached_tokens
        if o.request_finished:
            self.finished = True
        return o.text

    def output(self, delta: bool = False) -> RequestOutput:
        """Everything so far, or (delta) only what is new since the last delta output."""
        outs = []
        for i, s in enumerate(self.samples):
            t0 = s.sent_text if delta else 0
            k0 = s.sent_tokens if delta else 0
            outs.append(CompletionOutput(
                index=i,
                text=s.text[t0:],
                token_ids=s.token_ids[k0:],
                cumulative_logprob=float(sum(s.logprobs)),
                logprobs=s.top[k0:] if self.want_logprobs is not None else None,
                finish_reason=s.finish_reason))
            if delta:
                s.sent_text = len(s.text)
                s.sent_tokens = len(s.token_ids)
        firsts = [s.first_token_time for s in self.samples if s.first_token_time]
        metrics = RequestMetrics(
            arrival_time=self.arrival_time,
            first_scheduled_time=self.first_scheduled_time,
            first_token_time=min(firsts) if firsts else 0.0,
            finished_time=max(s.finish_time for s in self.samples) if self.finished else 0.0)
        return RequestOutput(self.request_id, self.prompt, list(self.prompt_ids), outs, self.finished, metrics,
                             self.num_cached_tokens)

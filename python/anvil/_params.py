"""SamplingParams: how a request turns logits into tokens and when it stops (names as vLLM's)."""
from __future__ import annotations

import dataclasses
from typing import List, Optional, Union

from . import _anvil

_OUTPUT_KINDS = ("cumulative", "delta", "final_only")


@dataclasses.dataclass
class SamplingParams:
    """Sampling parameters of one request; the fields mean what vLLM's do.

    Args:
        n: samples of the prompt (they share its KV cache blocks).
        temperature: 0 is greedy (exact argmax); higher is more random.
        top_p: keep the smallest set of tokens whose probability sums to top_p, in (0, 1].
        top_k: keep the k most likely tokens; 0 or -1 turns it off.
        min_p: drop tokens less likely than min_p times the most likely one, in [0, 1].
        seed: the same seed gives the same output; None draws one (from the LLM's seed when it has one).
        stop: a string or strings that end the generation (not included in the text).
        max_tokens: tokens to generate at most (>= 1).
        ignore_eos: keep generating after the end-of-sequence token.
        logprobs: None for no per-token log-probability dicts; k >= 0 for the sampled token plus the k most likely.
        presence_penalty, frequency_penalty: OpenAI semantics over the output tokens, in [-2, 2].
        repetition_penalty: Hugging Face semantics over prompt and output tokens, > 0 (1 = off).
        output_kind: what each streamed RequestOutput of AsyncLLM.generate holds: "cumulative" (everything so
            far, the default), "delta" (only what is new) or "final_only" (one output at the end).

    Invalid values raise ValueError naming the field, when the object is made.
    """

    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0
    seed: Optional[int] = None
    stop: Optional[Union[str, List[str]]] = None
    max_tokens: int = 16
    ignore_eos: bool = False
    logprobs: Optional[int] = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repetition_penalty: float = 1.0
    output_kind: str = "cumulative"

    def __post_init__(self) -> None:
        if isinstance(self.stop, str):
            self.stop = [self.stop]
        elif self.stop is None:
            self.stop = []
        else:
            self.stop = list(self.stop)
            for s in self.stop:
                if not isinstance(s, str):
                    raise TypeError(f"stop must be a string or a list of strings (got {s!r})")
        for name in ("n", "top_k", "max_tokens"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"{name} must be an int (got {value!r})")
        if self.n < 1:
            raise ValueError(f"n must be >= 1 (got {self.n})")
        if self.seed is not None:
            if isinstance(self.seed, bool) or not isinstance(self.seed, int):
                raise TypeError(f"seed must be an int or None (got {self.seed!r})")
            if not 0 <= self.seed < 2**64:
                raise ValueError(f"seed must be in [0, 2**64) (got {self.seed})")
        if self.logprobs is not None:
            if isinstance(self.logprobs, bool) or not isinstance(self.logprobs, int):
                raise TypeError(f"logprobs must be an int or None (got {self.logprobs!r})")
            if self.logprobs < 0:
                raise ValueError(f"logprobs must be >= 0 (got {self.logprobs})")
        if self.output_kind not in _OUTPUT_KINDS:
            raise ValueError(f"output_kind must be one of {', '.join(_OUTPUT_KINDS)} (got {self.output_kind!r})")
        self._to_cpp(self.seed).validate()

    def _to_cpp(self, seed: Optional[int]) -> "_anvil.SamplingParams":
        """The C++ struct, with `seed` (the request's own or one drawn for it)."""
        p = _anvil.SamplingParams()
        p.temperature = self.temperature
        p.top_k = 0 if self.top_k == -1 else self.top_k
        p.top_p = self.top_p
        p.min_p = self.min_p
        p.repetition_penalty = self.repetition_penalty
        p.presence_penalty = self.presence_penalty
        p.frequency_penalty = self.frequency_penalty
        p.seed = seed
        if not -(2**31) <= self.max_tokens < 2**31:
            raise ValueError(f"max_tokens must be >= 1 (got {self.max_tokens})")
        p.max_tokens = self.max_tokens
        p.stop = list(self.stop or [])
        p.ignore_eos = bool(self.ignore_eos)
        p.logprobs = 0 if self.logprobs is None else min(self.logprobs, 2**31 - 1)
        return p

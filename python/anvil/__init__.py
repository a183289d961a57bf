"""Anvil: an LLM inference engine (C++20/CUDA) for Python.

``anvil.LLM`` generates, chats, streams and scores offline over the C++ ``Engine`` (in-flight batching, paged KV
cache); ``anvil.AsyncLLM`` serves many asyncio callers at once over the C++ ``AsyncEngine``; ``python -m anvil
serve ...`` starts the OpenAI-compatible HTTP server. Names follow vLLM's: ``LLM``, ``SamplingParams``,
``RequestOutput``, ``CompletionOutput``.

Errors are Python exceptions carrying the engine's message: ValueError for bad arguments, FileNotFoundError for
missing files, RuntimeError otherwise.
"""
from . import _anvil
from ._async import AsyncLLM
from ._llm import LLM, Tokenizer
from ._outputs import CompletionOutput, Logprob, RequestMetrics, RequestOutput, ScoreOutput
from ._params import SamplingParams

__version__: str = _anvil.build_info()["version"]

EngineStats = _anvil.EngineStats
ModelInfo = _anvil.ModelInfo
monotonic_seconds = _anvil.monotonic_seconds
set_log_level = _anvil.set_log_level


def build_info() -> dict:
    """The version, git commit and backends ("cpu", "cpu, cuda (sm_90a, sm_80)") this package was built with."""
    return dict(_anvil.build_info())


__all__ = [
    "LLM", "AsyncLLM", "SamplingParams", "RequestOutput", "CompletionOutput", "Logprob", "RequestMetrics",
    "ScoreOutput", "Tokenizer", "EngineStats", "ModelInfo", "build_info", "monotonic_seconds", "set_log_level",
]

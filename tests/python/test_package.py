"""The package itself: per-engine thread counts, memory freed on deletion, `python -m anvil`, docs."""
import ctypes
import gc
import os
import pydoc
import subprocess
import sys

import anvil
from conftest import STORIES_MODEL, STORIES_TOKENIZER


def omp_max_threads():
    return ctypes.CDLL("libgomp.so.1").omp_get_max_threads()


def test_two_engines_keep_their_own_threads():
    before = omp_max_threads()
    one = anvil.LLM(STORIES_MODEL, tokenizer=STORIES_TOKENIZER, max_num_seqs=2, num_threads=1)
    two = anvil.LLM(STORIES_MODEL, tokenizer=STORIES_TOKENIZER, max_num_seqs=2, num_threads=3)
    default = anvil.LLM(STORIES_MODEL, tokenizer=STORIES_TOKENIZER, max_num_seqs=2)
    assert (one.num_threads, two.num_threads, default.num_threads) == (1, 3, before)
    params = anvil.SamplingParams(temperature=0, max_tokens=20)
    assert one.generate("Once", params)[0].outputs[0].text == two.generate("Once", params)[0].outputs[0].text
    assert omp_max_threads() == before  # the calling thread's setting is left as it was
    assert (one.num_threads, two.num_threads) == (1, 3)
    a = anvil.AsyncLLM(STORIES_MODEL, tokenizer=STORIES_TOKENIZER, max_num_seqs=2, num_threads=2)
    assert a.num_threads == 2 and omp_max_threads() == before
    a.shutdown()


def test_sampling_in_a_thread_while_another_engine_runs():
    import threading
    params = anvil.SamplingParams(temperature=0, max_tokens=30)
    one = anvil.LLM(STORIES_MODEL, tokenizer=STORIES_TOKENIZER, max_num_seqs=2, num_threads=1)
    two = anvil.LLM(STORIES_MODEL, tokenizer=STORIES_TOKENIZER, max_num_seqs=2, num_threads=2)
    want = one.generate("Once upon a time", params)[0].outputs[0].text
    got = {}

    def run(name, llm):
        got[name] = [llm.generate("Once upon a time", params)[0].outputs[0].text for _ in range(3)]

    threads = [threading.Thread(target=run, args=(n, l)) for n, l in (("one", one), ("two", two))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert got == {"one": [want] * 3, "two": [want] * 3}


def rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def trimmed_rss_bytes():
    # NOTE: glibc keeps freed heap memory (the weights are many tensors of a few MiB each) until asked to give
    # it back; malloc_trim makes RSS show what is really still allocated.
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    return rss_bytes()


def test_memory_is_freed_on_delete(smollm2_path):
    base = trimmed_rss_bytes()
    for make in (lambda: anvil.LLM(smollm2_path, max_model_len=2048, max_num_seqs=8),
                 lambda: anvil.AsyncLLM(smollm2_path, max_model_len=2048, max_num_seqs=8)):
        for _ in range(2):  # no growth from one engine to the next
            llm = make()
            loaded = rss_bytes()
            assert loaded - base > 100 << 20  # the mapped Q4_1 weights (86 MB), fused copies and the touched KV
            del llm
            assert trimmed_rss_bytes() - base < (loaded - base) * 0.1


def test_python_m_anvil_runs_the_cli():
    r = subprocess.run([sys.executable, "-m", "anvil", "--version"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("anvil " + anvil.__version__)
    r = subprocess.run([sys.executable, "-m", "anvil", "serve", "--help"], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0 and "--port" in r.stdout


def test_help_reads_well():
    text = pydoc.render_doc(anvil.LLM, renderer=pydoc.plaintext)
    for word in ("generate", "chat", "stream", "score", "max_num_seqs", "FileNotFoundError"):
        assert word in text
    assert "temperature" in pydoc.render_doc(anvil.SamplingParams, renderer=pydoc.plaintext)
    assert anvil.build_info()["backends"].startswith("cpu")

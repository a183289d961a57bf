"""Fixtures for the Python package's tests: the models (stories260K from ../shared, SmolLM2 from
scripts/fetch_model.sh), the `anvil` CLI to compare against, and one shared engine per model.

The package is imported from PYTHONPATH: ctest points it at build/python (the module built by the normal build);
after `pip install .` the installed package is used.
"""
import os
import pathlib
import subprocess

import pytest

import anvil

ROOT = pathlib.Path(__file__).resolve().parents[2]
STORIES = ROOT / ".." / "shared" / "models" / "stories260K"
STORIES_MODEL = str(STORIES / "stories260K.bin")
STORIES_TOKENIZER = str(STORIES / "tok512.bin")

anvil.set_log_level("warning")


@pytest.fixture(scope="session")
def anvil_bin():
    path = os.environ.get("ANVIL_BIN", str(ROOT / "build" / "anvil"))
    assert pathlib.Path(path).exists(), f"build anvil first ({path})"
    return path


@pytest.fixture(scope="session")
def cli(anvil_bin):
    """Runs the CLI; returns its stdout (asserting exit code 0)."""
    def _run(*args, stdin=None, timeout=300):
        r = subprocess.run([anvil_bin, *map(str, args)], capture_output=True, text=True, input=stdin,
                           timeout=timeout)
        assert r.returncode == 0, r.stderr
        return r.stdout
    return _run


@pytest.fixture(scope="session")
def smollm2_path():
    r = subprocess.run(["bash", str(ROOT / "scripts" / "fetch_model.sh")], capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="session")
def stories():
    llm = anvil.LLM(STORIES_MODEL, tokenizer=STORIES_TOKENIZER, max_num_seqs=16)
    yield llm
    llm.close()


@pytest.fixture(scope="session")
def smollm2(smollm2_path):
    llm = anvil.LLM(smollm2_path, max_model_len=1024, max_num_seqs=4)
    yield llm
    llm.close()

"""Shared fixtures for end-to-end tests: the built `anvil` binary and the reference data paths."""
import os
import pathlib
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
STORIES = ROOT.parent / "shared" / "models" / "stories260K"
DATA = ROOT / "tests" / "data"


@pytest.fixture(scope="session")
def anvil_bin():
    path = os.environ.get("ANVIL_BIN", str(ROOT / "build" / "anvil"))
    assert pathlib.Path(path).exists(), f"build anvil first ({path})"
    return path


@pytest.fixture(scope="session")
def run(anvil_bin):
    def _run(*args, timeout=120):
        return subprocess.run([anvil_bin, *map(str, args)], capture_output=True, text=True, timeout=timeout)
    return _run

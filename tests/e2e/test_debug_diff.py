"""`anvil debug-dump` and tools/hf_debug_diff.py: the layer-by-layer comparison with Hugging Face.

The dump itself is checked everywhere. The comparison needs torch and transformers: it runs when ANVIL_HF_PYTHON
names a Python that has them (e.g. /work/venv-hf/bin/python) and is skipped otherwise. It must find no difference
on a fixture, and on a copy of the fixture with one layer-1 weight changed it must name layer 1 as the first.
"""
import json
import os
import shutil
import subprocess

import pytest

from conftest import DATA, ROOT

FIXTURE = DATA / "hf" / "pythia_neox"
IDS = "[3, 17, 200, 45, 9, 128, 77]"


def test_dump_lists_every_layers_intermediates_in_order(run, tmp_path):
    out = tmp_path / "dump.json"
    proc = run("debug-dump", "--model", FIXTURE, "--ids", IDS, "--out", out)
    assert proc.returncode == 0, proc.stderr
    dump = json.loads(out.read_text())
    assert dump["token_ids"] == json.loads(IDS)
    keys = [(t["name"], t["layer"]) for t in dump["tensors"]]
    for layer in (0, 1):
        for name in ("attn_norm", "ffn_norm", "attn_out", "ffn_out"):
            assert (name, layer) in keys, (name, layer)
    assert keys[0] == ("embed", -1) and keys[-1] == ("logits", -1)
    logits = dump["tensors"][-1]
    assert logits["shape"] == [7, 256] and len(logits["values"]) == 7 * 256
    assert max(abs(v) for v in logits["values"]) > 0.5


def test_dump_rejects_bad_ids_with_a_clean_error(run, tmp_path):
    proc = run("debug-dump", "--model", FIXTURE, "--ids", "[1, 99999]", "--out", tmp_path / "d.json")
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1].startswith("error:") and "99999" in proc.stderr


def hf_python():
    py = os.environ.get("ANVIL_HF_PYTHON")
    if not py:
        pytest.skip("ANVIL_HF_PYTHON is not set (a Python with torch and transformers)")
    ok = subprocess.run([py, "-c", "import torch, transformers"], capture_output=True).returncode == 0
    if not ok:
        pytest.skip(f"{py} cannot import torch and transformers")
    return py


def diff(py, model, dump):
    return subprocess.run([py, str(ROOT / "tools" / "hf_debug_diff.py"), "--model", str(model), "--dump", str(dump)],
                          capture_output=True, text=True, timeout=600)


def test_diff_finds_no_difference_on_a_fixture(run, tmp_path):
    py = hf_python()
    out = tmp_path / "dump.json"
    assert run("debug-dump", "--model", FIXTURE, "--ids", IDS, "--out", out).returncode == 0
    proc = diff(py, FIXTURE, out)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "agree within" in proc.stdout


def test_diff_names_the_first_layer_that_differs(run, tmp_path):
    py = hf_python()
    broken = tmp_path / "broken"
    shutil.copytree(FIXTURE, broken)
    # Shift one bias of layer 1's MLP output projection in Anvil's copy only.
    edit = (
        "import sys; from safetensors.torch import load_file, save_file\n"
        "p = sys.argv[1]; t = load_file(p)\n"
        "t['gpt_neox.layers.1.mlp.dense_4h_to_h.bias'] += 0.5\n"
        "save_file(t, p, metadata={'format': 'pt'})\n"
    )
    subprocess.run([py, "-c", edit, str(broken / "model.safetensors")], check=True)
    out = tmp_path / "dump.json"
    assert run("debug-dump", "--model", broken, "--ids", IDS, "--out", out).returncode == 0
    proc = diff(py, FIXTURE, out)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "first difference: layer 1, ffn_out" in proc.stdout, proc.stdout

"""Helpers for the `anvil serve` tests: start a real server process on a free loopback port, talk to it with the
official `openai` client or raw sockets, read its /metrics, send it signals. (No tests here.)"""
import json
import os
import pathlib
import re
import signal
import socket
import subprocess
import time

import httpx
import openai
import pytest

from conftest import DATA, ROOT, STORIES

STORIES_MODEL = ["--model", str(STORIES / "stories260K.bin"), "--tokenizer", str(STORIES / "tok512.bin")]
CHAT_TEMPLATE = DATA / "chat_templates" / "llama2_chat.jinja"
DEMO_MODEL = pathlib.Path(os.environ.get("ANVIL_MODEL_CACHE", pathlib.Path.home() / ".cache" / "anvil" / "models")) \
    / "SmolLM2-135M-Instruct.Q4_1.gguf"


def slow_model_dir(tmp_path_factory):
    """A random-weight Llama config big enough that a token takes milliseconds on the CPU (so requests stay in
    flight long enough to disconnect from, drain, or fall behind), with stories260K's 512-token vocabulary."""
    d = tmp_path_factory.mktemp("slow_model")
    (d / "config.json").write_text(json.dumps({
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 512,
        "intermediate_size": 1536, "num_hidden_layers": 4, "num_attention_heads": 8, "num_key_value_heads": 4,
        "max_position_embeddings": 2048, "vocab_size": 512, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
        "bos_token_id": 1, "eos_token_id": 2, "tie_word_embeddings": True, "torch_dtype": "float32"}))
    return ["--model", str(d), "--load-format", "dummy", "--tokenizer", str(STORIES / "tok512.bin")]


class Server:
    """A running `anvil serve` process (stderr goes to a log file, read for the bound port)."""

    def __init__(self, anvil_bin, args, log_path, api_key=None, timeout=60):
        self.api_key = api_key
        self.log_path = pathlib.Path(log_path)
        self.log = open(self.log_path, "wb")
        cmd = [anvil_bin, "serve", *map(str, args), "--port", "0", "--threads", "1"]
        if api_key:
            cmd += ["--api-key", api_key]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=self.log, cwd=ROOT)
        deadline = time.time() + timeout
        self.port = None
        while time.time() < deadline:
            m = re.search(r"listening on http://[^:]+:(\d+)", self.log_path.read_text(errors="replace"))
            if m:
                self.port = int(m.group(1))
                break
            if self.proc.poll() is not None:
                raise RuntimeError(f"anvil serve exited with {self.proc.returncode}:\n{self.log_text()}")
            time.sleep(0.05)
        if self.port is None:
            self.proc.kill()
            raise RuntimeError(f"anvil serve did not start:\n{self.log_text()}")
        self.base = f"http://127.0.0.1:{self.port}"

    def log_text(self):
        return self.log_path.read_text(errors="replace")

    def client(self, **kwargs):
        return openai.OpenAI(base_url=self.base + "/v1", api_key=self.api_key or "none", max_retries=0,
                             timeout=kwargs.pop("timeout", 60), **kwargs)

    def http(self, timeout=60):
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        return httpx.Client(base_url=self.base, timeout=timeout, headers=headers)

    def metrics(self):
        """/metrics as {name: value} (labels dropped, except `finished_reason` and `code` kept in the name)."""
        text = httpx.get(self.base + "/metrics", timeout=10).text
        out = {}
        for line in text.splitlines():
            if not line or line.startswith("#"):
                continue
            name, value = line.rsplit(" ", 1)
            base = name.split("{", 1)[0]
            for key in ("finished_reason", "code", "le"):
                m = re.search(key + r'="([^"]*)"', name)
                if m:
                    base += f"[{m.group(1)}]"
            out[base] = float(value)
        return out

    def wait_metric(self, name, predicate, timeout=10.0):
        deadline = time.time() + timeout
        value = None
        while time.time() < deadline:
            value = self.metrics().get(name)
            if value is not None and predicate(value):
                return value
            time.sleep(0.05)
        raise AssertionError(f"{name} stayed at {value}")

    def num_threads(self):
        status = pathlib.Path(f"/proc/{self.proc.pid}/status").read_text()
        return int(re.search(r"^Threads:\s+(\d+)", status, re.M).group(1))

    def is_alive(self):
        return self.proc.poll() is None

    def terminate(self, timeout=30):
        """SIGTERM, then the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        finally:
            self.log.close()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def raw_request(method, path, body=b"", headers=None, http_version="1.1"):
    """The bytes of one HTTP request (Content-Length set from the body unless given)."""
    headers = dict(headers or {})
    headers.setdefault("Host", "127.0.0.1")
    if body or method == "POST":
        headers.setdefault("Content-Length", str(len(body)))
        headers.setdefault("Content-Type", "application/json")
    head = f"{method} {path} HTTP/{http_version}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    return head.encode() + b"\r\n" + body


class ResponseReader:
    """Reads HTTP responses (Content-Length or chunked) from a blocking socket, keeping bytes that belong to the
    next."""

    def __init__(self, sock, timeout=30):
        self.sock = sock
        self.sock.settimeout(timeout)
        self.data = b""

    def _fill(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed mid-response: {self.data!r}")
        self.data += chunk

    def _line(self):
        while b"\r\n" not in self.data:
            self._fill()
        line, self.data = self.data.split(b"\r\n", 1)
        return line

    def _take(self, n):
        while len(self.data) < n:
            self._fill()
        out, self.data = self.data[:n], self.data[n:]
        return out

    def response(self, head_request=False):
        """(status, headers, body bytes) of the next response (a chunked body de-chunked; none for a HEAD)."""
        while b"\r\n\r\n" not in self.data:
            self._fill()
        head, self.data = self.data.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {k.lower(): v.strip() for k, v in (l.split(":", 1) for l in lines[1:])}
        if head_request:
            return status, headers, b""
        if headers.get("transfer-encoding") == "chunked":
            body = b""
            while True:
                size = int(self._line().split(b";")[0], 16)
                if size == 0:
                    assert self._line() == b""
                    return status, headers, body
                body += self._take(size)
                assert self._take(2) == b"\r\n"
        return status, headers, self._take(int(headers.get("content-length", "0")))

    def closed(self, timeout=10):
        """True when the server closes the connection (what is left unread, if anything, is dropped)."""
        self.sock.settimeout(timeout)
        try:
            while self.sock.recv(65536):
                pass
            return True
        except ConnectionResetError:
            return True
        except socket.timeout:
            return False


def read_response(sock, timeout=30):
    return ResponseReader(sock, timeout).response()


def connect(port):
    return socket.create_connection(("127.0.0.1", port), timeout=30)


def assert_api_error(response, status, param=None, code=None, type_="invalid_request_error"):
    """An OpenAI-style error answer: the status, and {"error": {"message", "type", "param", "code"}}."""
    assert response.status_code == status, (response.status_code, response.text)
    body = response.json()
    err = body["error"]
    assert set(err) >= {"message", "type", "param", "code"}, body
    assert err["message"], body
    assert err["type"] == type_, body
    if param is not None:
        assert err["param"] == param, body
    if code is not None:
        assert err["code"] == code, body
    return err


@pytest.fixture(scope="session")
def demo_model():
    if not DEMO_MODEL.exists():
        pytest.skip(f"demo model not in the cache ({DEMO_MODEL}); bash scripts/fetch_model.sh fetches it")
    return DEMO_MODEL

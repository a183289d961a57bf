"""`anvil serve` under stress: clients that disconnect mid-request (their requests aborted, KV blocks freed),
32 concurrent clients (each gets what it gets alone), a bounded fuzz of a few thousand malformed bodies and raw
HTTP garbage (the server answers each with a 4xx and stays up), and SIGTERM draining (running requests finish,
or are aborted at --shutdown-timeout; exit 0)."""
import concurrent.futures
import json
import random
import socket
import threading
import time

import httpx
import pytest

from test_server_common import (CHAT_TEMPLATE, STORIES_MODEL, ResponseReader, Server, connect, raw_request,
                                slow_model_dir)

MODEL = "stories260K.bin"


@pytest.fixture(scope="module")
def stories(anvil_bin, tmp_path_factory):
    s = Server(anvil_bin, [*STORIES_MODEL, "--chat-template", CHAT_TEMPLATE],
               tmp_path_factory.mktemp("srv") / "server.log")
    yield s
    assert s.terminate() == 0, s.log_text()


@pytest.fixture(scope="module")
def slow(anvil_bin, tmp_path_factory):
    s = Server(anvil_bin, [*slow_model_dir(tmp_path_factory), "--chat-template", CHAT_TEMPLATE],
               tmp_path_factory.mktemp("slow") / "server.log")
    yield s
    assert s.terminate() == 0, s.log_text()


LONG = {"prompt": "Once upon a time", "max_tokens": 1500, "ignore_eos": True}


def test_disconnect_mid_stream_frees_the_kv_cache(slow):
    before = slow.metrics()["anvil:client_aborts_total"]
    with slow.http() as h, h.stream("POST", "/v1/completions", json={**LONG, "stream": True, "n": 2}) as r:
        lines = (l for l in r.iter_lines() if l)
        for _ in range(5):
            assert next(lines).startswith("data: ")
        m = slow.metrics()
        assert m["anvil:kv_cache_usage_perc"] > 0 and m["anvil:num_requests_running"] == 2
    # Leaving the block closed the connection mid-stream.
    slow.wait_metric("anvil:kv_cache_usage_perc", lambda v: v == 0, timeout=5)
    m = slow.metrics()
    assert m["anvil:num_requests_running"] == 0 and m["anvil:num_requests_waiting"] == 0
    assert m["anvil:client_aborts_total"] == before + 1


def test_disconnect_while_waiting_for_a_whole_response(slow):
    with connect(slow.port) as s:
        s.sendall(raw_request("POST", "/v1/chat/completions", json.dumps(
            {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 1500, "ignore_eos": True}).encode()))
        slow.wait_metric("anvil:num_requests_running", lambda v: v == 1)
        assert slow.metrics()["anvil:kv_cache_usage_perc"] > 0
    slow.wait_metric("anvil:kv_cache_usage_perc", lambda v: v == 0, timeout=5)
    assert slow.metrics()["anvil:num_requests_running"] == 0
    with slow.http() as h:
        r = h.post("/v1/completions", json={"prompt": "Once", "max_tokens": 3})
        assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 3


def test_32_concurrent_clients_each_get_what_they_get_alone(stories):
    prompts = [f"Once upon a time there was a {w}" for w in
               ["dog", "cat", "girl", "boy", "bird", "tree", "car", "ball"]] * 4
    client = stories.client()
    alone = [client.completions.create(model=MODEL, prompt=p, max_tokens=32, temperature=0).choices[0].text
             for p in prompts[:8]]

    def one(i):
        c = stories.client()
        if i % 2:
            chunks = c.completions.create(model=MODEL, prompt=prompts[i], max_tokens=32, temperature=0, stream=True)
            return "".join(ch.choices[0].text for ch in chunks)
        return c.completions.create(model=MODEL, prompt=prompts[i], max_tokens=32, temperature=0).choices[0].text

    with concurrent.futures.ThreadPoolExecutor(32) as pool:
        together = list(pool.map(one, range(32)))
    assert together == [alone[i % 8] for i in range(32)]
    assert stories.metrics()["anvil:kv_cache_usage_perc"] == 0


# ---- fuzz ------------------------------------------------------------------------------------------------

def random_json(rng, depth=0):
    kind = rng.randrange(9 if depth < 4 else 6)
    if kind == 0:
        return None
    if kind == 1:
        return rng.random() < 0.5
    if kind == 2:
        return rng.choice([0, -1, 1, 2, 7, 2 ** 31, 2 ** 63, -2 ** 63, 10 ** 30, -10 ** 30])
    if kind == 3:
        return rng.choice([0.5, -0.5, 1e308, -1e308, 1e-320, 3.7, 2.0])
    if kind == 4:
        return "".join(chr(rng.randrange(0x20, 0x2FFF)) for _ in range(rng.randrange(0, 12)))
    if kind == 5:
        return rng.choice(["", "stop", "Once", "user", "assistant", "system", "text", "image_url"])
    if kind in (6, 7):
        return [random_json(rng, depth + 1) for _ in range(rng.randrange(0, 4))]
    return {rng.choice(["role", "content", "type", "text", "include_usage", "x"]): random_json(rng, depth + 1)
            for _ in range(rng.randrange(0, 4))}


COMPLETION = {"model": MODEL, "prompt": "Once upon a time", "max_tokens": 4, "temperature": 0.7, "top_p": 0.9,
              "n": 1, "stream": False, "stop": ["zz"], "seed": 3, "logprobs": 2, "presence_penalty": 0.1}
CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4, "temperature": 0.7,
        "logprobs": True, "top_logprobs": 2, "stream": True, "stream_options": {"include_usage": True}}


def fuzz_body(rng):
    """A malformed (or occasionally valid) body: (path, bytes)."""
    path, base = (("/v1/completions", COMPLETION) if rng.random() < 0.5 else ("/v1/chat/completions", CHAT))
    kind = rng.randrange(7)
    if kind == 0:  # random bytes
        return path, bytes(rng.randrange(256) for _ in range(rng.randrange(0, 200)))
    if kind == 1:  # truncated JSON
        text = json.dumps(base).encode()
        return path, text[:rng.randrange(0, len(text))]
    if kind == 2:  # a field with a value of another type or out of range
        body = dict(base)
        key = rng.choice([k for k in body if k != "max_tokens"] + ["max_tokens"])
        value = random_json(rng)
        if key == "max_tokens" and isinstance(value, int) and not isinstance(value, bool) and 8 < value < 10 ** 6:
            value = 4
        if key == "n" and isinstance(value, int) and not isinstance(value, bool) and value > 4:
            value = 300
        body[key] = value
        return path, json.dumps(body).encode()
    if kind == 3:  # deep nesting
        depth = rng.choice([10, 63, 64, 65, 200, 5000, 100000])
        opener, closer = rng.choice([(b"[", b"]"), (b'{"a":', b"}")])
        return path, b'{"prompt":' + opener * depth + b"1" + closer * depth + b"}"
    if kind == 4:  # a random document
        return path, json.dumps(random_json(rng)).encode()
    if kind == 5:  # flipped bytes
        text = bytearray(json.dumps(base).encode())
        for _ in range(rng.randrange(1, 6)):
            text[rng.randrange(len(text))] = rng.randrange(256)
        return path, bytes(text)
    body = dict(base)  # invalid UTF-8 or control characters inside strings
    blob = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 20)))
    text = json.dumps(body).encode().replace(b"Once upon a time", blob).replace(b"Hi", blob)
    return path, text


def test_fuzz_a_few_thousand_malformed_bodies(stories):
    rng = random.Random(1234)
    cases = [fuzz_body(rng) for _ in range(3000)]
    statuses = {}
    lock = threading.Lock()

    def worker(chunk):
        with stories.http(timeout=30) as h:
            for path, body in chunk:
                r = h.post(path, content=body, headers={"Content-Type": "application/json"})
                with lock:
                    statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
                assert r.status_code in (200, 400, 404), (r.status_code, body[:200], r.text[:300])
                if r.status_code >= 400:
                    err = r.json()["error"]
                    assert err["message"] and err["type"] == "invalid_request_error", r.text

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        list(pool.map(worker, [cases[i::4] for i in range(4)]))
    assert statuses.get(400, 0) > 2000, statuses
    assert stories.is_alive()
    # Raw HTTP garbage, one connection each.
    for _ in range(300):
        garbage = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 400)))
        if rng.random() < 0.5:
            garbage = b"POST /v1/completions HTTP/1.1\r\n" + garbage
        with socket.create_connection(("127.0.0.1", stories.port), timeout=10) as s:
            s.sendall(garbage)
            s.shutdown(socket.SHUT_WR)
            try:
                while s.recv(65536):
                    pass
            except ConnectionResetError:
                pass
    assert stories.is_alive()
    with stories.http() as h:
        assert h.get("/health").status_code == 200
        r = h.post("/v1/completions", json={"prompt": "Once upon a time", "max_tokens": 8, "temperature": 0})
        assert r.status_code == 200 and r.json()["choices"][0]["text"].startswith(", there was")
    stories.wait_metric("anvil:kv_cache_usage_perc", lambda v: v == 0)
    assert stories.metrics()["anvil:num_requests_running"] == 0


# ---- SIGTERM ---------------------------------------------------------------------------------------------

def stream_in_thread(server, body, out):
    def run():
        try:
            with httpx.stream("POST", server.base + "/v1/completions", json={**body, "stream": True},
                              timeout=60) as r:
                out["status"] = r.status_code
                out["events"] = []
                for line in r.iter_lines():
                    if line:
                        out["events"].append(line)
        except httpx.HTTPError as e:
            out["error"] = repr(e)
    t = threading.Thread(target=run)
    t.start()
    return t


def finish_reasons(events):
    return [json.loads(e[6:])["choices"][0]["finish_reason"] for e in events
            if e != "data: [DONE]" and json.loads(e[6:]).get("choices")]


def test_sigterm_lets_running_requests_finish(anvil_bin, tmp_path, tmp_path_factory):
    s = Server(anvil_bin, [*slow_model_dir(tmp_path_factory), "--shutdown-timeout", "30"], tmp_path / "server.log")
    out = {}
    t = stream_in_thread(s, {"prompt": "Once", "max_tokens": 400, "ignore_eos": True}, out)
    s.wait_metric("anvil:num_requests_running", lambda v: v == 1)
    # Two keep-alive connections opened before the signal: new requests on them are refused with 503 (and the
    # connection closed); new connections are not accepted at all.
    with connect(s.port) as a, connect(s.port) as b:
        for c in (a, b):
            c.sendall(raw_request("GET", "/health"))
            assert ResponseReader(c).response()[0] == 200
        s.proc.send_signal(15)
        s_time = time.time()
        while time.time() - s_time < 5:
            try:
                httpx.get(s.base + "/health", timeout=5)
                time.sleep(0.02)
            except httpx.ConnectError:
                break  # the listening socket is closed: the drain has begun
        a.sendall(raw_request("GET", "/health"))
        status, _, body = ResponseReader(a).response()
        assert status == 503 and b"shutting down" in body
        b.sendall(raw_request("POST", "/v1/completions", b'{"prompt": "x", "max_tokens": 2}'))
        status, _, body = ResponseReader(b).response()
        assert status == 503 and json.loads(body)["error"]["code"] == "shutting_down"
    assert s.is_alive()  # still draining the running request
    t.join(60)
    assert out["status"] == 200, out
    assert out["events"][-1] == "data: [DONE]"
    assert finish_reasons(out["events"])[-1] == "length"
    assert s.proc.wait(timeout=30) == 0
    assert "stopped" in s.log_text()


def test_sigterm_aborts_what_outlives_the_timeout(anvil_bin, tmp_path, tmp_path_factory):
    s = Server(anvil_bin, [*slow_model_dir(tmp_path_factory), "--shutdown-timeout", "0.5"], tmp_path / "server.log")
    out = {}
    t = stream_in_thread(s, {"prompt": "Once", "max_tokens": 2000, "ignore_eos": True}, out)
    whole = {}

    def post_whole():
        r = httpx.post(s.base + "/v1/completions", json={"prompt": "Once", "max_tokens": 2000, "ignore_eos": True},
                       timeout=60)
        whole["status"], whole["body"] = r.status_code, r.json()
    w = threading.Thread(target=post_whole)
    w.start()
    s.wait_metric("anvil:num_requests_running", lambda v: v == 2)
    t0 = time.time()
    s.proc.send_signal(15)
    assert s.proc.wait(timeout=20) == 0
    assert time.time() - t0 < 5
    t.join(10)
    assert out.get("status") == 200, out
    # OpenAI's finish reasons only: the cut stream ends "length", then an error event says why, then [DONE].
    assert out["events"][-1] == "data: [DONE]"
    assert finish_reasons(out["events"])[-1] == "length"
    error = json.loads(out["events"][-2][6:])["error"]
    assert error["code"] == "shutting_down" and error["type"] == "server_error" and "shut down" in error["message"]
    # A whole response has no room for both: the aborted one is a 503 saying why.
    w.join(10)
    assert whole["status"] == 503, whole
    assert whole["body"]["error"]["code"] == "shutting_down"

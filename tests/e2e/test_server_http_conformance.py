"""`anvil serve` against the HTTP/1.1 rules a hostile test campaign checked, over raw sockets: pipelined requests
(after a POST, after a stream, 100 in one write) all answered in order with the right bodies; empty lines between
requests; 411 for a body without a length, 501 for an unknown Transfer-Encoding, 400 without Host or with two
Authorization headers; HEAD on the GET routes; 408 for a request the idle timeout cut; /metrics behind the key
with --metrics-require-key. And the OpenAI side of the same campaign: chat roles, fields of one endpoint sent to
the other, lone surrogate escapes."""
import json

import httpx
import pytest

from test_server_common import (CHAT_TEMPLATE, STORIES_MODEL, ResponseReader, Server, assert_api_error, connect,
                                raw_request)


@pytest.fixture(scope="module")
def server(anvil_bin, tmp_path_factory):
    s = Server(anvil_bin, [*STORIES_MODEL, "--chat-template", CHAT_TEMPLATE],
               tmp_path_factory.mktemp("srv") / "server.log")
    yield s
    assert s.terminate() == 0, s.log_text()


def completion(prompt="Once upon a time", max_tokens=3, **kw):
    return {"prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "ignore_eos": True, **kw}


def post(path, body, **kw):
    return raw_request("POST", path, json.dumps(body).encode(), **kw)


def sse_events(body):
    """The JSON events of an SSE body, and whether it ended with [DONE]."""
    blocks = [b for b in body.split(b"\n\n") if b]
    assert all(b.startswith(b"data: ") for b in blocks), body
    done = blocks[-1] == b"data: [DONE]"
    return [json.loads(b[6:]) for b in blocks if b != b"data: [DONE]"], done


def alone(server, path, body):
    """What the request gets alone on a fresh connection (httpx)."""
    with server.http() as h:
        r = h.post(path, json=body)
        assert r.status_code == 200, r.text
        return r.json()


# ---- pipelining and keep-alive -----------------------------------------------------------------------------

@pytest.mark.parametrize("after", [b"\r\n", b"\r\n\r\n\n", "health", "post"])
def test_bytes_after_a_post_body_are_the_next_request(server, after):
    want = alone(server, "/v1/completions", completion())
    extra = {"health": raw_request("GET", "/health"), "post": post("/v1/completions", completion(max_tokens=2))}
    with connect(server.port) as s:
        reader = ResponseReader(s)
        s.sendall(post("/v1/completions", completion()) + extra.get(after, after))
        status, headers, body = reader.response()
        assert status == 200, body
        assert headers["connection"] == "keep-alive"
        assert json.loads(body)["choices"][0]["text"] == want["choices"][0]["text"]
        if after == "health":
            assert reader.response()[::2] == (200, b'{"status":"ok"}')
        elif after == "post":
            status, _, body = reader.response()
            assert status == 200 and json.loads(body)["usage"]["completion_tokens"] == 2
        s.sendall(b"\r\n" + raw_request("GET", "/health"))  # the connection is still good
        assert reader.response()[0] == 200


def test_requests_pipelined_after_a_stream(server):
    want = alone(server, "/v1/completions", completion(max_tokens=6))["choices"][0]["text"]
    with connect(server.port) as s:
        reader = ResponseReader(s)
        s.sendall(post("/v1/completions", completion(max_tokens=6, stream=True)) +
                  post("/v1/completions", completion(max_tokens=6)) + raw_request("GET", "/v1/models"))
        status, headers, body = reader.response()
        assert status == 200 and headers["transfer-encoding"] == "chunked"
        events, done = sse_events(body)
        assert done and "".join(e["choices"][0]["text"] for e in events) == want
        assert events[-1]["choices"][0]["finish_reason"] == "length"
        status, _, body = reader.response()
        assert status == 200 and json.loads(body)["choices"][0]["text"] == want
        status, _, body = reader.response()
        assert status == 200 and json.loads(body)["data"][0]["id"] == "stories260K.bin"


def test_100_requests_in_one_write_answered_in_order(server):
    words = ["dog", "cat", "girl", "boy", "bird"]
    requests = []  # (kind, path, body)
    for i in range(100):
        body = completion(f"Once upon a time there was a {words[i % 5]}", max_tokens=1 + i % 6)
        kind = ["completion", "stream", "health", "chat"][i % 4]
        if kind == "chat":
            body = {"messages": [{"role": "user", "content": words[i % 5]}], "max_tokens": 1 + i % 6,
                    "temperature": 0, "ignore_eos": True}
        requests.append((kind, body))
    wanted = {}
    for kind, body in requests:
        if kind in ("completion", "stream"):
            wanted[json.dumps(body)] = alone(server, "/v1/completions", body)["choices"][0]["text"]
        elif kind == "chat":
            wanted[json.dumps(body)] = alone(server, "/v1/chat/completions", body)["choices"][0]["message"]["content"]
    payload = b""
    for i, (kind, body) in enumerate(requests):
        if kind == "health":
            payload += raw_request("GET", "/health")
        elif kind == "chat":
            payload += post("/v1/chat/completions", body)
        else:
            payload += post("/v1/completions", {**body, "stream": kind == "stream"})
        if i % 7 == 3:
            payload += b"\r\n"  # stray empty lines between requests are ignored (RFC 9112 section 2.2)
    with connect(server.port) as s:
        reader = ResponseReader(s, timeout=60)
        s.sendall(payload)
        for i, (kind, body) in enumerate(requests):
            status, headers, raw = reader.response()
            assert status == 200, (i, raw)
            if kind == "health":
                assert raw == b'{"status":"ok"}', i
                continue
            if kind == "stream":
                events, done = sse_events(raw)
                assert done, i
                text = "".join(e["choices"][0]["text"] for e in events)
                assert sum(1 for e in events if e["choices"][0]["finish_reason"] == "length") == 1, i
            else:
                answer = json.loads(raw)
                assert answer["usage"]["completion_tokens"] == body["max_tokens"], (i, answer)
                choice = answer["choices"][0]
                text = choice["message"]["content"] if kind == "chat" else choice["text"]
            assert text == wanted[json.dumps(body)], (i, kind)


# ---- framing and headers -----------------------------------------------------------------------------------

def test_a_body_without_a_length_is_411_and_the_connection_closes(server):
    body = b'{"prompt": "GET /health HTTP/1.1", "max_tokens": 2}'
    with connect(server.port) as s:
        reader = ResponseReader(s)
        s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\r\n" + body)
        status, headers, raw = reader.response()
        assert status == 411, raw
        assert headers["connection"] == "close"
        assert json.loads(raw)["error"]["code"] == "length_required"
        assert reader.closed() and reader.data == b""  # the body was never answered as a request


@pytest.mark.parametrize("encoding", [b"gzip", b"gzip, chunked", b"chunked, gzip", b"identity"])
def test_transfer_encoding_other_than_chunked_is_501(server, encoding):
    with connect(server.port) as s:
        reader = ResponseReader(s)
        s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: " + encoding +
                  b"\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
        status, headers, raw = reader.response()
        assert status == 501, raw
        assert headers["connection"] == "close"
        assert reader.closed() and reader.data == b""


def test_two_transfer_encodings_are_refused_and_chunked_works(server):
    with connect(server.port) as s:
        reader = ResponseReader(s)
        s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                  b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
        status, _, _ = reader.response()
        assert status in (400, 501)
        assert reader.closed()
    body = json.dumps(completion(max_tokens=2)).encode()
    with connect(server.port) as s:
        reader = ResponseReader(s)
        s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" +
                  b"%x\r\n" % 10 + body[:10] + b"\r\n" + b"%x\r\n" % (len(body) - 10) + body[10:] + b"\r\n0\r\n\r\n")
        status, _, raw = reader.response()
        assert status == 200 and json.loads(raw)["usage"]["completion_tokens"] == 2


def test_host_header(server):
    with connect(server.port) as s:
        reader = ResponseReader(s)
        s.sendall(b"GET /health HTTP/1.1\r\n\r\n")
        status, _, raw = reader.response()
        assert status == 400 and b"Host" in raw
        s.sendall(b"GET /health HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n")
        status, _, raw = reader.response()
        assert status == 400 and b"more than one Host" in raw
        s.sendall(b"GET /health HTTP/1.1\r\nHost: a\r\n\r\n")  # the connection goes on
        assert reader.response()[0] == 200
    with connect(server.port) as s:
        s.sendall(b"GET /health HTTP/1.0\r\n\r\n")  # HTTP/1.0 needs none
        status, headers, raw = ResponseReader(s).response()
        assert status == 200 and raw == b'{"status":"ok"}'


def test_two_authorization_headers_are_400(server):
    with connect(server.port) as s:
        reader = ResponseReader(s)
        body = json.dumps(completion()).encode()
        s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer a\r\nAuthorization: Bearer b\r\n"
                  b"Content-Length: %d\r\n\r\n" % len(body) + body)
        status, _, raw = reader.response()
        assert status == 400 and b"more than one Authorization" in raw
        s.sendall(raw_request("GET", "/health"))  # framing was fine: the connection goes on
        assert reader.response()[0] == 200


@pytest.mark.parametrize("path", ["/health", "/v1/models", "/metrics"])
def test_head_on_get_routes(server, path):
    with connect(server.port) as s:
        reader = ResponseReader(s)
        # HEAD then GET in one write: had the HEAD answer carried a body, the GET answer would not parse.
        s.sendall(raw_request("HEAD", path) + raw_request("GET", path))
        status, head_headers, _ = reader.response(head_request=True)
        assert status == 200
        status, headers, raw = reader.response()
        assert status == 200 and raw
        assert head_headers["content-type"] == headers["content-type"]
        if path != "/metrics":  # the counters move between the two
            assert int(head_headers["content-length"]) == len(raw)
        s.sendall(raw_request("HEAD", "/v1/completions"))
        status, headers, _ = reader.response(head_request=True)
        assert status == 405 and headers["allow"] == "POST"
        s.sendall(raw_request("GET", "/health"))
        assert reader.response()[::2] == (200, b'{"status":"ok"}')


def test_idle_timeout_mid_request_is_408(anvil_bin, tmp_path):
    s = Server(anvil_bin, [*STORIES_MODEL, "--idle-timeout", "1"], tmp_path / "server.log")
    try:
        partial = [b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Le",
                   b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"prompt\": "]
        for sent in partial:
            with connect(s.port) as c:
                reader = ResponseReader(c, timeout=10)
                c.sendall(sent)
                status, headers, raw = reader.response()
                assert status == 408, raw
                assert headers["connection"] == "close"
                assert json.loads(raw)["error"]["code"] == "request_timeout"
                assert reader.closed()
        with connect(s.port) as c:  # idle between requests: closed without an answer
            reader = ResponseReader(c, timeout=10)
            c.sendall(raw_request("GET", "/health") + b"\r\n")
            assert reader.response()[0] == 200
            assert reader.closed() and reader.data == b""
    finally:
        assert s.terminate() == 0, s.log_text()


def test_metrics_require_key(anvil_bin, tmp_path, run):
    s = Server(anvil_bin, [*STORIES_MODEL, "--metrics-require-key"], tmp_path / "server.log", api_key="k")
    try:
        r = httpx.get(s.base + "/metrics")
        assert_api_error(r, 401, code="invalid_api_key")
        assert httpx.head(s.base + "/metrics").status_code == 401
        r = httpx.get(s.base + "/metrics", headers={"Authorization": "Bearer k"})
        assert r.status_code == 200 and "anvil:num_requests_running" in r.text
        assert httpx.get(s.base + "/health").status_code == 200  # health stays open
    finally:
        assert s.terminate() == 0, s.log_text()
    from test_cli import assert_clean_error
    assert_clean_error(run("serve", *STORIES_MODEL, "--port", "0", "--metrics-require-key"), "--api-key")


# ---- the OpenAI side -------------------------------------------------------------------------------------

CHAT = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}


@pytest.mark.parametrize("path, body, param", [
    ("/v1/chat/completions", {"messages": [{"role": "bot", "content": "hi"}]}, "messages[0].role"),
    ("/v1/chat/completions", {"messages": [{"role": "User", "content": "hi"}]}, "messages[0].role"),
    ("/v1/completions", {**completion(), "tools": [{"type": "function"}]}, "tools"),
    ("/v1/completions", {**completion(), "response_format": {"type": "json_object"}}, "response_format"),
    ("/v1/completions", {**completion(), "messages": [{"role": "user", "content": "hi"}]}, "messages"),
    ("/v1/completions", {**completion(), "top_logprobs": 2}, "top_logprobs"),
    ("/v1/chat/completions", {**CHAT, "prompt": "x"}, "prompt"),
    ("/v1/chat/completions", {**CHAT, "echo": True}, "echo"),
    ("/v1/completions", {**completion(), "max_completion_tokens": 0}, "max_completion_tokens"),
    ("/v1/chat/completions", {**CHAT, "max_completion_tokens": 0}, "max_completion_tokens"),
    ("/v1/completions", {**completion(), "user": 5}, "user"),
    ("/v1/chat/completions", {**CHAT, "user": {"id": 1}}, "user"),
])
def test_fields_checked_the_same_on_both_endpoints(server, path, body, param):
    with server.http() as h:
        err = assert_api_error(h.post(path, json=body), 400, param=param)
    assert param.split("[")[0] in err["message"]


def test_max_completion_tokens_is_honoured_on_completions(server):
    with server.http() as h:
        r = h.post("/v1/completions", json={**completion(max_tokens=9), "max_completion_tokens": 4, "user": "u"})
        assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 4


@pytest.mark.parametrize("escape", [rb"\ud800", rb"\uDFFF", rb"\uD800\u0041", rb"\uDC00\uD800"])
def test_lone_surrogate_escapes_are_accepted(server, escape):
    with server.http() as h:
        body = b'{"prompt": "Once ' + escape + b' upon", "max_tokens": 2, "ignore_eos": true}'
        r = h.post("/v1/completions", content=body, headers={"Content-Type": "application/json"})
        assert r.status_code == 200, r.text
        assert r.json()["usage"]["completion_tokens"] == 2
        body = b'{"messages": [{"role": "user", "content": "hi ' + escape + b'"}], "max_tokens": 2}'
        r = h.post("/v1/chat/completions", content=body, headers={"Content-Type": "application/json"})
        assert r.status_code == 200, r.text
        # U+FFFD is three bytes of UTF-8: the prompt is longer than without the escape.
        plain = h.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi "}],
                                                     "max_tokens": 2}).json()
        assert r.json()["usage"]["prompt_tokens"] > plain["usage"]["prompt_tokens"]

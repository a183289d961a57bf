"""Every error `anvil serve` gives, with OpenAI's error JSON naming the field: malformed and out-of-range bodies
(400), a prompt longer than the context (400), an unknown model or route (404), a wrong method (405), a body over
the limit (413), a full queue (429), a missing or wrong API key (401), chat without a template (400), malformed
HTTP; and the server keeps answering afterwards."""
import socket
import threading
import time

import httpx
import openai
import pytest

from test_server_common import (CHAT_TEMPLATE, STORIES_MODEL, ResponseReader, Server, assert_api_error, connect,
                                raw_request, read_response, slow_model_dir)


@pytest.fixture(scope="module")
def server(anvil_bin, tmp_path_factory):
    s = Server(anvil_bin, [*STORIES_MODEL, "--chat-template", CHAT_TEMPLATE, "--max-body-bytes", "65536"],
               tmp_path_factory.mktemp("srv") / "server.log")
    yield s
    assert s.terminate() == 0, s.log_text()


def post(server, path, body, **kw):
    with server.http() as h:
        if isinstance(body, (bytes, str)):
            return h.post(path, content=body, headers={"Content-Type": "application/json"}, **kw)
        return h.post(path, json=body, **kw)


@pytest.mark.parametrize("body, param", [
    ({"prompt": "x", "temperature": "hot"}, "temperature"),
    ({"prompt": "x", "temperature": 2.5}, "temperature"),
    ({"prompt": "x", "temperature": -0.1}, "temperature"),
    ({"prompt": "x", "top_p": 0}, "top_p"),
    ({"prompt": "x", "top_p": 1.5}, "top_p"),
    ({"prompt": "x", "top_k": -2}, "top_k"),
    ({"prompt": "x", "min_p": 1.5}, "min_p"),
    ({"prompt": "x", "presence_penalty": 3}, "presence_penalty"),
    ({"prompt": "x", "frequency_penalty": -2.5}, "frequency_penalty"),
    ({"prompt": "x", "repetition_penalty": 0}, "repetition_penalty"),
    ({"prompt": "x", "max_tokens": 0}, "max_tokens"),
    ({"prompt": "x", "max_tokens": 1.5}, "max_tokens"),
    ({"prompt": "x", "max_tokens": 10 ** 30}, "max_tokens"),
    ({"prompt": "x", "n": 0}, "n"),
    ({"prompt": "x", "n": 10 ** 6}, "n"),
    ({"prompt": "x", "logprobs": 21}, "logprobs"),
    ({"prompt": "x", "logprobs": True}, "logprobs"),
    ({"prompt": "x", "seed": "abc"}, "seed"),
    ({"prompt": "x", "seed": 1e300}, "seed"),
    ({"prompt": "x", "stop": 5}, "stop"),
    ({"prompt": "x", "stop": ["a"] * 17}, "stop"),
    ({"prompt": "x", "stop": [""]}, "stop"),
    ({"prompt": "x", "stream": "yes"}, "stream"),
    ({"prompt": "x", "stream_options": {"include_usage": True}}, "stream_options"),
    ({"prompt": "x", "stream": True, "stream_options": {"include_usage": 1}}, "stream_options.include_usage"),
    ({"prompt": "x", "echo": True, "logprobs": 1}, "echo"),
    ({"prompt": "x", "logit_bias": {"5": 10}}, "logit_bias"),
    ({"prompt": "x", "best_of": 3}, "best_of"),
    ({"prompt": "x", "suffix": "tail"}, "suffix"),
    ({"prompt": "x", "model": 5}, "model"),
    ({"prompt": "x", "ignore_eos": "no"}, "ignore_eos"),
    ({}, "prompt"),
    ({"prompt": 5}, "prompt"),
    ({"prompt": []}, "prompt"),
    ({"prompt": [1, "a"]}, "prompt"),
    ({"prompt": [[1, 2], []]}, "prompt"),
    ({"prompt": [-1]}, "prompt"),
    ({"prompt": [100000]}, "prompt"),
    ({"prompt": ["a"] * 65}, "prompt"),
    ({"prompt": ["a", "b"], "n": 200}, "n"),
])
def test_bad_completion_fields_name_the_field(server, body, param):
    assert_api_error(post(server, "/v1/completions", body), 400, param=param)


@pytest.mark.parametrize("body, param", [
    ({}, "messages"),
    ({"messages": []}, "messages"),
    ({"messages": "hi"}, "messages"),
    ({"messages": [5]}, "messages[0]"),
    ({"messages": [{"content": "hi"}]}, "messages[0].role"),
    ({"messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]},
     "messages[0].content[0].type"),
    ({"messages": [{"role": "user", "content": "hi"}], "logprobs": 3}, "logprobs"),
    ({"messages": [{"role": "user", "content": "hi"}], "top_logprobs": 2}, "top_logprobs"),
    ({"messages": [{"role": "user", "content": "hi"}], "logprobs": True, "top_logprobs": 50}, "top_logprobs"),
    ({"messages": [{"role": "user", "content": "hi"}], "max_completion_tokens": -1}, "max_completion_tokens"),
    ({"messages": [{"role": "user", "content": "hi"}], "tools": [{"type": "function"}]}, "tools"),
    ({"messages": [{"role": "user", "content": "hi"}], "response_format": {"type": "json_object"}},
     "response_format"),
    # The template's own check (roles must alternate user/assistant) comes back as a 400 on messages.
    ({"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]}, "messages"),
])
def test_bad_chat_fields_name_the_field(server, body, param):
    assert_api_error(post(server, "/v1/chat/completions", body), 400, param=param)


@pytest.mark.parametrize("body", [b"", b"{", b"[1, 2]", b'"text"', b"{\"prompt\": \"x\",}", b"\xff\xfe{}",
                                  b'{"prompt": "\xff"}', b"[" * 100 + b"]" * 100, b'{"prompt": 1e999}', b"null"])
def test_malformed_json_is_a_400(server, body):
    err = assert_api_error(post(server, "/v1/completions", body), 400)
    assert err["param"] is None


def test_prompt_longer_than_the_context(server):
    err = assert_api_error(post(server, "/v1/completions", {"prompt": [5] * 600}), 400, param="prompt",
                           code="context_length_exceeded")
    assert "512" in err["message"] and "600" in err["message"]
    words = "Once upon a time " * 200
    assert_api_error(post(server, "/v1/completions", {"prompt": words}), 400, code="context_length_exceeded")
    assert_api_error(post(server, "/v1/chat/completions", {"messages": [{"role": "user", "content": words}]}), 400,
                     param="messages", code="context_length_exceeded")
    err = assert_api_error(post(server, "/v1/completions", {"prompt": "Once", "max_tokens": 600}), 400,
                           param="max_tokens", code="context_length_exceeded")
    assert "600" in err["message"]


def test_unknown_model_route_and_method(server):
    err = assert_api_error(post(server, "/v1/completions", {"prompt": "x", "model": "gpt-4"}), 404, param="model",
                           code="model_not_found")
    assert "gpt-4" in err["message"]
    with pytest.raises(openai.NotFoundError):
        server.client().completions.create(model="gpt-4", prompt="x", max_tokens=2)
    with server.http() as h:
        assert_api_error(h.get("/v1/nothing"), 404)
        assert_api_error(h.get("/nothing"), 404)
        r = h.get("/v1/completions")
        assert_api_error(r, 405)
        assert r.headers["allow"] == "POST"
        assert h.post("/health").status_code == 405
    # The model's path is accepted as its name too.
    ok = post(server, "/v1/completions", {"prompt": "x", "max_tokens": 2, "model": "stories260K.bin"})
    assert ok.status_code == 200


def test_the_openai_client_raises_bad_request(server):
    with pytest.raises(openai.BadRequestError) as e:
        server.client().completions.create(model="stories260K.bin", prompt="x", temperature=9)
    assert e.value.body["param"] == "temperature"


def test_body_over_the_limit_is_a_413(server):
    body = b'{"prompt": "' + b"a" * 70000 + b'"}'
    assert_api_error(post(server, "/v1/completions", body), 413, code="request_too_large")
    # Chunked, without a Content-Length, too.
    with server.http() as h:
        r = h.post("/v1/completions", content=iter([b'{"prompt": "', b"a" * 70000, b'"}']),
                   headers={"Content-Type": "application/json"})
    assert_api_error(r, 413)
    assert post(server, "/v1/completions", {"prompt": "Once", "max_tokens": 2}).status_code == 200


def test_malformed_http_is_a_400_and_the_server_goes_on(server):
    for garbage in [b"GARBAGE\r\n\r\n", b"GET / HTTP/9.9\r\n\r\n", b"POST /v1/completions HTTP/1.1\r\n"
                    b"Content-Length: abc\r\n\r\n", b"POST /v1/completions HTTP/1.1\r\nContent-Length: 5\r\n"
                    b"Transfer-Encoding: chunked\r\n\r\nzz\r\n"]:
        with connect(server.port) as s:
            s.sendall(garbage)
            status, _, body = read_response(s)
            assert status == 400, (garbage, status, body)
    with connect(server.port) as s:
        s.sendall(raw_request("GET", "/health", headers={"X-Big": "a" * 20000}))
        status, _, _ = read_response(s)
        assert status == 431
    assert post(server, "/v1/completions", {"prompt": "Once", "max_tokens": 2}).status_code == 200


def test_keep_alive_pipelining_and_expect_continue(server):
    with connect(server.port) as s:
        reader = ResponseReader(s)
        s.sendall(raw_request("GET", "/health") + raw_request("POST", "/v1/completions",
                                                              b'{"prompt":"Once","max_tokens":3,"temperature":0}'))
        assert reader.response()[0] == 200
        status, _, body = reader.response()
        assert status == 200 and b"text_completion" in body
        body = b'{"prompt":"Once","max_tokens":3}'
        head = raw_request("POST", "/v1/completions", body, headers={"Expect": "100-continue"})[:-len(body)]
        s.sendall(head)
        status, _, _ = reader.response()  # the interim 100 before the body is sent
        assert status == 100
        s.sendall(body)
        status, _, body = reader.response()
        assert status == 200, body


def test_chat_without_a_template(anvil_bin, tmp_path):
    s = Server(anvil_bin, STORIES_MODEL, tmp_path / "server.log")
    try:
        err = assert_api_error(post(s, "/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}]}),
                               400, param="messages", code="no_chat_template")
        assert "--chat-template" in err["message"]
        assert post(s, "/v1/completions", {"prompt": "Once", "max_tokens": 2}).status_code == 200
    finally:
        assert s.terminate() == 0


def test_api_key(anvil_bin, tmp_path):
    s = Server(anvil_bin, STORIES_MODEL, tmp_path / "server.log", api_key="sekret")
    try:
        body = {"prompt": "Once", "max_tokens": 2}
        r = httpx.post(s.base + "/v1/completions", json=body)
        assert_api_error(r, 401, code="invalid_api_key")
        assert r.headers["www-authenticate"] == "Bearer"
        r = httpx.post(s.base + "/v1/completions", json=body, headers={"Authorization": "Bearer wrong"})
        assert_api_error(r, 401)
        assert_api_error(httpx.get(s.base + "/v1/models", headers={"Authorization": "sekret"}), 401)
        assert httpx.post(s.base + "/v1/completions", json=body,
                          headers={"Authorization": "Bearer sekret"}).status_code == 200
        assert s.client().models.list().data[0].id == "stories260K.bin"
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=s.base + "/v1", api_key="nope", max_retries=0).models.list()
        assert httpx.get(s.base + "/health").status_code == 200  # health and metrics stay open
        assert httpx.get(s.base + "/metrics").status_code == 200
    finally:
        assert s.terminate() == 0


def test_full_queue_is_a_429(anvil_bin, tmp_path, tmp_path_factory):
    s = Server(anvil_bin, [*slow_model_dir(tmp_path_factory), "--max-num-seqs", "1", "--max-waiting", "1"],
               tmp_path / "server.log")
    try:
        long_body = {"prompt": "Once", "max_tokens": 1000, "ignore_eos": True, "stream": True}
        results = {}
        done = threading.Event()

        def stream(name):
            with httpx.stream("POST", s.base + "/v1/completions", json=long_body, timeout=60) as r:
                results[name] = r.status_code
                for _ in r.iter_lines():
                    if done.is_set():
                        break  # leaving the block closes the connection: the request is aborted

        first = threading.Thread(target=stream, args=("running",))
        first.start()
        s.wait_metric("anvil:num_requests_running", lambda v: v == 1)
        s.wait_metric("anvil:num_requests_pending", lambda v: v == 0)
        second = threading.Thread(target=stream, args=("waiting",))
        second.start()
        s.wait_metric("anvil:num_requests_pending", lambda v: v == 1)
        r = httpx.post(s.base + "/v1/completions", json={"prompt": "Once", "max_tokens": 2}, timeout=30)
        assert_api_error(r, 429, code="queue_full", type_="rate_limit_error")
        assert r.headers["retry-after"] == "1"
        with pytest.raises(openai.RateLimitError):
            s.client().completions.create(model=s.client().models.list().data[0].id, prompt="Once", max_tokens=2)
        done.set()
        first.join(60)
        # The first one gone, the waiting one runs.
        s.wait_metric("anvil:num_requests_pending", lambda v: v == 0)
        second.join(60)
        assert results == {"running": 200, "waiting": 200}
        s.wait_metric("anvil:kv_cache_usage_perc", lambda v: v == 0)
        assert httpx.post(s.base + "/v1/completions", json={"prompt": "Once", "max_tokens": 2},
                          timeout=30).status_code == 200
    finally:
        assert s.terminate() == 0


def test_startup_errors_are_one_line(run, server):
    from test_cli import assert_clean_error
    assert_clean_error(run("serve", *STORIES_MODEL, "--host", "nope", "--port", "0"), "--host 'nope'")
    assert_clean_error(run("serve", *STORIES_MODEL, "--port", str(server.port)), f"127.0.0.1:{server.port}",
                       "in use")
    assert_clean_error(run("serve", *STORIES_MODEL, "--port", "0", "--chat-template", "/nonexistent/t.jinja"),
                       "/nonexistent/t.jinja")
    assert_clean_error(run("serve", "--model", "/nonexistent/model.bin", "--port", "0"), "/nonexistent/model.bin")

"""Bounded load tests of `anvil serve`'s event-driven I/O on loopback: 1,000 concurrent streaming connections cost
no thread each (the process keeps a handful), a client that stops reading does not slow the others, and one that
falls too far behind loses its request (bounded buffering) while everyone else carries on."""
import asyncio
import json
import resource
import socket
import time

import pytest

from test_server_common import STORIES_MODEL, Server

MAX_THREADS = 32


def raise_fd_limit(need):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        if hard != resource.RLIM_INFINITY and hard < need:
            pytest.skip(f"open-file limit {hard} < {need}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))


def dechunk(body):
    out, pos = b"", 0
    while True:
        end = body.find(b"\r\n", pos)
        if end < 0:
            return out, False
        size = int(body[pos:end], 16)
        if size == 0:
            return out, True
        out += body[end + 2:end + 2 + size]
        pos = end + 2 + size + 2


def parse_stream(raw):
    """(status, events as parsed JSON, saw [DONE], complete chunked body) from a whole raw response."""
    head, _, body = raw.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1]) if head else 0
    data, complete = dechunk(body)
    events, done = [], False
    for block in data.split(b"\n\n"):
        if not block.startswith(b"data: "):
            continue
        if block == b"data: [DONE]":
            done = True
        else:
            events.append(json.loads(block[6:]))
    return status, events, done, complete


async def open_stream(port, body, rcvbuf=None):
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    # NOTE: asyncio reads ahead into its own buffer until it holds 2 x limit; a small limit makes a client that
    # does not read really stop reading from the socket.
    reader, writer = await asyncio.open_connection(sock=sock, limit=2048 if rcvbuf else 1 << 20)
    payload = json.dumps({**body, "stream": True}).encode()
    writer.write(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Content-Length: " + str(len(payload)).encode() + b"\r\n\r\n" + payload)
    await writer.drain()
    return reader, writer


async def read_stream(reader, writer):
    raw = b""
    while not raw.endswith(b"\r\n0\r\n\r\n"):
        chunk = await reader.read(1 << 16)
        if not chunk:
            break
        raw += chunk
    writer.close()
    return raw


async def timed_stream(port, body):
    t0 = time.monotonic()
    reader, writer = await open_stream(port, body)
    raw = await read_stream(reader, writer)
    return time.monotonic() - t0, parse_stream(raw)


def usage_tokens(events):
    return events[-1]["usage"]["completion_tokens"]


def test_1000_concurrent_streams_cost_no_thread_each(anvil_bin, tmp_path):
    raise_fd_limit(4096)
    s = Server(anvil_bin, [*STORIES_MODEL, "--max-waiting", "4096"], tmp_path / "server.log")
    try:
        idle_threads = s.num_threads()
        body = {"prompt": "Once upon a time", "max_tokens": 24, "temperature": 0, "ignore_eos": True,
                "stream_options": {"include_usage": True}}

        async def main():
            gate = asyncio.Event()

            async def client():
                reader, writer = await open_stream(s.port, body)
                await gate.wait()
                return await read_stream(reader, writer)

            tasks = [asyncio.create_task(client()) for _ in range(1000)]
            deadline = time.monotonic() + 60
            while s.metrics()["anvil:open_connections"] < 1000 and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            opened = s.metrics()["anvil:open_connections"]
            threads_open = s.num_threads()
            t0 = time.monotonic()
            gate.set()
            max_threads = threads_open
            while not all(t.done() for t in tasks):
                max_threads = max(max_threads, s.num_threads())
                await asyncio.sleep(0.02)
            return opened, threads_open, max_threads, time.monotonic() - t0, [t.result() for t in tasks]

        opened, threads_open, max_threads, seconds, raws = asyncio.run(main())
        print(f"\n1000 streams: {seconds:.2f} s after the gate opened; threads idle {idle_threads}, "
              f"with 1000 open {threads_open}, at most {max_threads}")
        assert opened >= 1000
        assert max_threads < MAX_THREADS and max_threads <= idle_threads + 4
        for raw in raws:
            status, events, done, complete = parse_stream(raw)
            assert status == 200 and done and complete
            assert usage_tokens(events) == 24
            assert "".join(e["choices"][0]["text"] for e in events if e["choices"]).startswith(", there was")
        s.wait_metric("anvil:open_connections", lambda v: v <= 1)
        assert s.metrics()["anvil:unsent_response_bytes"] == 0
        assert s.metrics()["anvil:kv_cache_usage_perc"] == 0
    finally:
        assert s.terminate() == 0, s.log_text()


BIG = {"prompt": "Once", "max_tokens": 480, "temperature": 0, "ignore_eos": True, "logprobs": 5,
       "stream_options": {"include_usage": True}}
NORMAL = {"prompt": "Once upon a time", "max_tokens": 200, "temperature": 0, "ignore_eos": True,
          "stream_options": {"include_usage": True}}
SLOW_READER_HOLD = 4.0  # seconds the slow reader reads nothing
# About 10 MB of events: more than the kernel's socket buffers on loopback take in (they grow to 4 MB), so the
# server itself must hold the backlog of a client that does not read.
HUGE = {**BIG, "n": 16, "logprobs": 20}


def test_a_slow_reader_does_not_slow_the_others(anvil_bin, tmp_path):
    s = Server(anvil_bin, [*STORIES_MODEL, "--stream-buffer-bytes", str(64 << 20)], tmp_path / "server.log")
    try:
        async def round_(slow):
            big = asyncio.create_task(open_stream(s.port, HUGE, rcvbuf=4096 if slow else None))
            normals = [asyncio.create_task(timed_stream(s.port, NORMAL)) for _ in range(16)]
            reader, writer = await big
            held = 0
            if slow:
                t_hold = time.monotonic()
                while time.monotonic() - t_hold < SLOW_READER_HOLD:
                    held = max(held, s.metrics()["anvil:unsent_response_bytes"])
                    await asyncio.sleep(0.1)
                # Then catch up quickly, so the test does not wait on a 4 KB window.
                writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
                reader._limit = 1 << 20
            big_raw = await read_stream(reader, writer)
            return [await n for n in normals], parse_stream(big_raw), held

        base, big_fast, _ = asyncio.run(round_(False))
        with_slow, big_slow, held = asyncio.run(round_(True))
        t_base = max(t for t, _ in base)
        t_slow = max(t for t, _ in with_slow)
        print(f"\n16 streams of 200 tokens beside a 10 MB stream: slowest {t_base:.2f} s with a fast reader, "
              f"{t_slow:.2f} s with a reader that stalls {SLOW_READER_HOLD} s (the server held {held / 1e6:.1f} MB "
              f"for it)")
        for _, (status, events, done, complete) in base + with_slow:
            assert status == 200 and done and complete and usage_tokens(events) == 200
        assert held > 256e3  # the backlog really sat in the server, past the kernel's buffers
        # Had the server waited on the slow reader, the others would have waited out its stall.
        assert t_slow < SLOW_READER_HOLD * 0.75
        assert t_slow < max(3 * t_base, t_base + 1.0)
        # The slow reader itself lost nothing: its backlog fit in the server's buffer (64 MiB here).
        for status, events, done, complete in (big_fast, big_slow):
            assert status == 200 and done and complete and usage_tokens(events) == 16 * 480
        assert s.metrics()["anvil:client_aborts_total"] == 0
    finally:
        assert s.terminate() == 0, s.log_text()


def test_a_reader_too_far_behind_loses_its_request(anvil_bin, tmp_path):
    s = Server(anvil_bin, [*STORIES_MODEL, "--stream-buffer-bytes", "65536"], tmp_path / "server.log")
    try:
        async def main():
            reader, writer = await open_stream(s.port, HUGE, rcvbuf=4096)
            deadline = time.monotonic() + 10
            while s.metrics()["anvil:client_aborts_total"] < 1 and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            others = await asyncio.gather(*[timed_stream(s.port, NORMAL) for _ in range(4)])
            try:
                raw = await asyncio.wait_for(read_stream(reader, writer), 10)
            except ConnectionError:
                raw = b""
            return others, raw

        others, raw = asyncio.run(main())
        m = s.metrics()
        assert m["anvil:client_aborts_total"] == 1
        assert m["anvil:kv_cache_usage_perc"] == 0 and m["anvil:num_requests_running"] == 0
        assert raw.startswith(b"HTTP/1.1 200 OK")  # cut off mid-stream: no [DONE], no final chunk
        assert b"data: [DONE]" not in raw and not raw.endswith(b"\r\n0\r\n\r\n")
        for _, (status, events, done, complete) in others:
            assert status == 200 and done and usage_tokens(events) == 200
    finally:
        assert s.terminate() == 0, s.log_text()

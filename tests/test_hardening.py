"""The server against hostile and careless clients, for real: uvicorn on 127.0.0.1, raw sockets, websockets, SQLite.

Each test is a failure a probe of the first server found (abandoned work, cross-origin access, lost edits, typed
garbage, caps that did not cap, lone surrogates, leaked keys, head-of-line blocking, session races, start-up
errors); it fails on that server and passes on this one. The server as a process (crashes, logs, signals,
start-up errors) is tests/test_serve_process.py.
"""
import asyncio
import json
import socket
import sqlite3
import time

import httpx
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from tests.conftest import API_KEY as KEY
from tests.conftest import start_server, stop_server

AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture(scope="module")
def server(tiny_model_dir, tmp_path_factory):
    db = tmp_path_factory.mktemp("hardening") / "h.sqlite"
    srv, thread, url = start_server(tiny_model_dir, db)
    yield {"url": url, "ws": url.replace("http://", "ws://"), "db": db, "app": srv.config.app}
    stop_server(srv, thread)


def busy(server) -> tuple[int, int]:
    s = httpx.get(server["url"] + "/v1/stats", headers=AUTH, timeout=30).json()
    return s["active"], s["queue_depth"]


def settle(server, timeout=20.0) -> None:
    deadline = time.monotonic() + timeout
    while busy(server) != (0, 0):
        assert time.monotonic() < deadline, "the scheduler is still busy"
        time.sleep(0.05)


def raw_post(url: str, path: str, body: bytes, headers: dict[str, str], chunked: bool = False) -> socket.socket:
    """Send a request on a raw socket and return it unread (a client that may leave without reading)."""
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)))
    head = f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    if chunked:
        sock.sendall((head + "Transfer-Encoding: chunked\r\n\r\n").encode())
        for i in range(0, len(body), 1 << 16):
            part = body[i:i + (1 << 16)]
            sock.sendall(f"{len(part):x}\r\n".encode() + part + b"\r\n")
        sock.sendall(b"0\r\n\r\n")
    else:
        sock.sendall((head + f"Content-Length: {len(body)}\r\n\r\n").encode() + body)
    return sock


def status_of(sock: socket.socket) -> int:
    sock.settimeout(30)
    data = b""
    while b"\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return int(data.split(b" ", 2)[1])


# --- 1. work that nobody waits for ------------------------------------------------------------------------------
@pytest.fixture
def never_ending(server):
    """Requests decode every slot, one per step (the tiny model would often end a middle at once)."""
    scheduler = server["app"].state.scheduler
    submit = scheduler.submit

    def slow(req):
        req.eom_bias, req.threshold = -50.0, 1.0
        return submit(req)
    scheduler.submit = slow
    yield
    scheduler.submit = submit


def test_a_client_that_leaves_cancels_every_choice(server, never_ending):
    body = json.dumps({"prompt": ["def f(x):\n    ", "class A:\n    "], "max_tokens": 1024, "n": 8,
                       "temperature": 0.7}).encode()
    sock = raw_post(server["url"], "/v1/completions", body, {**AUTH, "Content-Type": "application/json"})
    deadline = time.monotonic() + 30
    while busy(server)[0] == 0:
        assert time.monotonic() < deadline, "the request never started"
        time.sleep(0.02)
    sock.close()
    t0 = time.monotonic()
    settle(server, timeout=10)
    assert time.monotonic() - t0 < 5, "16 abandoned completions kept decoding"


@pytest.mark.parametrize("body,headers,status,needle", [
    (json.dumps({"prompt": ["x"] * 10_000, "n": 8}), {"Content-Type": "application/json"}, 400, "at most 2"),
    (json.dumps({"prompt": "x = "}), {}, 415, "Content-Type: application/json"),
    (json.dumps({"prompt": "x = "}), {"Content-Type": "text/plain"}, 415, "text/plain"),
    (json.dumps({"prompt": "x = ", "temperature": float("nan")}), {"Content-Type": "application/json"}, 400,
     "temperature"),
    (json.dumps({"prompt": "x = ", "max_tokens": "8"}), {"Content-Type": "application/json"}, 400, "max_tokens"),
    ('{"prompt": "x = ", "max_tokens": 8', {"Content-Type": "application/json"}, 400, "not valid JSON"),
])
def test_requests_that_ask_too_much_or_are_not_json(server, body, headers, status, needle):
    r = httpx.post(server["url"] + "/v1/completions", content=body.encode(), headers={**AUTH, **headers}, timeout=30)
    assert r.status_code == status and needle in r.json()["error"]["message"]
    settle(server)


@pytest.mark.parametrize("stream", [False, True])
def test_a_full_queue_is_a_429_that_leaves_nothing_behind(server, stream):
    """Streaming too (its answer must not start before its requests are queued), and a refused request's other
    choices are not left in the queue for everyone else to wait behind."""
    from runtime.request import Request
    scheduler = server["app"].state.scheduler
    engine = server["app"].state.engine
    forward = engine.forward_batch

    def slow(denoisers):   # a slow machine: the queue cannot drain while the test asks
        time.sleep(0.05)
        return forward(denoisers)

    def never_ending(n):
        return [Request(prefix=f"x{i} = ", max_new_tokens=1024, eom_bias=-50.0, threshold=1.0) for i in range(n)]
    engine.forward_batch = slow
    fill = scheduler.submit_all(never_ending(scheduler.max_waiting - 4))
    time.sleep(0.3)   # the worker takes a batch's worth into decoding; fill the queue again behind them
    fill += scheduler.submit_all(never_ending(scheduler.max_waiting - 4 - scheduler.queue_depth))
    try:
        before = busy(server)
        r = httpx.post(server["url"] + "/v1/completions", json={"prompt": "y = ", "n": 8, "max_tokens": 4,
                                                               "stream": stream}, headers=AUTH, timeout=30)
        assert r.status_code == 429 and r.headers["retry-after"] == "1" and "busy" in r.json()["error"]["message"]
        assert busy(server)[1] <= before[1]
    finally:
        for h in fill:
            h.cancel()
        engine.forward_batch = forward
    settle(server)


# --- 2. any web page can drive the server -----------------------------------------------------------------------
@pytest.mark.parametrize("path", ["/v1/sessions", "/v1/dashboard/live"])
def test_a_foreign_origin_cannot_open_a_websocket(server, path):
    port = server["url"].rsplit(":", 1)[1]
    for origin in ("http://evil.example", f"http://localhost.evil.example:{port}", "null"):
        with pytest.raises(InvalidStatus, match="403"):
            connect(server["ws"] + path, origin=origin, additional_headers=AUTH)
    for ok in (f"http://127.0.0.1:{port}", None):     # the server's own page, and clients that are not browsers
        connect(server["ws"] + path, origin=ok, additional_headers=AUTH).close()


def test_a_foreign_origin_cannot_post(server):
    port = server["url"].rsplit(":", 1)[1]
    r = httpx.post(server["url"] + "/v1/completions", json={"prompt": "x = ", "max_tokens": 2},
                   headers={**AUTH, "Origin": "http://evil.example"}, timeout=30)
    assert r.status_code == 403 and "--allow-origin" in r.json()["error"]["message"]
    # DNS rebinding: the page's own name resolves to us, so Origin and Host agree on it (and a GET sends no Origin)
    for headers in ({"Origin": f"http://rebind.example:{port}", "Host": f"rebind.example:{port}"},
                    {"Host": f"rebind.example:{port}"}):
        r = httpx.get(server["url"] + "/v1/stats", headers={**AUTH, **headers}, timeout=30)
        assert r.status_code == 403 and "localhost names" in r.json()["error"]["message"]


def test_an_allowed_origin_gets_in(tiny_model_dir, tmp_path):
    srv, thread, url = start_server(tiny_model_dir, tmp_path / "o.sqlite", allow_origins=("http://localhost:3000",))
    try:
        ws = url.replace("http://", "ws://") + "/v1/sessions"
        connect(ws, origin="http://localhost:3000", additional_headers=AUTH).close()
        with pytest.raises(InvalidStatus, match="403"):
            connect(ws, origin="http://localhost:3001", additional_headers=AUTH)
        pre = httpx.options(url + "/v1/completions", headers={"Origin": "http://localhost:3000",
                                                             "Access-Control-Request-Method": "POST"})
        assert pre.status_code == 200 and pre.headers["access-control-allow-origin"] == "http://localhost:3000"
    finally:
        stop_server(srv, thread)


# --- 3. edits lose the user's code ------------------------------------------------------------------------------
def session(server):
    return connect(server["ws"] + "/v1/sessions", additional_headers=AUTH)


def talk(ws, msg) -> dict:
    ws.send(msg if isinstance(msg, str) else json.dumps(msg))
    return json.loads(ws.recv(timeout=60))


def until(ws, request_id, kinds=("result", "cancelled", "error")) -> tuple[dict, list[dict]]:
    seen = []
    while True:
        msg = json.loads(ws.recv(timeout=60))
        seen.append(msg)
        if msg.get("request_id") == request_id and msg["type"] in kinds:
            return msg, seen


def test_a_repair_longer_than_the_window_is_refused_not_cut(server):
    doc = "".join(f"def f{i}(x):\n    return x + {i}\n\n" for i in range(100))
    with session(server) as ws:
        opened = talk(ws, {"type": "open", "document": {"text": doc}})
        reply = talk(ws, {"type": "repair", "request_id": "long", "range": {"start": 0, "end": len(doc)}})
        assert reply["type"] == "error" and reply["request_id"] == "long" and "smaller range" in reply["message"]
        assert talk(ws, {"type": "accept", "request_id": "long"})["type"] == "error"
        again = talk(ws, {"type": "open", "session_id": opened["session_id"]})
        assert again["text"] == doc


# --- 5. typed garbage closes the websocket ---------------------------------------------------------------------
GARBAGE = [
    {"type": "open", "session_id": {"a": 1}},
    {"type": "patch", "range": [0, 0], "text": "x"},
    {"type": "complete", "offset": 0, "max_tokens": 1e400},
    {"type": "set_document", "text": "x", "language": {}},
    {"type": "complete", "offset": 0, "temperature": float("nan")},
    {"type": "complete", "offset": "0"},
    {"type": "cancel", "request_id": ["r"]},
    {"type": "accept"},
    {"type": 7},
    [1, 2, 3],
    "\"just a string\"",
]


@pytest.mark.parametrize("message", GARBAGE, ids=[str(m)[:40] for m in GARBAGE])
def test_typed_garbage_gets_an_error_and_the_connection_stays(server, message):
    with session(server) as ws:
        talk(ws, {"type": "open", "document": {"text": "a = 1\n"}})
        raw = message if isinstance(message, str) else json.dumps(message)
        err = talk(ws, raw)
        assert err["type"] == "error" and err["message"]
        assert talk(ws, {"type": "patch", "range": {"start": 0, "end": 1}, "text": "b"})["text"] == "b = 1\n"


def test_a_binary_frame_gets_an_error_and_the_connection_stays(server):
    with session(server) as ws:
        talk(ws, {"type": "open"})
        ws.send(b'{"type": "undo"}')
        err = json.loads(ws.recv(timeout=30))
        assert err["type"] == "error" and "binary" in err["message"]
        assert talk(ws, {"type": "set_document", "text": "ok"})["text"] == "ok"


# --- 6. caps that do not cap ------------------------------------------------------------------------------------
def test_a_chunked_body_over_the_cap_is_refused(server):
    body = b'{"prompt": "' + b"x" * (8 << 20) + b'"}'
    sock = raw_post(server["url"], "/v1/completions", body, {**AUTH, "Content-Type": "application/json"},
                    chunked=True)
    try:
        assert status_of(sock) == 413
    except (BrokenPipeError, ConnectionResetError):
        pass   # the server answered 413 and closed before the rest was sent
    finally:
        sock.close()
    assert httpx.get(server["url"] + "/health").status_code == 200


def test_oversized_websocket_messages_are_not_stored(server):
    before = sqlite3.connect(server["db"]).execute("SELECT COALESCE(SUM(LENGTH(body)), 0) FROM messages").fetchone()[0]
    with session(server) as ws:
        talk(ws, {"type": "open"})
        err = talk(ws, json.dumps({"type": "set_document", "text": "x" * (2 << 20)}))
        assert err["type"] == "error" and "not stored" in err["message"]
    with session(server) as ws:   # past the frame limit the connection is closed with 1009, not buffered
        talk(ws, {"type": "open"})
        ws.send(json.dumps({"type": "set_document", "text": "x" * (10 << 20)}))
        with pytest.raises(Exception):
            ws.recv(timeout=30)
        assert ws.close_code == 1009
    after = sqlite3.connect(server["db"]).execute("SELECT COALESCE(SUM(LENGTH(body)), 0) FROM messages").fetchone()[0]
    assert after - before < 10_000


def test_idle_sessions_and_old_history_are_deleted(tmp_path):
    from server.store import HISTORY_TTL_S, SESSION_TTL_S, Store
    store = Store(tmp_path / "p.sqlite")
    store.save_session("old", "x" * 1000, "python", 0)
    store.log_message("old", "in", "{}")
    store.save_edit("old", "r1", 0, 1, "x", "y", "proposed")
    store.add_request("req", "/infill", 10.0, 1.0, {"tokens": 2}, 200)
    store.save_session("fresh", "y", "python", 0)
    store.prune(now=time.time() + SESSION_TTL_S + 1)
    assert store.load_session("old") is None and store.load_session("fresh") is None
    db = sqlite3.connect(tmp_path / "p.sqlite")
    assert db.execute("SELECT COUNT(*) FROM edits").fetchone()[0] == 0
    assert db.execute("SELECT COUNT(*) FROM messages").fetchone()[0] == 0
    assert SESSION_TTL_S > HISTORY_TTL_S and db.execute("SELECT COUNT(*) FROM requests").fetchone()[0] == 0


# --- 7. lone surrogates -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("path,body", [
    ("/v1/completions", '{"prompt": "x = \\ud800", "max_tokens": 2}'),
    ("/v1/completions", '{"prompt": "x = ", "suffix": "\\udfff", "max_tokens": 2}'),
    ("/v1/completions", '{"prompt": "x = ", "stop": ["\\ud800"], "max_tokens": 2}'),
    ("/infill", '{"input_prefix": "x = ", "input_suffix": "\\ud800", "n_predict": 2}'),
    ("/infill", '{"input_prefix": "x = ", "input_extra": [{"text": "\\ud800"}], "n_predict": 2}'),
])
def test_a_lone_surrogate_is_a_clear_400(server, path, body):
    r = httpx.post(server["url"] + path, content=body.encode(), headers={**AUTH, "Content-Type": "application/json"},
                   timeout=30)
    assert r.status_code == 400 and "surrogate" in r.json()["error"]["message"]


def test_a_lone_surrogate_in_a_session_is_an_error_message(server):
    with session(server) as ws:
        talk(ws, {"type": "open", "document": {"text": "x = 1\n"}})
        err = talk(ws, '{"type": "set_document", "text": "x = \\ud800\\n"}')
        assert err["type"] == "error" and "surrogate" in err["message"]
        assert talk(ws, {"type": "patch", "offset": 0, "text": "y"})["text"] == "yx = 1\n"


# --- 8. the API key ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("headers,query", [
    ({"Authorization": "Bearer ключ"}, ""),
    ({"x-api-key": "\u00e9\u00e9"}, ""),
    ({}, "?api_key=%D0%BA%D0%BB%D1%8E%D1%87"),
])
def test_a_non_ascii_key_is_a_401(server, headers, query):
    enc = {k: v.encode("utf-8") for k, v in headers.items()}
    r = httpx.get(server["url"] + "/v1/models" + query, headers=enc, timeout=30)
    assert r.status_code == 401


# --- 9. head-of-line blocking -----------------------------------------------------------------------------------
def test_frames_reach_the_event_loop_without_its_thread_pool(tiny_engine):
    """Waiting requests must not each hold an executor thread (a burst queued behind the default pool)."""
    from concurrent.futures import ThreadPoolExecutor

    from runtime.request import Request
    from runtime.scheduler import Scheduler

    class NoThreads(ThreadPoolExecutor):
        def submit(self, *a, **k):
            raise AssertionError("the scheduler borrowed the event loop's thread pool")

    async def main():
        asyncio.get_running_loop().set_default_executor(NoThreads())
        scheduler = Scheduler(tiny_engine, max_batch=4)
        try:
            handles = [scheduler.submit(Request(prefix=f"x{i} = ", max_new_tokens=4)) for i in range(12)]

            async def last(h):
                async for item in h.aiter():
                    pass
                return item
            return await asyncio.gather(*map(last, handles))
        finally:
            scheduler.close()
    results = asyncio.run(main())
    assert len(results) == 12 and all(r.stats["stop_reason"] for r in results)


# --- 10. sessions -----------------------------------------------------------------------------------------------
def test_two_clients_on_one_session_lose_nothing(server):
    with session(server) as a, session(server) as b:
        opened = talk(a, {"type": "open", "document": {"text": "one\n"}})
        talk(b, {"type": "open", "session_id": opened["session_id"]})
        first = talk(a, {"type": "patch", "offset": 0, "text": "A"})
        second = talk(b, {"type": "patch", "offset": 0, "text": "B"})
        assert (first["version"], second["version"]) == (opened["version"] + 1, opened["version"] + 2)
        assert second["text"] == "BAone\n"
        stale = talk(a, {"type": "patch", "offset": 0, "text": "C", "version": first["version"]})
        assert stale["type"] == "error" and "conflict" in stale["message"]
        assert talk(a, {"type": "open", "session_id": opened["session_id"]})["text"] == "BAone\n"


def test_overlapping_requests_each_end_exactly_once(server):
    with session(server) as ws:
        talk(ws, {"type": "open", "document": {"text": "x = 1\n"}})
        for i in range(6):
            old, new = f"old{i}", f"new{i}"
            ws.send(json.dumps({"type": "complete", "request_id": old, "offset": 6, "max_tokens": 64, "eom_bias": -50}))
            if i % 2:
                until(ws, old, kinds=("frame",))
            ws.send(json.dumps({"type": "complete", "request_id": new, "offset": 6, "max_tokens": 4}))
            ends = {old: [], new: []}
            while not (ends[old] and ends[new]):
                msg = json.loads(ws.recv(timeout=60))
                if msg.get("request_id") in ends and msg["type"] in ("result", "cancelled", "error"):
                    ends[msg["request_id"]].append(msg["type"])
            time.sleep(0.2)   # anything late would arrive now
            while True:
                try:
                    msg = json.loads(ws.recv(timeout=0.3))
                except TimeoutError:
                    break
                if msg.get("request_id") in ends and msg["type"] in ("result", "cancelled", "error"):
                    ends[msg["request_id"]].append(msg["type"])
            assert ends[old] in (["cancelled"], ["result"]) and ends[new] == ["result"], ends


def test_a_request_cut_off_by_a_dropped_connection_is_reported_on_resume(server):
    engine = server["app"].state.engine
    forward = engine.forward_batch

    def slow(denoisers):   # the engine sizes a line's window (12 slots), and the tiny model decodes them in
        time.sleep(0.05)   # milliseconds: slowed, the request is still running when the connection drops
        return forward(denoisers)
    engine.forward_batch = slow
    try:
        ws = session(server)
        sid = talk(ws, {"type": "open", "document": {"text": "x = 1\n"}})["session_id"]
        ws.send(json.dumps({"type": "complete", "request_id": "dropped", "offset": 6, "max_tokens": 1024,
                            "threshold": 1.0, "eom_bias": -50}))
        until(ws, "dropped", kinds=("frame",))
        ws.close()
        time.sleep(0.5)
        with session(server) as again:
            resumed = talk(again, {"type": "open", "session_id": sid})
    finally:
        engine.forward_batch = forward
    assert [(r["request_id"], r["state"]) for r in resumed["requests"]] == [("dropped", "interrupted")]


def test_a_too_long_prompt_is_told_only_what_is_wrong_with_it(server):
    r = httpx.post(server["url"] + "/v1/completions", json={"prompt": "x" * 200_001, "max_tokens": 4}, headers=AUTH, timeout=60)
    msg = r.json()["error"]["message"]
    assert r.status_code == 400 and "at most 200000 characters" in msg and "valid list" not in msg
    r = httpx.post(server["url"] + "/v1/completions", content=b'{"prompt": "\\ud800", "max_tokens": 4}',
                   headers={**AUTH, "Content-Type": "application/json"}, timeout=60)   # a JSON escape: a lone half
    msg = r.json()["error"]["message"]
    assert r.status_code == 400 and "lone surrogate" in msg and "valid list" not in msg
    r = httpx.post(server["url"] + "/v1/completions", json={"prompt": 5, "max_tokens": 4}, headers=AUTH, timeout=60)
    assert r.status_code == 400 and "prompt" in r.json()["error"]["message"]   # no shape fits: both are said


@pytest.mark.parametrize("raw", ["[" * 10000, '{"type": "open", "x": ' + "[" * 10000 + "]" * 10000 + "}"])
def test_deeply_nested_json_on_a_websocket_gets_an_error_and_the_connection_stays(server, raw):
    with session(server) as ws:
        talk(ws, {"type": "open"})
        err = talk(ws, raw)
        assert err["type"] == "error" and "Traceback" not in err["message"]
        assert talk(ws, {"type": "set_document", "text": "x = 1\n"})["type"] != "error"   # still open

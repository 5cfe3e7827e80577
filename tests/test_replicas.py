"""`serve --replicas 2` on a real Ray cluster on loopback (tiny model): every route answers as the single process
does, a document's keystrokes stay on one replica, /health and /metrics list the replicas, and a replica killed
during a load loses no session and answers every request with a result or a retryable error, then is replaced."""
import json
import math
import os
import signal
import threading
import time

import pytest

from tests.conftest import API_KEY, start_server, stop_server

pytest.importorskip("ray.serve", reason="pip install 'quicksilver[replicas]'")
from ray.exceptions import ActorDiedError, RayTaskError  # noqa: E402
from ray.serve.exceptions import BackPressureError  # noqa: E402
httpx = pytest.importorskip("httpx")
HEAD = {"Authorization": f"Bearer {API_KEY}"}
DOC = "import os\n\n\nclass Inventory:\n    def __init__(self):\n        self.items = {}\n\n    def add(self, sku):\n        "
BODIES = [{"prompt": DOC, "max_tokens": 12, "temperature": 0},
          {"prompt": "def total(xs):\n    s = 0\n    for x in xs:\n        ", "suffix": "\n    return s\n",
           "max_tokens": 8, "temperature": 0}]


@pytest.fixture(scope="module")
def servers(tiny_model_dir, tmp_path_factory):
    """A single-process server, a two-replica one on the same model, and a second front for the same replicas (as a
    team runs several behind a proxy)."""
    db = tmp_path_factory.mktemp("replicas")
    one = start_server(tiny_model_dir, db / "one.sqlite")
    two = start_server(tiny_model_dir, db / "two.sqlite", replicas=2)
    deadline = time.time() + 60
    while len(running(two[2])) < 2 and time.time() < deadline:
        time.sleep(0.2)
    other = start_server(tiny_model_dir, db / "two.sqlite", replicas=2)
    yield one[2], two[2], other[2]
    for srv, thread, _ in (other, two, one):
        stop_server(srv, thread)


def running(url: str) -> list[dict]:
    return [r for r in httpx.get(url + "/health", headers=HEAD).json()["replicas"] if r["state"] == "running"]


def ask(url: str, path: str, body: dict) -> httpx.Response:
    return httpx.post(url + path, json=body, headers=HEAD, timeout=60)


def test_every_route_answers_as_the_single_process_does(servers):
    one, two, _ = servers
    for body in BODIES:
        a, b = ask(one, "/v1/completions", body).json(), ask(two, "/v1/completions", body).json()
        assert a["choices"][0]["text"] == b["choices"][0]["text"]
        assert b["choices"][0]["quicksilver"]["replica"] in {r["id"] for r in running(two)}
        infill = {"input_prefix": body["prompt"], "input_suffix": body.get("suffix", ""), "n_predict": 8}
        assert ask(one, "/infill", infill).json()["content"] == ask(two, "/infill", infill).json()["content"]
    streamed = httpx.post(two + "/v1/completions", json={**BODIES[0], "stream": True}, headers=HEAD, timeout=60)
    chunks = [json.loads(line[6:]) for line in streamed.text.splitlines() if line.startswith("data: {")]
    assert "".join(c["choices"][0]["text"] for c in chunks) == ask(one, "/v1/completions", BODIES[0]).json()["choices"][0]["text"]
    from websockets.sync.client import connect
    texts = []
    for url in (one, two):   # a websocket session: the same result through either
        with connect(url.replace("http://", "ws://") + "/v1/sessions", additional_headers=HEAD) as ws:
            ws.send(json.dumps({"type": "open", "document": {"text": DOC + "\n", "language": "python"}}))
            json.loads(ws.recv(timeout=60))
            ws.send(json.dumps({"type": "complete", "request_id": "r", "offset": len(DOC), "max_tokens": 8}))
            while (msg := json.loads(ws.recv(timeout=60)))["type"] not in ("result", "error"):
                pass
            texts.append(msg.get("text"))
    assert texts[0] == texts[1] and texts[0] is not None
    bad = ask(two, "/v1/completions", {"prompt": "x", "max_tokens": 0})
    assert bad.status_code == 400   # refused before any replica sees it, as by one process


def test_keystrokes_on_one_document_stay_on_one_replica_and_documents_spread(servers):
    _, two, other = servers
    seen = set()
    for k in range(6):   # typing on one line of one document
        q = ask(two, "/v1/completions", {"prompt": DOC + "self.items"[:k], "max_tokens": 6, "stop": "\n"}).json()
        seen.add(q["choices"][0]["quicksilver"]["replica"])
    assert len(seen) == 1
    q = ask(other, "/v1/completions", {"prompt": DOC + "self.items", "max_tokens": 6, "stop": "\n"}).json()
    assert q["choices"][0]["quicksilver"]["replica"] in seen   # the other front routes the document alike
    spread = {ask(two, "/v1/completions", {"prompt": f"# module {i}\nimport os\n\nx{i} = ", "max_tokens": 2}).json()
              ["choices"][0]["quicksilver"]["replica"] for i in range(16)}
    assert len(spread) == 2   # sixteen documents all on one of two replicas: 1 in 32,768


def test_health_and_metrics_list_the_replicas(servers):
    one, two, other = servers
    listed = running(two)
    assert len(listed) == 2 and all(r["pid"] != os.getpid() and r["pid"] > 0 for r in listed)
    assert {"id", "pid", "host", "state", "queue_depth", "active", "served"} <= set(listed[0])
    assert [r["id"] for r in running(one)] == ["local"]
    deadline = time.time() + 10
    while {r["id"] for r in running(other)} != {r["id"] for r in listed} and time.time() < deadline:
        time.sleep(0.2)
    assert {r["id"] for r in running(other)} == {r["id"] for r in listed}   # the same replicas, not two more
    text = httpx.get(two + "/metrics", headers=HEAD).text
    for r in listed:
        assert f'quicksilver_replica_queue_depth{{replica="{r["id"]}",state="running"}}' in text
    assert 'quicksilver_completions_total{replica="' in text


def test_a_replica_killed_under_load_loses_nothing_and_is_replaced(servers):
    """32 clients; one replica is SIGKILLed mid-load: every request is answered (a result, or a 503 that says to
    retry), a websocket session opened before is intact after, and a new replica reports within 30 s."""
    from websockets.sync.client import connect
    _, two, _ = servers
    ws_url = two.replace("http://", "ws://") + "/v1/sessions"
    with connect(ws_url, additional_headers=HEAD) as ws:
        ws.send(json.dumps({"type": "open", "document": {"text": DOC, "language": "python"}}))
        session = json.loads(ws.recv(timeout=60))["session_id"]
    victim = running(two)[0]
    answers, lock = [], threading.Lock()

    def client(i: int) -> None:
        r = ask(two, "/v1/completions", {"prompt": f"# client {i}\n" + DOC, "max_tokens": 48, "temperature": 0})
        with lock:
            answers.append(r)
    threads = [threading.Thread(target=client, args=(i,)) for i in range(32)]
    for t in threads:
        t.start()
    time.sleep(0.5)
    os.kill(victim["pid"], signal.SIGKILL)
    for t in threads:
        t.join()
    assert len(answers) == 32
    for r in answers:
        assert r.status_code == 200 or (r.status_code == 503 and "retry" in r.json()["error"]["message"]), r.text
    deadline = time.time() + 30
    while time.time() < deadline and not (len(running(two)) == 2 and victim["id"] not in {r["id"] for r in running(two)}):
        time.sleep(0.5)
    assert len(running(two)) == 2 and victim["id"] not in {r["id"] for r in running(two)}
    with connect(ws_url, additional_headers=HEAD) as ws:
        ws.send(json.dumps({"type": "open", "session_id": session}))
        assert json.loads(ws.recv(timeout=60))["text"] == DOC
    assert ask(two, "/v1/completions", BODIES[0]).status_code == 200


def test_routing_names_routers_ray_has():
    import importlib

    from server.replicas import ROUTING, affinity_key
    from runtime.request import Request
    for path in ROUTING.values():
        module, name = path.rsplit(".", 1)
        assert hasattr(importlib.import_module(module), name)
    a, b = Request(prefix="import os\n\nx = 1"), Request(prefix="import os\n\nx = 12")
    assert affinity_key(a) == affinity_key(b) == "import os\n\n"   # the line being typed is not in the key
    head = "".join(f"line{i}\n" for i in range(8))
    assert affinity_key(Request(prefix=head + "x = 1\ny = ")) == affinity_key(Request(prefix=head + "z")) == head
    assert affinity_key(Request(prefix=head + "x", path="/src/a.py")) == "/src/a.py"   # a path names the file


def test_replica_options_are_checked_before_anything_starts(tmp_path):
    """An unreachable --ray-address or replica options without --replicas: one clear line, at once, nothing left."""
    import subprocess
    import sys
    from tests.conftest import free_port
    cli = [sys.executable, "-m", "runtime.cli", "serve", "--db", str(tmp_path / "q.sqlite"), "--port", str(free_port())]
    for extra, said in ((["--routing", "round-robin"], "go with --replicas"),
                        (["--replicas", "2", "--ray-address", "127.0.0.1:1"], "no Ray cluster answers at 127.0.0.1:1")):
        r = subprocess.run(cli + extra, capture_output=True, text=True, timeout=120)
        assert r.returncode != 0 and said in r.stderr, r.stderr[-2000:]


def test_the_capacity_model_counts_only_decoded_keystrokes():
    from evals.replicas import capacity
    rows = [{"ms": 150.0, "through": False}, {"ms": 5.0, "through": True}]   # 75 ms of a replica a keystroke
    c = capacity(rows, share=0.1, utilization=0.6)
    assert c["seconds_per_keystroke"] == pytest.approx(0.075)
    per_replica = 0.6 / (c["keystrokes_per_s_typing"] * 0.075)
    assert c["typing_developers_per_replica"] == pytest.approx(per_replica)
    assert c["replicas"] == {"100": math.ceil(10 / per_replica), "1000": math.ceil(100 / per_replica)}


def test_a_database_restart_under_load_loses_no_stored_change(servers, tiny_model_dir, postgres):
    """A front on PostgreSQL sharing the running replicas; 8 clients patch their sessions and ask completions
    while the database stops for 2 s: every patch the server acknowledged is stored, none twice; a patch in the
    window is refused with a message that says to retry; completions are answered throughout; within 10 s of the
    database's return every client's patches succeed again."""
    from websockets.sync.client import connect
    srv, thread, url = start_server(tiny_model_dir, postgres.url, replicas=2)
    ws_url = url.replace("http://", "ws://") + "/v1/sessions"
    acked, sent, refused, answered, back = {}, {}, [], [], {}
    stop, restarted = threading.Event(), threading.Event()
    returned_at = []

    def client(i: int) -> None:
        with connect(ws_url, additional_headers=HEAD) as ws:
            ws.send(json.dumps({"type": "open", "document": {"text": "", "language": "python"}}))
            sid = json.loads(ws.recv(timeout=60))["session_id"]
            acked[sid], sent[sid], k = [], [], 0
            while not stop.is_set():
                line = f"#{i}.{k}"
                sent[sid].append(line)
                ws.send(json.dumps({"type": "patch", "offset": 0, "text": line + "\n"}))
                reply = json.loads(ws.recv(timeout=60))
                if reply["type"] == "document":
                    acked[sid].append(line)
                    if restarted.is_set() and returned_at:
                        back.setdefault(i, time.time() - returned_at[0])
                else:
                    refused.append(reply)
                r = ask(url, "/v1/completions", {"prompt": f"# {i}\nx = ", "max_tokens": 2})
                answered.append(r.status_code)
                k += 1
                time.sleep(0.05)
    threads = [threading.Thread(target=client, args=(i,)) for i in range(8)]
    try:
        for t in threads:
            t.start()
        time.sleep(2)
        postgres.stop()
        time.sleep(2)
        restarted.set()
        postgres.start()
        returned_at.append(time.time())
        deadline = time.time() + 15
        while len(back) < len(threads) and time.time() < deadline:
            time.sleep(0.2)
        stop.set()
        for t in threads:
            t.join()
        assert refused and all(r["type"] == "error" and "retry" in r["message"] for r in refused)
        assert set(answered) == {200}   # completions need no database
        assert len(back) == len(threads) and max(back.values()) < 10, back
        for sid, lines in acked.items():
            with connect(ws_url, additional_headers=HEAD) as ws:
                ws.send(json.dumps({"type": "open", "session_id": sid}))
                stored = json.loads(ws.recv(timeout=60))["text"].splitlines()
            assert set(lines) <= set(stored) <= set(sent[sid]) and len(stored) == len(set(stored))
    finally:
        stop.set()
        stop_server(srv, thread)


@pytest.mark.parametrize("make, expect", [
    (lambda: BackPressureError(64, 64), "Busy"),
    (lambda: ActorDiedError(), "ReplicaLost"),
    (lambda: RayTaskError("decode", "tb", ValueError("bad request")), "ValueError"),
    (lambda: RayTaskError("decode", "tb", BackPressureError(64, 64)), "Busy"),
])
async def test_what_a_replica_raises_reaches_the_routes_as_their_own_errors(make, expect):
    """Ray's errors become the ones the routes answer: a full queue 429 (Busy), a dead replica 503 (ReplicaLost),
    a replica's own error (a bad request: 400) itself, wrapped in Ray's task error or not."""
    from types import SimpleNamespace

    from runtime.request import Request
    from server.replicas import RemoteHandle

    async def failing():
        raise make()
        yield
    engine = SimpleNamespace(options=lambda **_: SimpleNamespace(decode=SimpleNamespace(remote=lambda req: failing())))
    owner = SimpleNamespace(engine=engine, inflight=0, front=None)
    with pytest.raises(Exception) as raised:
        async for _ in RemoteHandle(Request(prefix="x = "), owner).aiter():
            pass
    assert type(raised.value).__name__ == expect and owner.inflight == 0

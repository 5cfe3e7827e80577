"""The server's store (server/store.py) on both backends — a SQLite file and a real PostgreSQL server on loopback
(tests/postgres.py) — through one interface: sessions and their version rule, edits, events, history, pruning,
schema migrations; and with PostgreSQL, what replicas need: two servers sharing sessions, no patch lost when two
clients race, and a database restart that costs a 503 and a retry, never data or a restart of quicksilver."""
import json
import sqlite3
import threading
import time

import pytest

from server.store import MIGRATIONS, MESSAGES_KEPT, Conflict, Store, StoreUnavailable


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request, tmp_path):
    where = tmp_path / "s.sqlite" if request.param == "sqlite" else request.getfixturevalue("postgres").url
    s = Store(where)
    yield s
    s.close()


def test_sessions_keep_their_version_rule(store):
    store.save_session("a", "x = 1\n", "python", 0)
    with pytest.raises(Conflict):
        store.save_session("a", "other", "python", 0)   # a new session under a taken id
    store.save_session("a", "x = 2\n", "python", 1)
    with pytest.raises(Conflict):
        store.save_session("a", "x = 3\n", "python", 1)   # based on version 0: another client changed it first
    assert store.load_session("a") == {"text": "x = 2\n", "language": "python", "version": 1}
    assert store.load_session("missing") is None


def test_edits_events_history_and_the_journal(store):
    store.save_session("s", "", "python", 0)
    store.save_edit("s", "r1", 0, 0, "", "", "running")
    store.save_edit("s", "r1", 0, 3, "abc", "abd", "proposed")   # the same request: updated, not added
    store.save_edit("s", "r2", 4, 5, "x", "y", "accepted")
    assert [e["request_id"] for e in store.edits_in("s", ("proposed", "accepted"))] == ["r1", "r2"]
    assert store.get_edit("s", "r1") == {"request_id": "r1", "start": 0, "end": 3, "old": "abc", "new": "abd",
                                         "state": "proposed"}
    assert store.last_accepted("s")["request_id"] == "r2" and store.get_edit("s", "nope") is None
    assert not store.add_event("unknown-id", "shown")
    store.add_request("c1", "/v1/completions", 42.0, 10.0, {"tokens": 8, "steps": 3, "forward_passes": 3}, 200)
    store.add_request("c1", "/v1/completions", 40.0, 10.0, {"tokens": 8, "steps": 3, "forward_passes": 3}, 200)
    assert store.add_event("c1", "shown") and store.add_event("c1", "accepted")
    assert store.event_summary() == {"shown": 1, "accepted": 1, "dismissed": 0, "acceptance_rate": 1.0}
    assert [r["id"] for r in store.recent_requests()] == ["c1"] and store.recent_requests()[0]["ms"] == 40.0
    assert store.requests_since(time.time() - 60) == [(40.0, 8, 3)]
    assert store.latency_history(time.time() - 60, 60.0)[0]["n"] == 1
    for i in range(MESSAGES_KEPT + 5):
        store.log_message("s", "in", json.dumps({"i": i}))
    store.prune(now=time.time() + 40 * 86400)   # everything past its time
    assert store.load_session("s") is None and store.recent_requests() == [] and store.edits_in("s", ("accepted",)) == []


def test_a_store_is_migrated_once_and_an_older_sqlite_file_keeps_its_rows(tmp_path):
    path = tmp_path / "old.sqlite"
    db = sqlite3.connect(path)   # a file from before schema versions: the tables, no schema_version
    db.executescript("CREATE TABLE sessions (id TEXT PRIMARY KEY, text TEXT NOT NULL, language TEXT NOT NULL, "
                     "version INTEGER NOT NULL, created REAL NOT NULL, updated REAL NOT NULL);")
    db.execute("INSERT INTO sessions VALUES ('kept', 'x = 1\n', 'python', 3, ?, ?)", (time.time(), time.time()))
    db.commit()
    db.close()
    store = Store(path)
    assert store.migrate() == MIGRATIONS[-1][0]
    assert store.load_session("kept")["version"] == 3
    store.save_edit("kept", "r", 0, 1, "x", "y", "proposed")   # the tables the file lacked were made
    store.close()
    again = Store(path)
    with again._db() as db:
        assert db.execute("SELECT COUNT(*) FROM schema_version").fetchone()[0] == len(MIGRATIONS)
    again.close()


def test_servers_starting_together_on_one_database_migrate_it_once(postgres):
    stores, errors = [], []

    def open_one():
        try:
            stores.append(Store(postgres.url))
        except Exception as e:   # noqa: BLE001 - the test reports it
            errors.append(e)
    threads = [threading.Thread(target=open_one) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(stores) == 4
    with stores[0]._db() as db:
        assert db.execute("SELECT COUNT(*) FROM schema_version").fetchone()[0] == len(MIGRATIONS)
    for s in stores:
        s.close()


def test_two_clients_racing_on_one_session_through_two_stores_lose_no_change(postgres):
    """Two servers (replicas) share the database: each change goes in at the next version or is refused as a
    conflict and made again on the current text — none is lost."""
    a, b = Store(postgres.url), Store(postgres.url)
    a.save_session("doc", "", "python", 0)
    assert b.load_session("doc")["version"] == 0   # a session opened on one is there on the other

    def append(store: Store, line: str) -> None:
        while True:
            doc = store.load_session("doc")
            try:
                store.save_session("doc", doc["text"] + line, "python", doc["version"] + 1)
                return
            except Conflict:
                continue
    threads = [threading.Thread(target=append, args=(s, f"x{i} = {i}\n")) for i in range(20) for s in (a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    doc = a.load_session("doc")
    assert doc["version"] == 40 and sorted(doc["text"].splitlines()) == sorted([f"x{i} = {i}" for i in range(20)] * 2)
    a.close()
    b.close()


def test_a_database_restart_is_a_clear_unavailable_error_then_the_store_goes_on(postgres):
    store = Store(postgres.url.replace("quicksilver@", "quicksilver:secret@") + "?application_name=qs&password=secret")
    store.save_session("kept", "x = 1\n", "python", 0)
    postgres.stop()
    try:
        with pytest.raises(StoreUnavailable) as e:
            store.load_session("kept")
        assert "cannot be reached" in str(e.value) or "went away" in str(e.value)
        assert "secret" not in str(e.value)   # the URL's password is never in a message
        with pytest.raises(StoreUnavailable):
            store.save_session("kept", "x = 2\n", "python", 1)
    finally:
        postgres.start()
    assert store.load_session("kept") == {"text": "x = 1\n", "language": "python", "version": 0}   # reconnected
    store.save_session("kept", "x = 2\n", "python", 1)
    assert store.load_session("kept")["version"] == 1
    store.close()


def test_two_servers_share_sessions_and_a_database_restart_costs_a_retry_not_the_session(tiny_model_dir, postgres):
    """Two real servers on one PostgreSQL database: a session opened on one resumes on the other; while the
    database restarts a patch gets an error that says to retry and the connection stays; completions are answered
    all along; afterwards the same connection goes on."""
    import httpx
    from websockets.sync.client import connect

    from tests.conftest import API_KEY, start_server, stop_server
    servers = [start_server(tiny_model_dir, postgres.url) for _ in range(2)]
    head = {"Authorization": f"Bearer {API_KEY}"}
    urls = [base.replace("http://", "ws://") + "/v1/sessions" for _, _, base in servers]

    def talk(ws, msg):
        ws.send(json.dumps(msg))
        return json.loads(ws.recv(timeout=60))
    try:
        one = connect(urls[0], additional_headers=head)
        opened = talk(one, {"type": "open", "document": {"text": "x = 1\n", "language": "python"}})
        other = connect(urls[1], additional_headers=head)
        resumed = talk(other, {"type": "open", "session_id": opened["session_id"]})
        assert resumed["text"] == "x = 1\n" and resumed["version"] == opened["version"]
        assert httpx.get(servers[0][2] + "/health", headers=head).json()["store"] == "postgresql"
        postgres.stop()
        try:
            failed = talk(other, {"type": "patch", "offset": 6, "text": "y = 2\n"})
            assert failed["type"] == "error" and "retry" in failed["message"]
            r = httpx.post(servers[1][2] + "/v1/completions", headers=head, timeout=60,
                           json={"prompt": "def f(x):\n    return ", "max_tokens": 4})
            assert r.status_code == 200   # an answer needs no database
        finally:
            postgres.start()
        doc = talk(other, {"type": "patch", "offset": 6, "text": "y = 2\n"})
        assert doc["type"] == "document" and doc["text"] == "x = 1\ny = 2\n"
        assert talk(one, {"type": "open", "session_id": opened["session_id"]})["text"] == "x = 1\ny = 2\n"
        # two clients patching at once through two servers, without versions: every patch is made
        def patch_many(ws, tag):
            for i in range(5):
                assert talk(ws, {"type": "patch", "offset": 0, "text": f"#{tag}{i}\n"})["type"] == "document"
        racing = [threading.Thread(target=patch_many, args=(ws, tag)) for ws, tag in ((one, "a"), (other, "b"))]
        for t in racing:
            t.start()
        for t in racing:
            t.join()
        text = talk(one, {"type": "open", "session_id": opened["session_id"]})["text"]
        assert sorted(text.splitlines()[:10]) == sorted(f"#{t}{i}" for t in "ab" for i in range(5))
        one.close()
        other.close()
    finally:
        for srv, thread, _ in servers:
            stop_server(srv, thread)

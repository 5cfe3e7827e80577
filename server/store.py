"""The server's SQLite file: completion telemetry, per-request latency history, and chat-edit sessions — each kept
for a stated time (SESSION_TTL_S, HISTORY_TTL_S), so the file does not grow without bound."""
from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY, completion_id TEXT NOT NULL, event TEXT NOT NULL, ts REAL NOT NULL);
CREATE TABLE IF NOT EXISTS requests (
    id TEXT PRIMARY KEY, route TEXT NOT NULL, ms REAL NOT NULL, first_frame_ms REAL, tokens INTEGER,
    steps INTEGER, forward_passes INTEGER, status INTEGER NOT NULL, ts REAL NOT NULL);
CREATE INDEX IF NOT EXISTS requests_ts ON requests (ts);
CREATE TABLE IF NOT EXISTS sessions (
    id TEXT PRIMARY KEY, text TEXT NOT NULL, language TEXT NOT NULL, version INTEGER NOT NULL,
    created REAL NOT NULL, updated REAL NOT NULL);
CREATE TABLE IF NOT EXISTS edits (
    request_id TEXT NOT NULL, session_id TEXT NOT NULL, start INTEGER NOT NULL, end_ INTEGER NOT NULL,
    old_text TEXT NOT NULL, new_text TEXT NOT NULL, state TEXT NOT NULL, ts REAL NOT NULL,
    PRIMARY KEY (session_id, request_id));
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY, session_id TEXT NOT NULL, direction TEXT NOT NULL, body TEXT NOT NULL, ts REAL NOT NULL);
CREATE INDEX IF NOT EXISTS sessions_updated ON sessions (updated);
CREATE INDEX IF NOT EXISTS messages_session ON messages (session_id);
CREATE INDEX IF NOT EXISTS events_ts ON events (ts);
"""
EVENTS = ("shown", "accepted", "dismissed")
SESSION_TTL_S = 30 * 86400       # a session untouched this long is deleted, with its edits and messages
HISTORY_TTL_S = 7 * 86400        # requests, events and logged messages older than this are deleted
MAX_SESSIONS = 10_000            # beyond this, the least recently used sessions go first
PRUNE_EVERY_S = 60
MESSAGES_KEPT = 64               # a session's journal of received messages keeps only its latest ones


class StoreError(Exception):
    """The SQLite file cannot be used; the message names it."""


class Conflict(ValueError):
    """A session changed since the version a client based its change on."""


class Store:
    """One connection shared under a lock (writes are small and rare next to a forward pass)."""

    def __init__(self, path: str | Path):
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        try:
            self.db = sqlite3.connect(self.path, check_same_thread=False)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.executescript(SCHEMA)
        except sqlite3.Error as e:
            raise StoreError(f"{self.path} cannot be used as the server's SQLite file ({e}); move it away or "
                             "pass --db NEW_PATH") from None
        self.lock = threading.Lock()
        self.pruned = 0.0
        self.prune()

    def prune(self, now: float | None = None) -> None:
        """Delete what is past its time: idle sessions (and their edits and messages), old history."""
        now = time.time() if now is None else now
        with self.lock, self.db:
            self.db.execute("DELETE FROM sessions WHERE updated < ? OR id IN (SELECT id FROM sessions ORDER BY "
                            "updated DESC LIMIT -1 OFFSET ?)", (now - SESSION_TTL_S, MAX_SESSIONS))
            self.db.execute("DELETE FROM edits WHERE session_id NOT IN (SELECT id FROM sessions)")
            self.db.execute("DELETE FROM messages WHERE ts < ? OR session_id NOT IN (SELECT id FROM sessions)",
                            (now - HISTORY_TTL_S,))
            self.db.execute("DELETE FROM requests WHERE ts < ?", (now - HISTORY_TTL_S,))
            self.db.execute("DELETE FROM events WHERE ts < ?", (now - HISTORY_TTL_S,))
        self.pruned = now

    def prune_now_and_then(self) -> None:
        if time.time() - self.pruned > PRUNE_EVERY_S:
            self.prune()

    def close(self) -> None:
        with self.lock:
            self.db.close()

    def add_event(self, completion_id: str, event: str) -> bool:
        """Record what the user did with a completion this server produced; False for an id it never served."""
        if event not in EVENTS:
            raise ValueError(f"event must be one of {EVENTS}, not {event!r}")
        with self.lock:
            known = self.db.execute("SELECT 1 FROM requests WHERE id = ?", (completion_id,)).fetchone()
        if not known:
            return False
        with self.lock, self.db:
            self.db.execute("INSERT INTO events (completion_id, event, ts) VALUES (?, ?, ?)",
                            (completion_id, event, time.time()))
        return True

    def event_summary(self) -> dict:
        with self.lock:
            counts = dict(self.db.execute("SELECT event, COUNT(DISTINCT completion_id) FROM events GROUP BY event"))
        shown = counts.get("shown", 0)
        return {**{e: counts.get(e, 0) for e in EVENTS},
                "acceptance_rate": counts.get("accepted", 0) / shown if shown else None}

    def add_request(self, rid: str, route: str, ms: float, first_frame_ms: float | None, stats: dict | None,
                    status: int) -> None:
        stats = stats or {}
        with self.lock, self.db:
            self.db.execute("INSERT OR REPLACE INTO requests VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                            (rid, route, ms, first_frame_ms, stats.get("tokens"), stats.get("steps"),
                             stats.get("forward_passes"), status, time.time()))

    def recent_requests(self, limit: int = 50) -> list[dict]:
        with self.lock:
            cur = self.db.execute("SELECT * FROM requests ORDER BY ts DESC LIMIT ?", (limit,))
            names = [c[0] for c in cur.description]
            return [dict(zip(names, row)) for row in cur.fetchall()]

    # --- chat-edit sessions ---------------------------------------------------------------------------
    def save_session(self, sid: str, text: str, language: str, version: int) -> None:
        """Store a session at `version`, which must be the stored one plus one (or 0 for a new session): a client
        that changed a session another client changed first gets Conflict, not a silently lost change."""
        now = time.time()
        with self.lock, self.db:
            if version == 0:
                self.db.execute("INSERT INTO sessions VALUES (?, ?, ?, 0, ?, ?)", (sid, text, language, now, now))
                return
            cur = self.db.execute("UPDATE sessions SET text = ?, language = ?, version = ?, updated = ? "
                                  "WHERE id = ? AND version = ?", (text, language, version, now, sid, version - 1))
            if cur.rowcount != 1:
                raise Conflict(f"session {sid} changed meanwhile (another client?): open it again for its text")

    def load_session(self, sid: str) -> dict | None:
        with self.lock:
            row = self.db.execute("SELECT text, language, version FROM sessions WHERE id = ?", (sid,)).fetchone()
        return None if row is None else {"text": row[0], "language": row[1], "version": row[2]}

    def save_edit(self, sid: str, rid: str, start: int, end: int, old: str, new: str, state: str) -> None:
        with self.lock, self.db:
            self.db.execute("INSERT OR REPLACE INTO edits VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                            (rid, sid, start, end, old, new, state, time.time()))

    def edits_in(self, sid: str, states: tuple[str, ...]) -> list[dict]:
        with self.lock:
            rows = self.db.execute(f"SELECT request_id FROM edits WHERE session_id = ? AND state IN "
                                   f"({','.join('?' * len(states))}) ORDER BY ts", (sid, *states)).fetchall()
        return [self.get_edit(sid, r[0]) for r in rows]

    def get_edit(self, sid: str, rid: str) -> dict | None:
        with self.lock:
            row = self.db.execute("SELECT start, end_, old_text, new_text, state FROM edits "
                                  "WHERE session_id = ? AND request_id = ?", (sid, rid)).fetchone()
        return None if row is None else dict(zip(("start", "end", "old", "new", "state"), row)) | {"request_id": rid}

    def last_accepted(self, sid: str) -> dict | None:
        with self.lock:
            row = self.db.execute("SELECT request_id FROM edits WHERE session_id = ? AND state = 'accepted' "
                                  "ORDER BY ts DESC LIMIT 1", (sid,)).fetchone()
        return self.get_edit(sid, row[0]) if row else None

    def log_message(self, sid: str, direction: str, body: str) -> None:
        """Journal a session's message; only its last MESSAGES_KEPT are kept (the document itself is stored whole)."""
        with self.lock, self.db:
            self.db.execute("INSERT INTO messages (session_id, direction, body, ts) VALUES (?, ?, ?, ?)",
                            (sid, direction, body, time.time()))
            self.db.execute("DELETE FROM messages WHERE session_id = ? AND id NOT IN (SELECT id FROM messages "
                            "WHERE session_id = ? ORDER BY id DESC LIMIT ?)", (sid, sid, MESSAGES_KEPT))

    def latency_history(self, since: float, bucket_s: float) -> list[dict]:
        """p50 / p95 latency, request count and tokens per second per time bucket since `since`."""
        with self.lock:
            rows = self.db.execute("SELECT ts, ms, tokens FROM requests WHERE ts >= ? AND status = 200 ORDER BY ts",
                                   (since,)).fetchall()
        buckets: dict[int, list[tuple[float, int]]] = {}
        for ts, ms, tokens in rows:
            buckets.setdefault(int(ts // bucket_s), []).append((ms, tokens or 0))
        out = []
        for b, items in sorted(buckets.items()):
            ms = sorted(m for m, _ in items)
            out.append({"t": b * bucket_s, "n": len(items), "p50_ms": ms[len(ms) // 2],
                        "p95_ms": ms[min(len(ms) - 1, int(0.95 * len(ms)))],
                        "tokens_per_s": sum(t for _, t in items) / max(1e-9, sum(ms) / 1000)})
        return out

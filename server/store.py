"""The server's SQLite file: completion telemetry events and per-request latency history."""
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
"""
EVENTS = ("shown", "accepted", "dismissed")


class Store:
    """One connection shared under a lock (writes are small and rare next to a forward pass)."""

    def __init__(self, path: str | Path):
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(self.path, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.executescript(SCHEMA)
        self.lock = threading.Lock()

    def close(self) -> None:
        with self.lock:
            self.db.close()

    def add_event(self, completion_id: str, event: str) -> None:
        if event not in EVENTS:
            raise ValueError(f"event must be one of {EVENTS}, not {event!r}")
        with self.lock, self.db:
            self.db.execute("INSERT INTO events (completion_id, event, ts) VALUES (?, ?, ?)",
                            (completion_id, event, time.time()))

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

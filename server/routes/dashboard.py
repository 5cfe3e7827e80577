"""GET /dashboard (a self-contained page), GET /v1/stats (its data), WebSocket /v1/dashboard/live (frames as they happen)."""
from __future__ import annotations

import asyncio
import time
from pathlib import Path

import anyio
from fastapi import APIRouter, Request as HttpRequest, WebSocket, WebSocketDisconnect
from fastapi.responses import HTMLResponse

from server.routes.meta import replicas


router = APIRouter()
PAGE = Path(__file__).resolve().parent.parent / "static" / "dashboard.html"
HISTORY_S = 3600          # the charts show the last hour ...
BUCKET_S = 60             # ... in one-minute buckets; a minute without requests is a gap in their lines
WINDOW_S = 300            # the tiles summarise the last five minutes
RECENT_ROWS = 20          # rows in the page's table of latest requests


def percentile(sorted_ms: list[float], q: float) -> float:
    """The q-quantile by rank, as the store's latency history computes it (so tiles and charts agree)."""
    return sorted_ms[min(len(sorted_ms) - 1, int(q * len(sorted_ms)))]


def summarise(rows: list[tuple[float, int | None, int | None]]) -> dict:
    """p50 / p95 ms, tokens per second and tokens per forward pass of (ms, tokens, forward_passes) rows; each is
    None when there is nothing to compute it from (the page shows '–')."""
    ms = sorted(r[0] for r in rows)
    tokens, passes, seconds = sum(r[1] or 0 for r in rows), sum(r[2] or 0 for r in rows), sum(ms) / 1000
    return {"n": len(rows), "p50_ms": percentile(ms, 0.5) if ms else None,
            "p95_ms": percentile(ms, 0.95) if ms else None,
            "tokens_per_s": tokens / seconds if seconds > 0 else None,
            "tokens_per_forward": tokens / passes if passes else None}


def window_rows(store, since: float) -> list[tuple[float, int | None, int | None]]:
    """(ms, tokens, forward_passes) of the successful requests since `since`."""
    return store.requests_since(since)


@router.get("/dashboard", response_class=HTMLResponse)
async def dashboard():
    return PAGE.read_text()


@router.get("/v1/stats")
async def stats(http: HttpRequest):
    s, now = http.app.state, time.time()
    start = (now - HISTORY_S) // BUCKET_S * BUCKET_S      # whole buckets only
    return {"now": now, "start": start, "bucket_s": BUCKET_S, "history": s.store.latency_history(start, BUCKET_S),
            "window": {"seconds": WINDOW_S, **summarise(window_rows(s.store, now - WINDOW_S))},
            "recent": s.store.recent_requests(RECENT_ROWS), "queue_depth": s.scheduler.queue_depth,
            "active": s.scheduler.active, "events": s.store.event_summary(), "model": s.model_name,
            "provider": s.loaded.provider, "replicas": replicas(s)}


async def until_closed(ws: WebSocket) -> None:
    """Returns when the client has left, or the server (shutting down) has closed the socket."""
    while (await ws.receive())["type"] != "websocket.disconnect":
        pass


async def forward(ws: WebSocket, queue: asyncio.Queue) -> None:
    """Send each queued frame to the client until the socket closes (waiting on both, so a quiet socket ends too)."""
    async with anyio.create_task_group() as tasks:
        async def watch() -> None:
            await until_closed(ws)
            tasks.cancel_scope.cancel()
        tasks.start_soon(watch)
        try:
            while True:
                await ws.send_json(await queue.get())
        except (WebSocketDisconnect, RuntimeError):       # closed between a frame and its send
            tasks.cancel_scope.cancel()


@router.websocket("/v1/dashboard/live")
async def live(ws: WebSocket):
    await ws.accept()   # server/guard.py refused a foreign origin or a wrong key before the handshake
    queue: asyncio.Queue = asyncio.Queue()
    ws.app.state.live.add(queue)
    try:
        await forward(ws, queue)
    except asyncio.CancelledError:  # a forced shutdown (second Ctrl+C, graceful timeout): not an error to log
        pass
    finally:
        ws.app.state.live.discard(queue)

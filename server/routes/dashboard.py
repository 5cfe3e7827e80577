"""GET /dashboard (a self-contained page), GET /v1/stats (its data), WebSocket /v1/dashboard/live (frames as they happen)."""
from __future__ import annotations

import asyncio
import time
from pathlib import Path

from fastapi import APIRouter, Request as HttpRequest, WebSocket, WebSocketDisconnect
from fastapi.responses import HTMLResponse

from server.auth import accept_websocket

router = APIRouter()
PAGE = Path(__file__).resolve().parent.parent / "static" / "dashboard.html"
HISTORY_S = 3600          # the charts show the last hour
BUCKET_S = 10


@router.get("/dashboard", response_class=HTMLResponse)
async def dashboard():
    return PAGE.read_text()


@router.get("/v1/stats")
async def stats(http: HttpRequest):
    s = http.app.state
    recent = s.store.recent_requests(20)
    return {"history": s.store.latency_history(time.time() - HISTORY_S, BUCKET_S), "recent": recent,
            "queue_depth": s.scheduler.queue_depth, "active": s.scheduler.active,
            "events": s.store.event_summary(), "model": s.model_name, "provider": s.loaded.provider,
            "tokens_per_forward": (sum(r["tokens"] or 0 for r in recent) /
                                   max(1, sum(r["forward_passes"] or 0 for r in recent)))}


@router.websocket("/v1/dashboard/live")
async def live(ws: WebSocket):
    if not await accept_websocket(ws):
        return
    queue: asyncio.Queue = asyncio.Queue()
    ws.app.state.live.add(queue)
    try:
        while True:
            await ws.send_json(await queue.get())
    except (WebSocketDisconnect, RuntimeError):
        pass
    finally:
        ws.app.state.live.discard(queue)

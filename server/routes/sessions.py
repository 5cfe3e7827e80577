"""WebSocket /v1/sessions: the chat-edit session protocol (docs/sessions.md); logic lives in server/sessions.py."""
from __future__ import annotations

import asyncio
import json

from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from server.auth import accept_websocket
from server.sessions import ProtocolError, Session

router = APIRouter()
REQUESTS = ("complete", "edit", "repair")
REPLIES = ("set_document", "patch", "accept", "reject", "undo")
MAX_MESSAGE_CHARS = 1 << 20


@router.websocket("/v1/sessions")
async def sessions(ws: WebSocket):
    if not await accept_websocket(ws):
        return
    state, lock, session = ws.app.state, asyncio.Lock(), None

    async def send(msg: dict) -> None:
        async with lock:
            await ws.send_json(msg)

    state.metrics.active_sessions.inc()
    try:
        while True:
            raw = await ws.receive_text()
            state.store.log_message(session.id if session else "", "in", raw)
            msg = {}
            try:
                if len(raw) > MAX_MESSAGE_CHARS:
                    raise ProtocolError(f"message over {MAX_MESSAGE_CHARS} characters")
                msg = json.loads(raw)
                kind = msg.get("type") if isinstance(msg, dict) else None
                if kind == "open":
                    session = Session(state, send, msg.get("session_id"))
                    if "document" in msg:
                        session.set_document(msg["document"])
                    await send(session.document() | {"type": "opened"})
                elif session is None:
                    raise ProtocolError("send {'type': 'open'} first")
                elif kind in REQUESTS:
                    session.start_request(msg)
                elif kind == "cancel":
                    session.cancel(msg)
                elif kind in REPLIES:
                    await send(getattr(session, kind)(msg))
                else:
                    raise ProtocolError(f"unknown message type {kind!r}")
            except (ProtocolError, ValueError, TypeError) as e:
                await send({"type": "error", "request_id": msg.get("request_id") if isinstance(msg, dict) else None,
                            "message": str(e)})
    except WebSocketDisconnect:
        pass
    finally:
        if session:
            session.close()
        state.metrics.active_sessions.dec()

"""WebSocket /v1/sessions: the chat-edit session protocol (docs/sessions.md); logic lives in server/sessions.py."""
from __future__ import annotations

import asyncio
import json
import logging

from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from runtime.scheduler import Busy
from server.sessions import Complete, Edit, Open, ProtocolError, Session, parse
from server.store import RETRY, Conflict, StoreUnavailable

log = logging.getLogger("quicksilver.sessions")

router = APIRouter()
REPLIES = ("set_document", "patch", "accept", "reject", "undo")
MAX_MESSAGE_CHARS = 1 << 20


def request_id_of(raw: str):
    try:
        msg = json.loads(raw)
    except (ValueError, RecursionError):   # RecursionError: JSON nested deeper than Python's parser goes
        return None
    rid = msg.get("request_id") if isinstance(msg, dict) else None
    return rid if isinstance(rid, str) else None


async def act(state, session: Session | None, send, raw: str) -> Session | None:
    """One message: the session it leaves open (a new one after `open`)."""
    if len(raw) > MAX_MESSAGE_CHARS:
        raise ProtocolError(f"message over {MAX_MESSAGE_CHARS} characters: not stored, not acted on")
    msg = parse(raw)
    state.store.log_message(session.id if session else "", "in", raw)
    if isinstance(msg, Open):
        state.store.prune_now_and_then()
        if session:
            session.close()
        session = Session(state, send, msg.session_id)
        if msg.document:
            session.set_document(msg.document)
        await send(session.opened())
    elif session is None:
        raise ProtocolError("send {'type': 'open'} first")
    elif isinstance(msg, (Complete, Edit)):
        await session.start_request(msg)
    elif msg.type == "cancel":
        session.cancel(msg)
    else:
        await send(getattr(session, msg.type)(msg))
        if msg.type in ("set_document", "patch"):   # the client's own edit: the next edit it calls for, if any
            session.follow()
    return session


@router.websocket("/v1/sessions")
async def sessions(ws: WebSocket):
    await ws.accept()   # server/guard.py refused a foreign origin or a wrong key before the handshake
    state, lock, session, closed = ws.app.state, asyncio.Lock(), None, False

    async def send(msg: dict) -> None:
        nonlocal closed
        async with lock:
            if not closed:
                try:
                    await ws.send_json(msg)
                except Exception:   # the client has gone: what it missed is in the store for `open` to report
                    closed = True

    state.metrics.active_sessions.inc()
    try:
        while True:
            message = await ws.receive()
            if message["type"] == "websocket.disconnect":
                break
            raw = message.get("text")
            try:
                if raw is None:
                    raise ProtocolError("send JSON text messages (this was a binary frame)")
                session = await act(state, session, send, raw)
            except (ProtocolError, Conflict, Busy, ValueError, StoreUnavailable) as e:   # the session stays open
                message = f"{e}: {RETRY}" if isinstance(e, StoreUnavailable) else str(e)
                await send({"type": "error", "request_id": request_id_of(raw or ""), "message": message})
            except Exception as e:   # a defect of ours fails this message alone: the session stays open too
                log.exception("a session message failed")
                await send({"type": "error", "request_id": request_id_of(raw or ""),
                            "message": f"the server failed on this message ({type(e).__name__}: {e}); the session "
                                       "is still open"})
    except WebSocketDisconnect:
        pass
    finally:
        closed = True
        if session:
            session.close()
        state.metrics.active_sessions.dec()

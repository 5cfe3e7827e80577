"""The language server as a client of a running `quicksilver serve` (the team-server set-up).

One persistent websocket per editor to the server's session protocol (docs/sessions.md): each request sends the
document and then `complete` (or `edit` / `repair` for block edits) as messages, cancels as `cancel` messages,
and receives frames and a result. Completion telemetry (shown / accepted / dismissed) goes to the server's events
(POST /v1/events). The editor-side post-processing (one line, scope, syntax validity) is the same as in-process.
"""
from __future__ import annotations

import asyncio
import json
import logging
import urllib.request
from urllib.parse import urlsplit, urlunsplit

from websockets.asyncio.client import connect

from runtime.frames import Completion

from runtime.request import Request

log = logging.getLogger("quicksilver.lsp.remote")

SESSIONS_PATH = "/v1/sessions"
EVENTS_PATH = "/v1/events"
FEEDBACK_TIMEOUT_S = 10


class RemoteError(Exception):
    """The server answered a request with an error."""


class RemoteBackend:
    def __init__(self, url: str, api_key: str | None = None):
        parts = urlsplit(url)
        if parts.scheme not in ("ws", "wss"):
            raise SystemExit(f"error: --server must be a ws:// or wss:// URL, not {url!r}")
        path = parts.path.rstrip("/")
        self.url = urlunsplit((parts.scheme, parts.netloc, path if path.endswith(SESSIONS_PATH)
                               else path + SESSIONS_PATH, "", ""))
        self.http = urlunsplit(("https" if parts.scheme == "wss" else "http", parts.netloc, "", "", ""))
        self.api_key = api_key
        self.ws = None
        self.pending: dict[str, asyncio.Future] = {}
        self.lock = asyncio.Lock()       # a request's document and its `complete` go out back to back
        self.reader: asyncio.Task | None = None

    async def _connection(self):
        if self.ws is None:
            headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else None
            self.ws = await connect(self.url, additional_headers=headers, max_size=1 << 24)
            await self.ws.send(json.dumps({"type": "open"}))
            opened = json.loads(await self.ws.recv())
            if opened.get("type") != "opened":
                raise RemoteError(f"the server did not open a session: {opened}")
            log.info("session %s on %s", opened.get("session_id"), self.url)
            self.reader = asyncio.create_task(self._read(self.ws))
        return self.ws

    async def _read(self, ws) -> None:
        try:
            async for raw in ws:
                msg = json.loads(raw)
                fut = self.pending.get(str(msg.get("request_id")))
                if fut is None or fut.done():
                    if msg.get("type") == "error":
                        log.warning("server: %s", msg.get("message"))
                    continue
                if msg["type"] == "result":
                    fut.set_result(msg)
                elif msg["type"] == "cancelled":
                    fut.set_result(None)
                elif msg["type"] == "error" and msg.get("refused"):   # an edit runtime/verify.py did not pass
                    fut.set_result({"text": "", "stats": {"refused": msg.get("message", ""), "tokens": 0, "ms": 0.0,
                                                          "stop_reason": "refused"}})
                elif msg["type"] == "error":   # the server refused this request (a bad value)
                    fut.set_exception(ValueError(msg.get("message", "the server refused the request")))
        except Exception as e:  # the connection is gone: fail what waits, reconnect on the next request
            log.warning("connection to %s lost: %s", self.url, e)
        finally:
            self.ws = None
            for fut in self.pending.values():
                if not fut.done():
                    fut.set_exception(RemoteError("connection to the server lost"))

    async def run(self, uri: str, req: Request) -> Completion | None:
        fut = asyncio.get_running_loop().create_future()
        self.pending[req.id] = fut
        try:
            async with self.lock:
                ws = await self._connection()
                text = req.prefix + (req.existing if req.mode == "edit" else "") + req.suffix
                await ws.send(json.dumps({"type": "set_document", "text": text, "language": req.language or ""}))
                start = len(req.prefix)
                if req.mode == "edit":
                    rng = {"start": start, "end": start + len(req.existing)}
                    await ws.send(json.dumps({"type": "repair" if req.edit == "repair" else "edit",
                                              "request_id": req.id, "range": rng}))
                else:
                    await ws.send(json.dumps({"type": "complete", "request_id": req.id, "offset": start,
                                              "max_tokens": req.max_new_tokens, "editor": req.editor}))
            try:
                msg = await fut
            except asyncio.CancelledError:
                if self.ws is not None:
                    await self.ws.send(json.dumps({"type": "cancel", "request_id": req.id}))
                raise
        finally:
            self.pending.pop(req.id, None)
        if msg is None:
            return None
        stats = msg.get("stats") or {}
        return Completion(req.id, msg["text"], msg["text"], stats)   # shaped by the server as it would be here

    async def feedback(self, event: str, cid: str) -> None:
        """One event (shown, accepted or dismissed: the names the server's store accepts) for a completion id."""
        body = json.dumps({"completion_id": cid, "event": event}).encode()
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        request = urllib.request.Request(self.http + EVENTS_PATH, body, headers, method="POST")
        try:
            await asyncio.to_thread(urllib.request.urlopen, request, timeout=FEEDBACK_TIMEOUT_S)
        except Exception as e:  # telemetry must never break the editor
            log.warning("could not send %s for %s: %s", event, cid, e)

"""Chat-edit sessions: a document per session, completions and edits proposed at ranges, accept / reject / undo.

State lives in SQLite (server/store.py), so a client that reconnects with its session id, or a restarted
server, resumes where it was. The websocket route (server/routes/sessions.py) only moves JSON; the protocol is
written down in docs/sessions.md.
"""
from __future__ import annotations

import asyncio
import uuid

from runtime.engine import Completion, Request
from server.generate import run

LANGUAGES_WITH_COMMENTS = {"python": "#"}
DEFAULT_LANGUAGE = "python"


class ProtocolError(ValueError):
    """A message the session cannot act on; reported to the client, the connection stays open."""


class Session:
    def __init__(self, state, send, sid: str | None = None):
        self.state, self.store, self.send = state, state.store, send
        self.inflight: dict[str, tuple[asyncio.Task, int, int, object]] = {}
        loaded = self.store.load_session(sid) if sid else None
        if sid and loaded is None:
            raise ProtocolError(f"unknown session {sid!r}: open a new one without session_id")
        self.id = sid or uuid.uuid4().hex
        doc = loaded or {"text": "", "language": DEFAULT_LANGUAGE, "version": 0}
        self.text, self.language, self.version = doc["text"], doc["language"], doc["version"]
        if loaded is None:
            self._save()

    def _save(self) -> None:
        self.store.save_session(self.id, self.text, self.language, self.version)

    def document(self) -> dict:
        return {"type": "document", "session_id": self.id, "version": self.version, "text": self.text,
                "language": self.language}

    def _range(self, msg: dict) -> tuple[int, int]:
        r = msg.get("range") or {}
        start, end = r.get("start", msg.get("offset")), r.get("end", msg.get("offset"))
        if not isinstance(start, int) or not isinstance(end, int) or not 0 <= start <= end <= len(self.text):
            raise ProtocolError(f"range must be 0 <= start <= end <= {len(self.text)} (character offsets)")
        return start, end

    # --- document --------------------------------------------------------------------------------
    def set_document(self, msg: dict) -> dict:
        if not isinstance(msg.get("text"), str):
            raise ProtocolError("set_document needs 'text'")
        self.text, self.language = msg["text"], msg.get("language", self.language)
        self.version += 1
        self._save()
        return self.document()

    def patch(self, msg: dict) -> dict:
        start, end = self._range(msg)
        if not isinstance(msg.get("text"), str):
            raise ProtocolError("patch needs 'text' to put at the range")
        self.text = self.text[:start] + msg["text"] + self.text[end:]
        self.version += 1
        self._save()
        return self.document()

    # --- model requests ----------------------------------------------------------------------------
    def start_request(self, msg: dict) -> None:
        kind = msg["type"]
        rid = str(msg.get("request_id") or uuid.uuid4().hex[:12])
        if rid in self.inflight:
            raise ProtocolError(f"request {rid} is already running")
        start, end = self._range(msg)
        prefix, suffix = self.text[:start], self.text[end:]
        if kind == "complete":
            knobs = {k: float(msg[k]) for k in ("temperature", "threshold", "eom_bias") if k in msg}
            req = Request(prefix=prefix, suffix=suffix, max_new_tokens=int(msg.get("max_tokens", 32)), id=rid, **knobs)
        else:
            if start == end:
                raise ProtocolError(f"{kind} needs a non-empty range")
            instruction = msg.get("instruction")
            if instruction:  # the model has no chat head: an instruction becomes a comment above the block
                mark = LANGUAGES_WITH_COMMENTS.get(self.language, "#")
                line_start = prefix.rfind("\n") + 1
                prefix = prefix[:line_start] + f"{mark} {instruction}\n" + prefix[line_start:]
            req = Request(prefix=prefix, suffix=suffix, mode="edit", existing=self.text[start:end], id=rid,
                          edit="repair" if kind == "repair" else "all")
        for other, (task, s, e, _) in list(self.inflight.items()):  # a newer request on the same range wins
            if s <= end and start <= e:
                task.cancel()
        task = asyncio.create_task(self._run(req, start, end))
        self.inflight[rid] = (task, start, end, req)

    async def _run(self, req: Request, start: int, end: int) -> None:
        version = self.version
        try:
            async for item in run(self.state, req, "/v1/sessions"):
                if isinstance(item, Completion):
                    self.store.save_edit(self.id, req.id, start, end, self.text[start:end], item.text, "proposed")
                    await self.send({"type": "result", "request_id": req.id, "text": item.text, "version": version,
                                     "range": {"start": start, "end": end}, "stats": item.stats})
                else:
                    await self.send({"type": "frame", "request_id": req.id, "step": item.step, "text": item.text,
                                     "committed": item.committed, "masked": item.masked})
        except asyncio.CancelledError:
            await self.send({"type": "cancelled", "request_id": req.id})
        except Exception as e:  # Busy or a bad request: the session goes on
            await self.send({"type": "error", "request_id": req.id, "message": str(e)})
        finally:
            self.inflight.pop(req.id, None)

    def cancel(self, msg: dict) -> None:
        entry = self.inflight.get(str(msg.get("request_id")))
        if entry is None:
            raise ProtocolError(f"no running request {msg.get('request_id')!r}")
        entry[0].cancel()

    # --- proposals -----------------------------------------------------------------------------------
    def accept(self, msg: dict) -> dict:
        edit = self.store.get_edit(self.id, str(msg.get("request_id")))
        if edit is None or edit["state"] != "proposed":
            raise ProtocolError(f"no proposed edit for request {msg.get('request_id')!r}")
        if self.text[edit["start"]:edit["end"]] != edit["old"]:
            raise ProtocolError("the document changed under this proposal; request it again")
        self.text = self.text[:edit["start"]] + edit["new"] + self.text[edit["end"]:]
        self.version += 1
        self._save()
        self.store.save_edit(self.id, edit["request_id"], edit["start"], edit["end"], edit["old"], edit["new"], "accepted")
        return self.document()

    def reject(self, msg: dict) -> dict:
        edit = self.store.get_edit(self.id, str(msg.get("request_id")))
        if edit is None or edit["state"] != "proposed":
            raise ProtocolError(f"no proposed edit for request {msg.get('request_id')!r}")
        self.store.save_edit(self.id, edit["request_id"], edit["start"], edit["end"], edit["old"], edit["new"], "rejected")
        return {"type": "rejected", "request_id": edit["request_id"]}

    def undo(self, msg: dict) -> dict:
        edit = self.store.last_accepted(self.id)
        if edit is None:
            raise ProtocolError("nothing to undo")
        start, new_end = edit["start"], edit["start"] + len(edit["new"])
        if self.text[start:new_end] != edit["new"]:
            raise ProtocolError("the document changed after that edit; undo it by hand")
        self.text = self.text[:start] + edit["old"] + self.text[new_end:]
        self.version += 1
        self._save()
        self.store.save_edit(self.id, edit["request_id"], edit["start"], edit["end"], edit["old"], edit["new"], "undone")
        return self.document()

    def close(self) -> None:
        for task, *_ in list(self.inflight.values()):
            task.cancel()

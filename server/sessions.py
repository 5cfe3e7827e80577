"""Chat-edit sessions: a document per session, completions and edits proposed at ranges, accept / reject / undo.

State lives in the server's store (server/store.py: SQLite, or a PostgreSQL database servers share), so a client
that reconnects with its session id, or a restarted server, resumes where it was; every change is made against the stored document and version, so two clients on
one session never overwrite each other silently. Messages are validated by the models below (a wrong type or
value is an `error` message, never a dropped connection). The websocket route (server/routes/sessions.py) only
moves JSON; the protocol is written down in docs/sessions.md.
"""
from __future__ import annotations

import asyncio
import json
import uuid
from contextlib import aclosing, suppress
from dataclasses import dataclass
from typing import Annotated, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, TypeAdapter, ValidationError

from runtime.frames import Completion
from runtime.nextedit import from_history, keep
from runtime.request import DEFAULT_MAX_NEW_TOKENS, MAX_NEW_TOKENS, Request, editor_request
from runtime.scheduler import Handle
from server.generate import run, submit
from server.store import RETRY, Conflict, StoreUnavailable

LANGUAGES_WITH_COMMENTS = {"python": "#"}
DEFAULT_LANGUAGE = "python"
MAX_ID_CHARS = 64
FOLLOW_AFTER_S = 0.5    # a next edit is looked for once the client's changes pause this long (typing at 0.3 s a key
                        # made one per keystroke at 0.15: `warn → warni`, `warn → warnin`, ...)
NEXT_EDIT = "next-"     # the request ids of next-edit proposals
CHANGE_TRIES = 5        # a change without a version, made again when another server stored one first
INTERRUPTED = "the server stopped while this request ran; send it again"


class ProtocolError(ValueError):
    """A message the session cannot act on; reported to the client, the connection stays open."""


# --- messages ---------------------------------------------------------------------------------------------
Id = Annotated[str, Field(min_length=1, max_length=MAX_ID_CHARS)]
Language = Annotated[str, Field(max_length=32)]
Real = Annotated[float, Field(allow_inf_nan=False)]


class Msg(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Range(Msg):
    start: StrictInt
    end: StrictInt


class Document(Msg):
    text: str
    language: Language | None = None


class Open(Msg):
    type: Literal["open"]
    session_id: Id | None = None
    document: Document | None = None


class SetDocument(Msg):
    type: Literal["set_document"]
    text: str
    language: Language | None = None
    version: StrictInt | None = None      # the version this change is based on: a mismatch is a conflict


class Patch(Msg):
    type: Literal["patch"]
    text: str
    range: Range | None = None
    offset: StrictInt | None = None
    version: StrictInt | None = None


class Complete(Msg):
    type: Literal["complete"]
    request_id: Id | None = None
    range: Range | None = None
    offset: StrictInt | None = None
    max_tokens: Annotated[StrictInt, Field(ge=1, le=MAX_NEW_TOKENS)] = DEFAULT_MAX_NEW_TOKENS
    temperature: Annotated[Real, Field(ge=0, le=2)] | None = None
    threshold: Annotated[Real, Field(gt=0, le=1)] | None = None
    eom_bias: Annotated[Real, Field(ge=-50, le=50)] | None = None
    editor: StrictBool = False   # the editors' request for the cursor (a line or a block: runtime/engine.py
                                 # editor_request), as the language server asks in-process; max_tokens caps it


class Edit(Msg):
    type: Literal["edit", "repair"]
    request_id: Id | None = None
    range: Range | None = None
    offset: StrictInt | None = None
    instruction: Annotated[str, Field(max_length=2000)] | None = None


class Cancel(Msg):
    type: Literal["cancel"]
    request_id: Id


class Reply(Msg):
    type: Literal["accept", "reject"]
    request_id: Id


class Undo(Msg):
    type: Literal["undo"]


TYPES = ("open", "set_document", "patch", "complete", "edit", "repair", "cancel", "accept", "reject", "undo")
MESSAGE = TypeAdapter(Annotated[Union[Open, SetDocument, Patch, Complete, Edit, Cancel, Reply, Undo],
                                Field(discriminator="type")])


def parse(raw: str):
    """A validated message; ProtocolError saying what is wrong (and where) otherwise."""
    try:
        return MESSAGE.validate_json(raw)
    except ValidationError as e:
        first = e.errors()[0]
        if first["type"] == "union_tag_not_found":
            raise ProtocolError(f"a message is a JSON object with a 'type': one of {', '.join(TYPES)}") from None
        if first["type"] == "union_tag_invalid":
            raise ProtocolError(f"unknown message type {first['input'].get('type')!r}") from None
        if first["type"] == "json_invalid":
            try:
                json.loads(raw)   # Python's parser takes what pydantic's refuses: lone surrogates
            except (ValueError, RecursionError):   # RecursionError: nested deeper than Python's parser goes
                raise ProtocolError(f"not JSON: {first['ctx'].get('error', first['msg'])}") from None
            raise ProtocolError("the message holds a lone surrogate (half a UTF-16 pair): send valid Unicode") from None
        where = ".".join(str(x) for x in first["loc"][1:]) or "message"
        raise ProtocolError(f"{where}: {first['msg']}") from None


# --- a session --------------------------------------------------------------------------------------------
@dataclass
class Running:
    task: asyncio.Task
    handle: Handle
    start: int
    end: int


class Session:
    def __init__(self, state, send, sid: str | None = None):
        self.state, self.store, self.send = state, state.store, send
        self.inflight: dict[str, Running] = {}
        self.versions: list[str] = []      # the document's last texts, for next edits (in memory: one connection)
        self.following: asyncio.Task | None = None
        self.closed = False
        if sid and self.store.load_session(sid) is None:
            raise ProtocolError(f"unknown session {sid!r}: open a new one without session_id")
        self.id = sid or uuid.uuid4().hex
        if not sid:
            self.store.save_session(self.id, "", DEFAULT_LANGUAGE, 0)
        self._load()

    def _load(self) -> None:
        doc = self.store.load_session(self.id)
        if doc is None:
            raise ProtocolError(f"session {self.id} no longer exists (idle sessions are deleted): open a new one")
        self.text, self.language, self.version = doc["text"], doc["language"], doc["version"]
        keep(self.versions, self.text)

    def _change(self, text: str, language: str | None = None, based_on: int | None = None) -> dict:
        """Store a new text at the next version, against what is stored now (another client may have changed it).
        A change based on a version is refused if the document moved past it; one based on none (a patch without
        `version`) is made again on the current text when another server stored a change first (CHANGE_TRIES).
        Next-edit proposals made for an earlier text are stale once it changes."""
        for attempt in range(CHANGE_TRIES):
            self._load()
            if based_on is not None and based_on != self.version:
                raise ProtocolError(f"conflict: the document is at version {self.version}, not {based_on}; "
                                    "apply your change to its current text")
            new = text(self.text) if callable(text) else text
            try:
                self.store.save_session(self.id, new, language or self.language, self.version + 1)
                break
            except Conflict:
                if based_on is not None or attempt == CHANGE_TRIES - 1:
                    raise
        for e in self.store.edits_in(self.id, ("proposed",)):
            if e["request_id"].startswith(NEXT_EDIT):
                self.store.save_edit(self.id, e["request_id"], e["start"], e["end"], e["old"], e["new"], "stale")
        self._load()
        return self.document()

    def document(self) -> dict:
        return {"type": "document", "session_id": self.id, "version": self.version, "text": self.text,
                "language": self.language}

    def opened(self) -> dict:
        """The session, and what became of requests the client may not have heard the end of (a restart, or a
        dropped connection): proposals still open, and requests a stopped server never finished."""
        for e in self.store.edits_in(self.id, ("running",)):
            if f"{self.id}/{e['request_id']}" not in self.state.running:
                self.store.save_edit(self.id, e["request_id"], e["start"], e["end"], e["old"], "", "interrupted")
        pending = [{"request_id": e["request_id"], "state": e["state"], "range": {"start": e["start"], "end": e["end"]},
                    **({"text": e["new"]} if e["state"] == "proposed" else {"message": INTERRUPTED})}
                   for e in self.store.edits_in(self.id, ("proposed", "interrupted"))]
        return self.document() | {"type": "opened", "requests": pending}

    def _range(self, msg) -> tuple[int, int]:
        self._load()
        if msg.range is not None and msg.offset is not None:
            raise ProtocolError("give either 'range' or 'offset', not both")
        start = msg.range.start if msg.range else msg.offset
        end = msg.range.end if msg.range else msg.offset
        if start is None or not 0 <= start <= end <= len(self.text):
            raise ProtocolError(f"range must be 0 <= start <= end <= {len(self.text)} (character offsets), "
                                "given as 'range': {'start': S, 'end': E} or 'offset': N")
        return start, end

    # --- document --------------------------------------------------------------------------------
    def set_document(self, msg: SetDocument | Document) -> dict:
        return self._change(msg.text, msg.language, getattr(msg, "version", None))

    def patch(self, msg: Patch) -> dict:
        start, end = self._range(msg)
        return self._change(lambda t: t[:start] + msg.text + t[end:], None, msg.version)

    def follow(self) -> None:
        """After the client's own change: look, in the background, for the next edit it calls for."""
        if self.following is not None:
            self.following.cancel()
        self.following = asyncio.create_task(self._next_edit())

    async def _next_edit(self) -> None:
        """The next edit the client's last changes call for (runtime/nextedit.py: a rename carried to the binding's
        other uses, a deleted parameter deleted from the calls; checked before it is offered): stored as a proposal
        the client can accept or reject, sent as a `next_edit` message."""
        await asyncio.sleep(FOLLOW_AFTER_S)
        version, text, history = self.version, self.text, self.versions[:-1]
        found = await asyncio.get_running_loop().run_in_executor(None, from_history, history, text)
        self._load()
        if found is None or self.closed or self.version != version:   # the document moved on: it is stale
            return
        start, end = min(a for a, _, _ in found.edits), max(b for _, b, _ in found.edits)
        new, rid = found.after[start:len(found.after) - (len(text) - end)], f"{NEXT_EDIT}{version}"
        self.store.save_edit(self.id, rid, start, end, text[start:end], new, "proposed")
        await self.send({"type": "next_edit", "request_id": rid, "version": version, "range": {"start": start, "end": end},
                         "text": new, "title": found.title})

    # --- model requests ----------------------------------------------------------------------------
    async def start_request(self, msg: Complete | Edit) -> None:
        rid = msg.request_id or uuid.uuid4().hex[:12]
        if rid in self.inflight:
            raise ProtocolError(f"request {rid} is already running")
        start, end = self._range(msg)
        prefix, suffix = self.text[:start], self.text[end:]
        if msg.type == "complete":
            knobs = {k: getattr(msg, k) for k in ("temperature", "threshold", "eom_bias") if getattr(msg, k) is not None}
            make = editor_request if msg.editor else Request
            req = make(prefix=prefix, suffix=suffix, max_new_tokens=msg.max_tokens, id=rid,
                       language=self.language or None, **knobs)
        else:
            if start == end:
                raise ProtocolError(f"{msg.type} needs a non-empty range")
            if msg.instruction and msg.type == "repair":
                raise ProtocolError("instruction: only an edit takes one (a repair fixes what the code says)")
            if msg.instruction:  # the model has no chat head: an instruction becomes a comment above the block
                mark = LANGUAGES_WITH_COMMENTS.get(self.language, "#")
                line_start = prefix.rfind("\n") + 1
                prefix = prefix[:line_start] + f"{mark} {msg.instruction}\n" + prefix[line_start:]
            req = Request(prefix=prefix, suffix=suffix, mode="edit", existing=self.text[start:end], id=rid,
                          edit="repair" if msg.type == "repair" else "all", language=self.language or None)
        handle = (await submit(self.state, [req]))[0]   # Busy or a bad request: an error now, nothing started
        for other in list(self.inflight.values()):  # a newer request on an overlapping range wins
            if other.start <= end and start <= other.end:
                other.handle.cancel()
        self.store.save_edit(self.id, rid, start, end, self.text[start:end], "", "running")
        self.state.running.add(f"{self.id}/{rid}")
        task = asyncio.create_task(self._run(req, handle, start, end))
        self.inflight[rid] = Running(task, handle, start, end)

    async def _run(self, req: Request, handle: Handle, start: int, end: int) -> None:
        """Frames, then exactly one of `result`, `cancelled` or `error` for the request."""
        version, old = self.version, self.text[start:end]
        try:
            async with aclosing(run(self.state, req, "/v1/sessions", handle)) as frames:
                async for item in frames:
                    if not isinstance(item, Completion):
                        await self.send({"type": "frame", "request_id": req.id, "step": item.step, "text": item.text,
                                         "committed": item.committed, "masked": item.masked})
                    elif item.stats["stop_reason"] in ("cancelled", "shutdown"):
                        # the connection went (a client or a server stopping): `open` reports it; else the client
                        # or a newer request cancelled it
                        gone = self.closed or item.stats["stop_reason"] == "shutdown"
                        self.store.save_edit(self.id, req.id, start, end, old, "", "interrupted" if gone else "cancelled")
                        await self.send({"type": "cancelled", "request_id": req.id})
                    elif item.stats.get("refused"):   # an edit runtime/verify.py does not let through: why
                        self.store.save_edit(self.id, req.id, start, end, old, "", "refused")
                        await self.send({"type": "error", "request_id": req.id, "message": item.stats["refused"],
                                         "refused": True})
                    else:
                        self.store.save_edit(self.id, req.id, start, end, old, item.text, "proposed")
                        await self.send({"type": "result", "request_id": req.id, "text": item.text, "version": version,
                                         "range": {"start": start, "end": end}, "stats": item.stats})
        except Exception as e:  # the session goes on; a closed connection hears nothing more
            with suppress(StoreUnavailable):   # the database away: the client still hears why
                self.store.save_edit(self.id, req.id, start, end, old, "", "failed")
            await self.send({"type": "error", "request_id": req.id,
                             "message": f"{e}: {RETRY}" if isinstance(e, StoreUnavailable) else str(e)})
        finally:
            self.inflight.pop(req.id, None)
            self.state.running.discard(f"{self.id}/{req.id}")

    def cancel(self, msg: Cancel) -> None:
        running = self.inflight.get(msg.request_id)
        if running is None:
            raise ProtocolError(f"no running request {msg.request_id!r}")
        running.handle.cancel()

    # --- proposals -----------------------------------------------------------------------------------
    def _proposal(self, rid: str) -> dict:
        edit = self.store.get_edit(self.id, rid)
        if edit is None or edit["state"] != "proposed":
            raise ProtocolError(f"no proposed edit for request {rid!r}")
        return edit

    def accept(self, msg: Reply) -> dict:
        edit = self._proposal(msg.request_id)
        self._load()
        if self.text[edit["start"]:edit["end"]] != edit["old"]:
            raise ProtocolError("the document changed under this proposal; request it again")
        doc = self._change(lambda t: t[:edit["start"]] + edit["new"] + t[edit["end"]:])
        self.store.save_edit(self.id, edit["request_id"], edit["start"], edit["end"], edit["old"], edit["new"], "accepted")
        return doc

    def reject(self, msg: Reply) -> dict:
        edit = self._proposal(msg.request_id)
        self.store.save_edit(self.id, edit["request_id"], edit["start"], edit["end"], edit["old"], edit["new"], "rejected")
        return {"type": "rejected", "request_id": edit["request_id"]}

    def undo(self, msg: Undo) -> dict:
        edit = self.store.last_accepted(self.id)
        if edit is None:
            raise ProtocolError("nothing to undo")
        self._load()
        start, new_end = edit["start"], edit["start"] + len(edit["new"])
        if self.text[start:new_end] != edit["new"]:
            raise ProtocolError("the document changed after that edit; undo it by hand")
        doc = self._change(lambda t: t[:start] + edit["old"] + t[new_end:])
        self.store.save_edit(self.id, edit["request_id"], edit["start"], edit["end"], edit["old"], edit["new"], "undone")
        return doc

    def close(self) -> None:
        """The connection is gone: running requests stop, and are reported as interrupted on the next `open`."""
        self.closed = True
        if self.following is not None:
            self.following.cancel()
        for running in list(self.inflight.values()):
            running.handle.cancel()

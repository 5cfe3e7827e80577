"""quicksilver lsp: a pygls language server for ghost-text completions and whole-block edits (stdio or --tcp).

The model runs in-process on the runtime's scheduler, or on a `quicksilver serve` reached with `--server ws://…`
(lsp/remote.py). One handler per LSP feature; the logic is in plain functions: lsp/documents.py (`cursor_context`
→ `build_request` → `run_request`) and lsp/edits.py (the block edits and repairs). Logs go to stderr or --log-file
(stdout is the protocol). A newer
version of a document cancels the request running on it; so does `$/cancelRequest`. Only documents the client
opened are read, never a file on disk (--tcp has no authentication). Completion telemetry (shown / accepted /
dismissed) goes to the backend.
"""
from __future__ import annotations

import asyncio
import logging
import sys
import types
from collections import OrderedDict
from dataclasses import replace
from pathlib import Path
from urllib.parse import unquote, urlparse

from lsprotocol import types as lsp
from pygls.exceptions import JsonRpcInvalidParams
from pygls.lsp.server import LanguageServer
from pygls.protocol import LanguageServerProtocol

from runtime.answers import rest_after
from runtime.frames import Completion
from runtime.request import EDITOR_MIN_CONFIDENCE, UNCALIBRATED_MIN_CONFIDENCE, Request, editor_min_confidence, withheld
from runtime.workspace import for_editor
from lsp.documents import DocumentError, build_request, cursor_context, other_files, run_request
from lsp.edits import (ACTIONS, EDIT_COMMAND, OFFERED, Refused, block_edit, next_edit, offered_edit, offered_repair,
                       refused, remember)

log = logging.getLogger("quicksilver.lsp")

CACHE_ENTRIES = 64
ACCEPT, REJECT, EDIT_BLOCK = "quicksilver/accept", "quicksilver/reject", "quicksilver/editBlock"
SHOWN, ACCEPTED, DISMISSED = "shown", "accepted", "dismissed"   # the event names the server's store accepts
SHUTDOWN_DRAIN_S = 5   # how long shutdown waits for telemetry still on its way


class Protocol(LanguageServerProtocol):
    """Answers a request whose params do not decode with an Invalid Params *error response* (pygls alone would
    only show a message, leaving the client's request unanswered)."""

    def structure_message(self, data):
        try:
            return super().structure_message(data)
        except JsonRpcInvalidParams:
            if "id" in data and "method" in data:
                log.warning("invalid params for %s (request %s)", data["method"], data["id"])
                error = JsonRpcInvalidParams(f"Invalid params for {data['method']}")
                self._send_response(data["id"], None, error.to_response_error())
                return types.SimpleNamespace(jsonrpc="answered")  # handle_message ignores it
            raise


class CompletionCache:
    """Completions shown recently: when the user types the start of one, the rest is served without the model."""

    def __init__(self, size: int = CACHE_ENTRIES):
        self.size, self.items = size, OrderedDict()   # (uri, prefix, suffix) → (completion id, text, confidence)

    def put(self, uri: str, prefix: str, suffix: str, cid: str, text: str, confidence: float) -> None:
        self.items[(uri, prefix, suffix)] = (cid, text, confidence)
        self.items.move_to_end((uri, prefix, suffix))
        while len(self.items) > self.size:
            self.items.popitem(last=False)

    def get(self, uri: str, prefix: str, suffix: str) -> tuple[str, str, float] | None:
        for (u, p, s), (cid, text, confidence) in reversed(self.items.items()):
            if u == uri and s == suffix and (rest := rest_after(p, text, prefix)) is not None:
                return cid, rest, confidence
        return None


class QuicksilverServer(LanguageServer):
    def __init__(self, backend, cache: bool = True, min_confidence: float | None = None, index: bool = True):
        super().__init__("quicksilver", "0.2.0", protocol_cls=Protocol)
        self.index_workspace = index                     # index the workspace folder (in process, a git work tree)
        self.min_confidence = min_confidence             # completions less confident than this are not shown
                                                         # (None: the editors' default for the model)
        self.backend = backend                           # LocalBackend (in-process) or RemoteBackend (lsp/remote.py)
        self.running: dict[str, asyncio.Task] = {}      # document uri → the request running on it
        self.cache = CompletionCache(CACHE_ENTRIES if cache else 0)
        self.sending: set[asyncio.Task] = set()         # telemetry on its way to the backend
        self.history: dict[str, list[str]] = {}          # uri → its last versions' text (lsp/edits.py next_edit)


class LocalBackend:
    """The engine in this process, through the runtime's batching scheduler."""

    def __init__(self, scheduler):
        self.scheduler = scheduler
        self.workspace = None   # the editor's workspace folder's index (runtime/workspace.py), once initialized
        self.root: str | None = None   # the editor's workspace folder

    async def run(self, uri: str, req: Request) -> Completion | None:
        if uri.startswith("file://"):   # names analysis resolves the file's imports from where it is
            req = replace(req, path=unquote(urlparse(uri).path), root=self.root)
        if self.workspace is not None:   # the repository's chunks after the open documents (off the event loop)
            req = await asyncio.get_running_loop().run_in_executor(None, self.workspace.ground, req)
        handle = self.scheduler.submit(req)
        try:
            async for item in handle.aiter():
                if isinstance(item, Completion):
                    return item if item.stats["stop_reason"] != "cancelled" else None
        finally:
            handle.cancel()  # on cancellation the scheduler drops it at its next step
        return None

    async def feedback(self, event: str, cid: str) -> None:
        """The in-process engine keeps no event store: events go to the log (`quicksilver serve` counts them)."""
        log.info("event %s: completion %s", event, cid)


async def complete_at(ls: QuicksilverServer, uri: str, position: lsp.Position,
                      explicit: bool = False) -> tuple[str, str, float] | None:
    """(completion id, text, confidence) at the cursor: from the cache when the user is typing into a shown
    completion. An automatic request shows nothing below the confidence floor; an explicit one (the user asked)
    shows the model's best answer whatever its confidence. The caller returns it to the client, so it counts as
    shown."""
    try:
        prefix, suffix, single, language = cursor_context(ls, uri, position)
    except DocumentError as e:
        log.warning("no completion: %s", e)
        return None
    if (hit := ls.cache.get(uri, prefix, suffix)) is not None:
        log.info("completion %s served from the cache", hit[0])
    else:
        try:
            result = await run_request(ls, uri, build_request(prefix, suffix, single, language,
                                                              other_files(ls, uri, language)))
        except ValueError as e:   # the engine or the server refused the request: no completion, said in the log
            log.warning("no completion: %s", e)
            return None
        if result is None or not result.text.strip():
            return None
        floor = editor_min_confidence(result) if ls.min_confidence is None else ls.min_confidence
        if withheld(result, floor):   # nothing rather than noise, unless the user asked
            log.info("completion %s %s: confidence %.2f < %.2f", result.id, "shown as asked" if explicit else
                     "withheld", result.stats["confidence"], floor)
            if not explicit:
                return None
        else:
            ls.cache.put(uri, prefix, suffix, result.id, result.text, result.stats["confidence"])
        hit = result.id, result.text, result.stats["confidence"]
    send_event(ls, SHOWN, hit[0])
    return hit


def invoked(context: lsp.CompletionContext | None) -> bool:
    """Whether the user asked for a completion: Neovim's omnifunc (<C-x><C-o>) sends no context. A client that
    sends one cannot say (LSP's Invoked also covers completion while typing): it gets the abstaining answer."""
    return context is None


def send_event(ls: QuicksilverServer, event: str, cid: str) -> None:
    """Telemetry off the request path: the editor never waits for the backend to record it."""
    if not cid:
        return
    task = asyncio.ensure_future(ls.backend.feedback(event, cid))
    ls.sending.add(task)
    task.add_done_callback(ls.sending.discard)


def create_server(backend, cache: bool = True, min_confidence: float | None = None,
                  index: bool = True) -> QuicksilverServer:
    server = QuicksilverServer(backend, cache, min_confidence, index)

    @server.feature(lsp.TEXT_DOCUMENT_INLINE_COMPLETION, lsp.InlineCompletionOptions())
    async def inline_completion(ls: QuicksilverServer, params: lsp.InlineCompletionParams):
        explicit = params.context.trigger_kind == lsp.InlineCompletionTriggerKind.Invoked
        got = await complete_at(ls, params.text_document.uri, params.position, explicit)
        if got is None:
            return lsp.InlineCompletionList(items=[])
        cid, text, _ = got
        here = lsp.Range(start=params.position, end=params.position)
        return lsp.InlineCompletionList(items=[lsp.InlineCompletionItem(
            insert_text=text, range=here, command=lsp.Command(title="accepted", command=ACCEPT, arguments=[cid]))])

    @server.feature(lsp.TEXT_DOCUMENT_COMPLETION, lsp.CompletionOptions(trigger_characters=[".", "(", " "]))
    async def completion(ls: QuicksilverServer, params: lsp.CompletionParams):
        got = await complete_at(ls, params.text_document.uri, params.position, invoked(params.context))
        if got is None:
            return lsp.CompletionList(is_incomplete=True, items=[])
        cid, text, confidence = got
        here = lsp.Range(start=params.position, end=params.position)
        label = text.strip().split("\n", 1)[0][:60]
        detail = f"quicksilver · confidence {confidence:.2f}"
        return lsp.CompletionList(is_incomplete=True, items=[lsp.CompletionItem(
            label=label, kind=lsp.CompletionItemKind.Snippet, detail=detail, data={"id": cid},
            filter_text=text, insert_text_format=lsp.InsertTextFormat.PlainText,
            text_edit=lsp.TextEdit(range=here, new_text=text),
            command=lsp.Command(title="accepted", command=ACCEPT, arguments=[cid]))])

    @server.feature(lsp.TEXT_DOCUMENT_CODE_ACTION, lsp.CodeActionOptions(
        code_action_kinds=[lsp.CodeActionKind.RefactorRewrite, lsp.CodeActionKind.QuickFix]))
    async def code_actions(ls: QuicksilverServer, params: lsp.CodeActionParams):
        """Complete block, as a command; asked for (not a light bulb's automatic request), a verified repair of
        the block with its change in the title, or none."""
        uri, rng = params.text_document.uri, ls.protocol._converter.unstructure(params.range)
        actions = [lsp.CodeAction(title=f"quicksilver: {ACTIONS[mode]}", kind=lsp.CodeActionKind.RefactorRewrite,
                                  command=lsp.Command(title=ACTIONS[mode], command=EDIT_COMMAND,
                                                      arguments=[uri, rng, mode])) for mode in OFFERED[:1]]
        following = await asyncio.get_running_loop().run_in_executor(None, next_edit, ls, uri)   # analysis only:
        if following is not None:                                                              # the light bulb's too
            actions.insert(0, following)
        if params.context.trigger_kind != lsp.CodeActionTriggerKind.Automatic and \
                (repair := await offered_repair(ls, uri, params.range)) is not None:
            actions.append(repair)
        return actions

    @server.command(EDIT_COMMAND)
    async def edit_command(ls: QuicksilverServer, *args):
        """Arguments: uri, range, mode, and optionally an instruction."""
        if len(args) not in (3, 4):
            raise JsonRpcInvalidParams(f"{EDIT_COMMAND} takes uri, range, mode and an optional instruction")
        uri, rng, mode, instruction = (*args, "")[:4]
        r = ls.protocol._converter.structure(vars_of(rng), lsp.Range)
        try:
            got = await block_edit(ls, uri, r, None, mode, instruction)
        except Refused as e:
            return refused(ls, mode, str(e), {"applied": False})
        except ValueError as e:
            raise JsonRpcInvalidParams(str(e))
        if got is None:
            return {"applied": False}
        cid, edit, version, change = got
        label = f"quicksilver: {ACTIONS[mode]}" + (f": {change}" if change else "")
        answer = await ls.workspace_apply_edit_async(lsp.ApplyWorkspaceEditParams(
            edit=offered_edit(ls, uri, edit, version, label), label=label))
        log.info("block edit %s (%s) applied: %s", cid, mode, answer.applied)
        return {"applied": answer.applied, "id": cid, "change": change}

    @server.feature(EDIT_BLOCK)
    async def edit_block(ls: QuicksilverServer, params):
        """{textDocument: {uri}, range? | position?, mode: complete|rewrite|repair, instruction?} →
        {id, edit: TextEdit} (the client applies it), or null when there is nothing to do."""
        conv = ls.protocol._converter
        try:
            uri = field(field(params, "textDocument"), "uri")
            rng, pos = field(params, "range"), field(params, "position")
            rng = conv.structure(vars_of(rng), lsp.Range) if rng is not None else None
            pos = conv.structure(vars_of(pos), lsp.Position) if pos is not None else None
            mode = field(params, "mode") or "rewrite"
            if not isinstance(uri, str):
                raise TypeError("textDocument.uri must be a string")
        except Exception as e:
            raise JsonRpcInvalidParams(f"{EDIT_BLOCK} needs textDocument.uri and a range or position ({e})")
        if rng is None and pos is None:
            raise JsonRpcInvalidParams(f"{EDIT_BLOCK} needs a range or a position")
        try:
            got = await block_edit(ls, uri, rng, pos, mode, field(params, "instruction") or "")
        except Refused as e:
            return refused(ls, mode, str(e), {"refused": str(e)})
        except ValueError as e:
            raise JsonRpcInvalidParams(str(e))
        if got is None:
            return None
        cid, edit, version, change = got
        return {"id": cid, "edit": conv.unstructure(edit), "version": version, "change": change}

    @server.feature(lsp.TEXT_DOCUMENT_DID_OPEN)
    def did_open(ls: QuicksilverServer, params: lsp.DidOpenTextDocumentParams):
        remember(ls, params.text_document.uri)

    @server.feature(lsp.TEXT_DOCUMENT_DID_CLOSE)
    def did_close(ls: QuicksilverServer, params: lsp.DidCloseTextDocumentParams):
        ls.history.pop(params.text_document.uri, None)

    @server.feature(lsp.TEXT_DOCUMENT_DID_CHANGE)
    def did_change(ls: QuicksilverServer, params: lsp.DidChangeTextDocumentParams):
        remember(ls, params.text_document.uri)   # the versions a next edit follows from
        if (task := ls.running.get(params.text_document.uri)) is not None:
            task.cancel()  # the text it was computed for is gone

    @server.feature(ACCEPT)
    async def accepted(ls: QuicksilverServer, params):
        log.info("completion accepted: %s", params)
        send_event(ls, ACCEPTED, completion_id(params))

    @server.feature(REJECT)
    async def dismissed(ls: QuicksilverServer, params):
        log.info("completion dismissed: %s", params)
        send_event(ls, DISMISSED, completion_id(params))

    @server.feature(lsp.INITIALIZED)
    def initialized(ls: QuicksilverServer, params):
        """In process, the workspace folder is indexed (a `--server` backend uses the server's --workspace)."""
        if isinstance(ls.backend, LocalBackend):
            ls.backend.root = ls.workspace.root_path
            if ls.index_workspace:
                ls.backend.workspace = for_editor(ls.workspace.root_path)

    @server.feature(lsp.SHUTDOWN)
    async def shutdown(ls: QuicksilverServer, *args):
        """An accept just before the editor closes still reaches the backend."""
        if ls.sending:
            await asyncio.wait(ls.sending, timeout=SHUTDOWN_DRAIN_S)
        if getattr(ls.backend, "workspace", None) is not None:
            ls.backend.workspace.close()

    return server


def field(obj, name: str):
    """A member of custom params, whether pygls hands them over as a dict or as a namespace."""
    return obj.get(name) if isinstance(obj, dict) else getattr(obj, name, None)


def vars_of(obj):
    """pygls hands unknown-method params over as namespaces or named tuples; the converter wants dicts."""
    if hasattr(obj, "_asdict"):  # pygls' namedtuple-style objects
        return {k: vars_of(v) for k, v in obj._asdict().items()}
    if isinstance(obj, dict):
        return {k: vars_of(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [vars_of(x) for x in obj]
    if hasattr(obj, "__dict__"):
        return {k: vars_of(v) for k, v in vars(obj).items()}
    return obj


def completion_id(params) -> str:
    """The id from the notification's params: [id], {"id": id} or the id itself."""
    if isinstance(params, (list, tuple)):
        return str(params[0]) if params else ""
    if isinstance(params, str):
        return params
    return str(field(params, "id") or "")


def add_arguments(p) -> None:
    p.add_argument("--model", type=Path, help="model directory (default: the shipped model)")
    p.add_argument("--server", help="use a running `quicksilver serve` at this ws:// URL instead of a local model")
    p.add_argument("--api-key", help="the server's API key (with --server)")
    p.add_argument("--no-completion-cache", dest="completion_cache", action="store_false",
                   help="always ask the model (no serving of typed-ahead completions from the cache, nor from the "
                        "engine's kept answers)")
    p.add_argument("--min-confidence", type=float, default=None, metavar="P",
                   help=f"show no completion less confident than P in [0, 1] (default {EDITOR_MIN_CONFIDENCE} with the "
                        f"model's calibrator, {UNCALIBRATED_MIN_CONFIDENCE} without; 0 shows all)")
    p.add_argument("--no-index", dest="index", action="store_false",
                   help="do not index the editor's workspace folder (by default, a git work tree is indexed and its "
                        "code given to the model as context)")
    p.add_argument("--tcp", action="store_true", help="listen on TCP instead of stdio")
    p.add_argument("--host", default="127.0.0.1", help="TCP host")
    p.add_argument("--port", type=int, default=2087, help="TCP port")
    p.add_argument("--log-file", type=Path, help="log here instead of stderr")
    p.add_argument("--context-tokens", type=int, default=None, metavar="N",
                   help="prefix + window + suffix the in-process model sees (default: the engine's, at most the "
                        "model's context)")


def run(args) -> None:
    handler = logging.FileHandler(args.log_file) if args.log_file else logging.StreamHandler(sys.stderr)
    logging.basicConfig(level=logging.INFO, handlers=[handler], format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("pygls").setLevel(logging.WARNING)  # it logs every message at INFO
    if args.server:
        from lsp.remote import RemoteBackend
        backend = RemoteBackend(args.server, args.api_key)
    else:
        from runtime.engine import Engine
        from runtime.request import DEFAULT_CONTEXT_TOKENS
        from runtime.scheduler import Scheduler
        from runtime.session import ModelError, load
        try:
            model = load(args.model)
            # without the completion cache the engine decodes every request too (no answer typed through)
            engine = Engine(model, args.context_tokens or DEFAULT_CONTEXT_TOKENS, type_through=args.completion_cache)
            backend = LocalBackend(Scheduler(engine))
        except ModelError as e:
            raise SystemExit(f"error: {e}")
    server = create_server(backend, args.completion_cache, args.min_confidence, args.index)
    if args.tcp:
        server.start_tcp(args.host, args.port)
    else:
        server.start_io()

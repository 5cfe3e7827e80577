"""quicksilver lsp: a pygls language server for ghost-text completions (stdio or --tcp), engine in-process.

One handler per LSP feature; the logic is in plain functions: `cursor_context` → `build_request` → `run_request`
→ `format_*`. Logs go to stderr (stdout is the protocol). A newer version of a document cancels the request
running on it; so does `$/cancelRequest`.
"""
from __future__ import annotations

import asyncio
import logging
import sys
import uuid
from pathlib import Path

from lsprotocol import types as lsp
from pygls.lsp.server import LanguageServer

from runtime.engine import Completion, Request
from runtime.scheduler import Scheduler

log = logging.getLogger("quicksilver.lsp")

SINGLE_LINE_TOKENS = 32
BLOCK_TOKENS = 96
ACCEPT, REJECT = "quicksilver/accept", "quicksilver/reject"


class QuicksilverServer(LanguageServer):
    def __init__(self, scheduler: Scheduler):
        super().__init__("quicksilver", "0.1.0")
        self.scheduler = scheduler
        self.running: dict[str, asyncio.Task] = {}     # document uri → the request running on it


def cursor_context(ls: LanguageServer, uri: str, position: lsp.Position) -> tuple[str, str, bool]:
    """(prefix, suffix, single_line) at an LSP position (UTF-16 as negotiated; pygls converts)."""
    doc = ls.workspace.get_text_document(uri)
    offset = doc.offset_at_position(position)
    prefix, suffix = doc.source[:offset], doc.source[offset:]
    line_before = prefix[prefix.rfind("\n") + 1:]
    line_after = suffix.split("\n", 1)[0]
    single = bool(line_before.strip()) or bool(line_after.strip())  # mid-line: finish the line; blank line: a block
    return prefix, suffix, single


def build_request(prefix: str, suffix: str, single_line: bool) -> Request:
    return Request(prefix=prefix, suffix=suffix, id=uuid.uuid4().hex[:12], single_line=single_line,
                   max_new_tokens=SINGLE_LINE_TOKENS if single_line else BLOCK_TOKENS,
                   stop=("\n",) if single_line else ())


async def run_request(ls: QuicksilverServer, uri: str, req: Request) -> Completion | None:
    """Run on the scheduler; a newer request on the same document cancels this one."""
    if (old := ls.running.get(uri)) is not None:
        old.cancel()
    task = asyncio.current_task()
    ls.running[uri] = task
    handle = ls.scheduler.submit(req)
    try:
        async for item in handle.aiter():
            if isinstance(item, Completion):
                log.info("request %s: %d tokens in %.0f ms (%s)", req.id, item.stats["tokens"], item.stats["ms"],
                         item.stats["stop_reason"])
                return item if item.stats["stop_reason"] != "cancelled" else None
    except asyncio.CancelledError:
        log.info("request %s cancelled", req.id)
        raise
    finally:
        handle.cancel()
        if ls.running.get(uri) is task:
            del ls.running[uri]
    return None


def create_server(scheduler: Scheduler) -> QuicksilverServer:
    server = QuicksilverServer(scheduler)

    @server.feature(lsp.TEXT_DOCUMENT_INLINE_COMPLETION, lsp.InlineCompletionOptions())
    async def inline_completion(ls: QuicksilverServer, params: lsp.InlineCompletionParams):
        prefix, suffix, single = cursor_context(ls, params.text_document.uri, params.position)
        req = build_request(prefix, suffix, single)
        result = await run_request(ls, params.text_document.uri, req)
        if result is None or not result.text.strip():
            return lsp.InlineCompletionList(items=[])
        here = lsp.Range(start=params.position, end=params.position)
        return lsp.InlineCompletionList(items=[lsp.InlineCompletionItem(
            insert_text=result.text, range=here,
            command=lsp.Command(title="accepted", command=ACCEPT, arguments=[result.id]))])

    @server.feature(lsp.TEXT_DOCUMENT_COMPLETION, lsp.CompletionOptions(trigger_characters=[".", "(", " "]))
    async def completion(ls: QuicksilverServer, params: lsp.CompletionParams):
        prefix, suffix, single = cursor_context(ls, params.text_document.uri, params.position)
        result = await run_request(ls, params.text_document.uri, build_request(prefix, suffix, single))
        if result is None or not result.text.strip():
            return lsp.CompletionList(is_incomplete=True, items=[])
        here = lsp.Range(start=params.position, end=params.position)
        label = result.text.strip().split("\n", 1)[0][:60]
        return lsp.CompletionList(is_incomplete=True, items=[lsp.CompletionItem(
            label=label, kind=lsp.CompletionItemKind.Snippet, detail="quicksilver", data={"id": result.id},
            insert_text_format=lsp.InsertTextFormat.PlainText,
            text_edit=lsp.TextEdit(range=here, new_text=result.text))])

    @server.feature(lsp.TEXT_DOCUMENT_DID_CHANGE)
    def did_change(ls: QuicksilverServer, params: lsp.DidChangeTextDocumentParams):
        if (task := ls.running.get(params.text_document.uri)) is not None:
            task.cancel()  # the text it was computed for is gone

    @server.feature(ACCEPT)
    def accepted(ls: QuicksilverServer, params):
        log.info("completion accepted: %s", params)

    @server.feature(REJECT)
    def rejected(ls: QuicksilverServer, params):
        log.info("completion rejected: %s", params)

    return server


def add_arguments(p) -> None:
    p.add_argument("--model", type=Path, help="model directory (default: the shipped model)")
    p.add_argument("--tcp", action="store_true", help="listen on TCP instead of stdio")
    p.add_argument("--host", default="127.0.0.1", help="TCP host")
    p.add_argument("--port", type=int, default=2087, help="TCP port")
    p.add_argument("--log-file", type=Path, help="log here instead of stderr")


def run(args) -> None:
    from runtime.engine import Engine
    from runtime.session import ModelError, load

    handler = logging.FileHandler(args.log_file) if args.log_file else logging.StreamHandler(sys.stderr)
    logging.basicConfig(level=logging.INFO, handlers=[handler], format="%(asctime)s %(name)s %(message)s")
    try:
        scheduler = Scheduler(Engine(load(args.model)))
    except ModelError as e:
        raise SystemExit(f"error: {e}")
    server = create_server(scheduler)
    if args.tcp:
        server.start_tcp(args.host, args.port)
    else:
        server.start_io()


"""The language server's view of the client's documents: only what the client opened is read (never a file on
disk: with --tcp any peer could name one), the cursor's context and the other open files, the request for it, and
running it on the backend (a newer request on the same document cancels the last)."""
from __future__ import annotations

import asyncio
import logging
import re
import uuid
from pathlib import Path
from urllib.parse import unquote

from lsprotocol import types as lsp
from pygls.lsp.server import LanguageServer

from runtime.frames import Completion
from runtime.request import Request, editor_request
from runtime.syntax import language_of, wants_block

log = logging.getLogger("quicksilver.lsp")

OTHER_FILES = 4          # the client's other open documents (of the cursor's language) given as extra context; the
OTHER_FILE_CHARS = 8000  # engine keeps them only while its context has room (an imported model's long context)
LONE_SURROGATE = re.compile("[\ud800-\udfff]")  # JSON can carry half a UTF-16 pair; it is not Unicode text




class DocumentError(ValueError):
    """A request names a document the server will not read: not opened by the client, or not valid Unicode."""


def document(ls: LanguageServer, uri: str):
    """A document the client opened (didOpen, kept current by didChange). Never pygls' get_text_document, which
    reads the file at an unopened URI from disk: with --tcp any peer could read any file that way."""
    doc = ls.workspace.text_documents.get(unquote(uri))
    if doc is None:
        raise DocumentError(f"{uri} is not open: the client must send textDocument/didOpen first")
    if (bad := LONE_SURROGATE.search(doc.source)) is not None:
        line = doc.source.count("\n", 0, bad.start()) + 1
        raise DocumentError(f"{uri} is not valid Unicode: line {line} holds a lone surrogate "
                            f"U+{ord(bad.group()):04X} (half of a UTF-16 pair)")
    return doc


def cursor_context(ls: LanguageServer, uri: str, position: lsp.Position) -> tuple[str, str, bool, str | None]:
    """(prefix, suffix, single_line, language) at an LSP position (UTF-16 as negotiated; pygls converts)."""
    doc = document(ls, uri)
    offset = doc.offset_at_position(position)
    prefix, suffix = doc.source[:offset], doc.source[offset:]
    language = language_of(uri, doc.language_id)
    return prefix, suffix, not wants_block(prefix, suffix, language), language


def other_files(ls: LanguageServer, uri: str, language: str | None) -> tuple[str, ...]:
    """The client's other open documents of the cursor's language, the latest opened first, as "# name" chunks
    of their first OTHER_FILE_CHARS characters (documents that are not valid Unicode are left out)."""
    chunks = []
    for other, doc in reversed(list(ls.workspace.text_documents.items())):
        if other != unquote(uri) and language_of(other, doc.language_id) == language and \
                not LONE_SURROGATE.search(doc.source) and len(chunks) < OTHER_FILES:
            chunks.append(f"# {Path(unquote(other)).name}\n{doc.source[:OTHER_FILE_CHARS]}")
    return tuple(chunks)


def build_request(prefix: str, suffix: str, single_line: bool, language: str | None = None,
                  extra: tuple[str, ...] = ()) -> Request:
    """The editors' request for the cursor (runtime/engine.py editor_request: /infill asks the same way)."""
    return editor_request(prefix, suffix, language, single_line, extra=extra, id=uuid.uuid4().hex[:12])


async def run_request(ls, uri: str, req: Request) -> Completion | None:
    """Run on the backend; a newer request on the same document cancels this one."""
    if (old := ls.running.get(uri)) is not None:
        old.cancel()
    task = asyncio.current_task()
    ls.running[uri] = task
    try:
        result = await ls.backend.run(uri, req)
        if result is not None:
            log.info("request %s: %d tokens in %.0f ms (%s), %d chunks of other files, names: %s", req.id,
                     result.stats["tokens"], result.stats["ms"], result.stats["stop_reason"],
                     result.stats.get("extra_chunks", 0), result.stats.get("names"))
        return result
    except asyncio.CancelledError:
        log.info("request %s cancelled", req.id)
        raise
    finally:
        if ls.running.get(uri) is task:
            del ls.running[uri]

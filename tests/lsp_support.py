"""The language server's test harness, shared by tests/test_lsp.py and tests/test_lsp_edits.py: the server over
stdio with pytest-lsp's client, in-process or as a client of a real `quicksilver serve` on loopback, and the
requests the tests make of it."""
import asyncio
import sys
import time

import pytest
import pytest_asyncio
from lsprotocol import types as lsp
from pytest_lsp import client_capabilities, make_test_lsp_client

from tests.conftest import API_KEY, ROOT, SHIPPED, start_server, stop_server

URI = "file:///tmp/example.py"
TEXT = 'import os\n\n\ndef read(path):\n    """Return the text — in UTF-8 — of a file."""\n    \n\n\nprint(read("x"))\n'


@pytest.fixture(scope="module")
def remote_db(tmp_path_factory):
    return tmp_path_factory.mktemp("db") / "q.sqlite"


@pytest.fixture(scope="module")
def remote_server(remote_db):
    srv, thread, url = start_server(SHIPPED, remote_db)
    yield url
    stop_server(srv, thread)


def editing_client():
    """A test client that applies every workspace edit the server sends and keeps them in `.edits`."""
    c = make_test_lsp_client()
    c.edits = []

    @c.feature(lsp.WORKSPACE_APPLY_EDIT)
    def apply_edit(params: lsp.ApplyWorkspaceEditParams):
        c.edits.append(params)
        return lsp.ApplyWorkspaceEditResult(applied=True)

    return c


@pytest_asyncio.fixture(params=["local", "remote"])
async def session(request, tmp_path):
    """(client, log file, server http url or None): the language server on the shipped model, in either mode."""
    log_file = tmp_path / "lsp.log"
    args = ["-m", "runtime.cli", "lsp", "--log-file", str(log_file), "--min-confidence", "0"]   # every answer
    url = None
    if request.param == "remote":
        url = request.getfixturevalue("remote_server")
        args += ["--server", url.replace("http://", "ws://"), "--api-key", API_KEY]
    c = editing_client()
    await c.start_io(sys.executable, *args, cwd=str(ROOT))
    result = await c.initialize_session(lsp.InitializeParams(
        capabilities=client_capabilities("visual-studio-code"), root_uri="file:///tmp"))
    assert result.capabilities.inline_completion_provider is not None
    assert result.capabilities.code_action_provider is not None
    open_document(c, URI, TEXT)
    yield c, log_file, url
    await c.shutdown_session()
    await c.stop()


def at(line, character):
    return lsp.Position(line=line, character=character)


def open_document(client, uri, text):
    client.text_document_did_open(lsp.DidOpenTextDocumentParams(
        text_document=lsp.TextDocumentItem(uri=uri, language_id="python", version=1, text=text)))


async def inline(client, position, kind=lsp.InlineCompletionTriggerKind.Invoked, uri=URI):
    result = await client.text_document_inline_completion_async(lsp.InlineCompletionParams(
        text_document=lsp.TextDocumentIdentifier(uri=uri), position=position,
        context=lsp.InlineCompletionContext(trigger_kind=kind)))
    return result.items if hasattr(result, "items") else result


async def popup(client, position, uri=URI):
    result = await client.text_document_completion_async(lsp.CompletionParams(
        text_document=lsp.TextDocumentIdentifier(uri=uri), position=position))
    return result.items


async def eventually(check, what, timeout=15):
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"{what} did not happen within {timeout} s"
        await asyncio.sleep(0.1)

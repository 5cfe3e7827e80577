"""The language server end to end (tests/lsp_support.py: over stdio, in-process and as a client of a real
`quicksilver serve`): inline completion, completion, cancellation, the completion cache, telemetry events,
malformed params, unopened files and text that is not Unicode. Its block edits: tests/test_lsp_edits.py."""
import asyncio
import json
import re
import select
import sqlite3
import subprocess
import sys
import urllib.request

import pytest
from lsprotocol import types as lsp
from pygls.exceptions import JsonRpcInvalidParams
from pytest_lsp import client_capabilities

from tests.conftest import API_KEY, ROOT, SHIPPED, start_server, stop_server
from tests.lsp_support import TEXT, URI, at, editing_client, eventually, inline, open_document, popup
from tests.lsp_support import remote_db, remote_server, session   # fixtures: pytest finds them here by name


async def test_inline_completion_returns_the_model_text(session):
    client, log_file, _ = session
    items = await inline(client, at(5, 4))  # the empty body after the docstring: a block
    assert len(items) == 1 and items[0].range.start == at(5, 4) and items[0].insert_text.strip()
    assert items[0].command.command == "quicksilver/accept"
    compile(TEXT.replace('"""\n    \n', '"""\n    ' + items[0].insert_text + "\n", 1), "example.py", "exec")


async def test_typing_into_a_shown_completion_is_served_from_the_cache(session):
    client, log_file, _ = session
    items = await inline(client, at(5, 4))
    text = items[0].insert_text
    typed = text[:2]
    client.text_document_did_change(lsp.DidChangeTextDocumentParams(
        text_document=lsp.VersionedTextDocumentIdentifier(uri=URI, version=2),
        content_changes=[lsp.TextDocumentContentChangePartial(range=lsp.Range(start=at(5, 4), end=at(5, 4)),
                                                              text=typed)]))
    again = await inline(client, at(5, 4 + len(typed)), lsp.InlineCompletionTriggerKind.Automatic)
    assert again and again[0].insert_text == text[2:]
    assert "served from the cache" in log_file.read_text()


async def test_completion_after_non_ascii_text_uses_utf16_positions(session):
    client, _, _ = session
    line = TEXT.splitlines()[4]
    utf16 = len(line.encode("utf-16-le")) // 2
    result = await client.text_document_completion_async(lsp.CompletionParams(
        text_document=lsp.TextDocumentIdentifier(uri=URI), position=at(4, utf16)))
    for item in result.items:
        assert item.text_edit.range.start == at(4, utf16)


async def test_did_change_cancels_the_running_request(session):
    client, log_file, _ = session
    task = asyncio.ensure_future(inline(client, at(5, 4), lsp.InlineCompletionTriggerKind.Automatic))
    await asyncio.sleep(0.05)
    client.text_document_did_change(lsp.DidChangeTextDocumentParams(
        text_document=lsp.VersionedTextDocumentIdentifier(uri=URI, version=2),
        content_changes=[lsp.TextDocumentContentChangePartial(range=lsp.Range(start=at(5, 4), end=at(5, 4)),
                                                              text="x")]))
    try:
        result = await asyncio.wait_for(task, 60)
        assert result is None or isinstance(result, list)
    except Exception as e:  # a cancelled request answers with an error: also fine
        assert "cancel" in str(e).lower() or "Request" in type(e).__name__
    ok = await client.text_document_completion_async(lsp.CompletionParams(  # the server is still alive
        text_document=lsp.TextDocumentIdentifier(uri=URI), position=at(0, 0)))
    assert ok is not None


async def test_shown_accepted_and_dismissed_reach_the_backend(session, request):
    """Each completion returned (inline or popup) is `shown`; quicksilver/accept and quicksilver/reject send
    `accepted` and `dismissed`, the names the server's store takes: in-process to the log, remote into the
    server's SQLite file and its acceptance rate."""
    client, log_file, url = session
    inline_id = (await inline(client, at(5, 4)))[0].command.arguments[0]
    other = "file:///tmp/other.py"   # a document of its own, so the popup is not the inline one from the cache
    open_document(client, other, TEXT)
    item = (await popup(client, at(5, 4), other))[0]
    popup_id = item.data["id"]
    assert popup_id != inline_id and item.command.command == "quicksilver/accept"
    assert list(item.command.arguments) == [popup_id]
    client.protocol.notify("quicksilver/accept", [inline_id])
    client.protocol.notify("quicksilver/reject", [popup_id])
    want = {(inline_id, "shown"), (popup_id, "shown"), (inline_id, "accepted"), (popup_id, "dismissed")}
    if url is None:
        await eventually(lambda: all(f"event {e}: completion {c}" in log_file.read_text() for c, e in want),
                         "every event in the log")
    else:
        db = request.getfixturevalue("remote_db")

        def stored():
            with sqlite3.connect(db) as con:
                return set(con.execute("SELECT completion_id, event FROM events WHERE completion_id IN (?, ?)",
                                       (inline_id, popup_id)))
        await eventually(lambda: stored() == want, "every event in the server's store")
        req = urllib.request.Request(url + "/v1/events/summary", headers={"Authorization": f"Bearer {API_KEY}"})
        assert json.loads(urllib.request.urlopen(req, timeout=10).read())["acceptance_rate"] is not None
        assert "could not send" not in log_file.read_text()
    assert f"completion accepted: ['{inline_id}']" in log_file.read_text()


async def test_a_file_the_client_never_opened_is_never_read(session, tmp_path):
    """pygls reads an unopened URI's file from disk; with --tcp any peer could read any file that way."""
    client, log_file, _ = session
    secret = "hunter2-on-disk-only"
    path = tmp_path / "secret.py"
    path.write_text(f'TOKEN = "{secret}"\n' + TEXT)   # where an opened TEXT gets a completion (test above)
    uri = path.as_uri()
    assert list(await inline(client, at(6, 4), uri=uri)) == []
    assert list(await popup(client, at(6, 4), uri)) == []
    with pytest.raises(JsonRpcInvalidParams, match="not open") as raised:
        await client.protocol.send_request_async("quicksilver/editBlock", {
            "textDocument": {"uri": uri}, "position": {"line": 5, "character": 6}, "mode": "rewrite"})
    assert secret not in str(raised.value) and raised.value.data is None
    assert "textDocument/didOpen" in log_file.read_text() and secret not in log_file.read_text()


async def test_lone_surrogates_get_a_plain_answer(session):
    """Half a UTF-16 pair (valid JSON, not Unicode): no completion, and block edits get a plain error."""
    client, log_file, _ = session
    uri = "file:///tmp/surrogate.py"
    open_document(client, uri, 'name = "\ud800"\n' + TEXT)
    assert list(await inline(client, at(6, 4), uri=uri)) == []
    assert list(await popup(client, at(6, 4), uri)) == []
    assert "lone surrogate U+D800" in log_file.read_text()
    rng = {"start": {"line": 5, "character": 6}, "end": {"line": 5, "character": 6}}
    for send in (lambda: client.protocol.send_request_async("quicksilver/editBlock", {
                     "textDocument": {"uri": uri}, "range": rng, "mode": "rewrite"}),
                 lambda: client.workspace_execute_command_async(lsp.ExecuteCommandParams(
                     command="quicksilver.editBlock", arguments=[uri, rng, "rewrite"]))):
        with pytest.raises(JsonRpcInvalidParams, match="line 1 holds a lone surrogate") as raised:
            await send()
        assert raised.value.data is None   # no traceback
    assert list(await inline(client, at(5, 4)))   # the server still completes valid documents


def test_malformed_params_get_an_error_and_the_server_stays_up(tiny_model_dir):
    """Raw JSON-RPC over the server's stdio, so nothing on the client side can fix the message up."""
    proc = subprocess.Popen([sys.executable, "-m", "runtime.cli", "lsp", "--model", str(tiny_model_dir)], cwd=ROOT,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)

    def send(obj):
        body = json.dumps({"jsonrpc": "2.0", **obj}).encode()
        proc.stdin.write(b"Content-Length: %d\r\n\r\n" % len(body) + body)
        proc.stdin.flush()

    def reply(request_id):
        while True:
            ready, _, _ = select.select([proc.stdout], [], [], 60)
            assert ready, f"no answer to request {request_id}"
            length = 0
            while (line := proc.stdout.readline().strip()):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            msg = json.loads(proc.stdout.read(length))
            if msg.get("id") == request_id:
                return msg

    try:
        send({"id": 1, "method": "initialize", "params": {"capabilities": {}, "processId": None, "rootUri": None}})
        assert "capabilities" in reply(1)["result"]
        send({"method": "initialized", "params": {}})
        send({"id": 2, "method": "textDocument/inlineCompletion", "params": {"textDocument": {"uri": 5}}})
        assert reply(2)["error"]["code"] == -32602
        send({"id": 3, "method": "quicksilver/editBlock", "params": {"textDocument": {}}})
        assert reply(3)["error"]["code"] == -32602
        send({"method": "textDocument/didOpen", "params": {"textDocument": {"uri": URI, "languageId": "python",
                                                                              "version": 1, "text": TEXT}}})
        send({"id": 4, "method": "textDocument/completion",
              "params": {"textDocument": {"uri": URI}, "position": {"line": 0, "character": 3}}})
        assert "result" in reply(4)
        rng = {"start": {"line": 4, "character": 8}, "end": {"line": 4, "character": 8}}
        send({"id": 6, "method": "textDocument/codeAction",   # a light bulb's request: no model run, a command
              "params": {"textDocument": {"uri": URI}, "range": rng, "context": {"diagnostics": [], "triggerKind": 2}}})
        actions = reply(6)["result"]
        assert [a["command"]["arguments"] for a in actions] == [[URI, rng, "complete"]]
        assert {a["command"]["command"] for a in actions} == {"quicksilver.editBlock"}
        send({"id": 5, "method": "shutdown"})
        reply(5)
        send({"method": "exit"})
        assert proc.wait(timeout=30) == 0
    finally:
        proc.kill()


def test_cursor_context_with_tabs_crlf_and_characters_outside_the_bmp():
    """UTF-16 positions (an emoji is two code units), tabs, CRLF line ends, and an incremental change."""
    from types import SimpleNamespace

    from pygls.workspace import Workspace

    from lsp.documents import cursor_context
    ws = Workspace(None)
    text = "def f(x):\r\n\tname = '😀é'  # ü\r\n\t\r\n\treturn x\r\n"
    ws.put_text_document(lsp.TextDocumentItem(uri=URI, language_id="python", version=1, text=text))
    ls = SimpleNamespace(workspace=ws)
    pos = at(1, len("\tname = '😀é".encode("utf-16-le")) // 2)
    prefix, suffix, single, language = cursor_context(ls, URI, pos)
    assert prefix == "def f(x):\r\n\tname = '😀é" and suffix.startswith("'  # ü\r\n") and single
    assert language == "python"
    prefix, suffix, single, _ = cursor_context(ls, URI, at(2, 1))      # the tab-indented blank line: a block
    assert prefix.endswith("ü\r\n\t") and suffix.startswith("\r\n\treturn") and not single
    ws.get_text_document(URI).apply_change(lsp.TextDocumentContentChangePartial(
        range=lsp.Range(start=pos, end=pos), text="ß"))
    prefix, _, _, _ = cursor_context(ls, URI, at(1, pos.character + 1))
    assert prefix.endswith("'😀éß")


async def test_other_languages_get_plain_completions(session):
    client, _, _ = session
    uri = "file:///tmp/example.rs"
    client.text_document_did_open(lsp.DidOpenTextDocumentParams(text_document=lsp.TextDocumentItem(
        uri=uri, language_id="rust", version=1, text="fn main() {\n    let x = \n}\n")))
    result = await client.text_document_inline_completion_async(lsp.InlineCompletionParams(
        text_document=lsp.TextDocumentIdentifier(uri=uri), position=at(1, 12),
        context=lsp.InlineCompletionContext(trigger_kind=lsp.InlineCompletionTriggerKind.Invoked)))
    items = result.items if hasattr(result, "items") else result
    assert all("\n" not in item.insert_text for item in items)  # mid-line: the rest of the line, no grammar needed


def test_other_open_documents_of_the_language_are_extra_context():
    """The language server gives the engine the client's other open documents of the cursor's language, the latest
    opened first (the engine keeps them only while its context has room)."""
    from types import SimpleNamespace

    from lsp.documents import OTHER_FILES, other_files
    docs = {f"file:///w/m{i}.py": SimpleNamespace(language_id="python", source=f"def m{i}():\n    pass\n")
            for i in range(OTHER_FILES + 2)}
    docs["file:///w/notes.md"] = SimpleNamespace(language_id="markdown", source="# notes\n")
    docs["file:///w/bad.py"] = SimpleNamespace(language_id="python", source="x = '\ud800'\n")
    ls = SimpleNamespace(workspace=SimpleNamespace(text_documents=docs))
    chunks = other_files(ls, "file:///w/m0.py", "python")
    assert len(chunks) == OTHER_FILES and chunks[0] == f"# m{OTHER_FILES + 1}.py\ndef m{OTHER_FILES + 1}():\n    pass\n"
    assert not any("notes" in c or "m0()" in c or "\ud800" in c for c in chunks)


async def test_the_language_server_and_infill_show_the_same_text(session, request):
    """One cursor, the same text on every editor path: the language server's inline completion (in-process, or
    through a server) and /infill as llama.vim asks (no time budget, nothing withheld) build one request shape
    (runtime/engine.py editor_request): a line at a partial line, a block on a blank line in a block. Each side
    starts from the same kept contexts (the next keystroke's reuse makes a server's answers depend on what it was
    asked before): a fresh server beside the in-process language server, the same one behind the remote one."""
    client, _, remote = session
    srv = None
    if remote is None:
        srv, thread, url = start_server(SHIPPED, request.getfixturevalue("tmp_path") / "fresh.sqlite")
    else:
        url = remote
    lines, shown_texts = TEXT.split("\n"), []
    for line, character in ((5, 4), (3, 9), (8, 6), (4, 11)):
        offset = sum(len(x) + 1 for x in lines[:line]) + character
        items = await inline(client, at(line, character))
        shown = items[0].insert_text if items else ""
        r = urllib.request.Request(url + "/infill", json.dumps({
            "input_prefix": TEXT[:offset], "input_suffix": TEXT[offset:], "n_predict": 128, "min_confidence": 0,
            "top_k": 40, "top_p": 0.99, "samplers": ["top_k", "top_p", "infill"]}).encode(),
            {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"})
        content = json.loads(urllib.request.urlopen(r, timeout=60).read())["content"]
        assert shown == content, (line, character)
        shown_texts.append(shown)
    if srv is not None:
        stop_server(srv, thread)
    assert sum(map(bool, shown_texts)) >= 2, shown_texts   # not a comparison of empty answers


async def test_an_explicit_request_answers_where_an_automatic_one_abstains(tmp_path):
    """The shipped model, with a floor no answer reaches (--min-confidence 1): ghost text as the user types (inline, Automatic) and a
    popup request that carries a context show nothing; the user asking — inline Invoked, or the omnifunc's request
    with no context — gets the model's answer, its confidence in the item's detail."""
    c = editing_client()
    await c.start_io(sys.executable, "-m", "runtime.cli", "lsp", "--min-confidence", "1", "--log-file",
                     str(tmp_path / "lsp.log"), cwd=str(ROOT))   # the shipped model
    await c.initialize_session(lsp.InitializeParams(capabilities=client_capabilities("neovim"), root_uri="file:///tmp"))
    try:
        open_document(c, URI, TEXT)
        assert not await inline(c, at(5, 4), lsp.InlineCompletionTriggerKind.Automatic)
        typed = await c.text_document_completion_async(lsp.CompletionParams(
            text_document=lsp.TextDocumentIdentifier(uri=URI), position=at(5, 4),
            context=lsp.CompletionContext(trigger_kind=lsp.CompletionTriggerKind.Invoked)))
        assert not typed.items
        asked = await inline(c, at(5, 4), lsp.InlineCompletionTriggerKind.Invoked)
        omni = await popup(c, at(5, 4))
        assert asked and asked[0].insert_text.strip() and omni, (tmp_path / "lsp.log").read_text()
        assert re.fullmatch(r"quicksilver · confidence \d\.\d\d", omni[0].detail)
    finally:
        await c.shutdown_session()
        await c.stop()

"""The language server's block edits end to end (tests/lsp_support.py): code actions applied through
workspace/applyEdit, quicksilver/editBlock and its modes, plain changes for a client without change annotations,
and the next edit a rename calls for."""
import sys

import pytest
from lsprotocol import types as lsp
from pytest_lsp import client_capabilities

from tests.conftest import ROOT
from tests.lsp_support import TEXT, URI, at, editing_client, open_document
from tests.lsp_support import remote_db, remote_server, session   # fixtures: pytest finds them here by name


async def test_code_action_applies_a_block_edit_through_apply_edit(session):
    client, _, _ = session
    actions = await client.text_document_code_action_async(lsp.CodeActionParams(
        text_document=lsp.TextDocumentIdentifier(uri=URI), range=lsp.Range(start=at(4, 8), end=at(4, 8)),
        context=lsp.CodeActionContext(diagnostics=[])))
    titles = [a.title for a in actions]
    # asked for: Complete block, and a repair only where one passed runtime/verify.py, titled with its change
    assert titles[0] == "quicksilver: Complete block" and len(titles) <= 2
    assert all(t.startswith("quicksilver: Repair: ") and len(t) > len("quicksilver: Repair: ") for t in titles[1:])
    # lsprotocol's client-side hook reads any action carrying a command as a bare Command, so the command the
    # action holds is checked on the raw wire in test_malformed_params...; here the editor runs it
    rng = {"start": {"line": 4, "character": 8}, "end": {"line": 4, "character": 8}}
    answer = await client.workspace_execute_command_async(lsp.ExecuteCommandParams(
        command="quicksilver.editBlock", arguments=[URI, rng, "rewrite"]))
    if not answer["applied"]:   # a rewrite runtime/verify.py refuses: nothing applied, no error, the reason shown
        assert not client.edits
    else:
        assert len(client.edits) == 1
        edit = offered(client.edits[0].edit)
        assert edit.range.start == at(3, 0) and edit.range.end == at(5, 0)   # the whole function (tree-sitter)
        assert len(edit.new_text.strip()) >= 0.5 * len("".join(TEXT.splitlines(True)[3:5]).strip())
        client.edits.clear()
    answer = await client.workspace_execute_command_async(lsp.ExecuteCommandParams(   # completing is never refused
        command="quicksilver.editBlock", arguments=[URI, rng, "complete"]))
    assert answer["applied"] is True and len(client.edits) == 1
    assert offered(client.edits[0].edit).range.start == at(5, 0)   # after the function, inside its scope


def offered(edit: lsp.WorkspaceEdit) -> lsp.TextEdit:
    """The one text edit of a model's workspace edit, checked to need the user's confirmation (VS Code's
    capabilities, which these sessions declare, support change annotations)."""
    assert edit.changes is None and len(edit.document_changes) == 1
    change = edit.document_changes[0]
    assert change.text_document.uri == URI and change.text_document.version == 1
    (text_edit,) = change.edits
    assert edit.change_annotations[text_edit.annotation_id].needs_confirmation is True
    return text_edit


async def test_a_client_without_change_annotations_gets_plain_changes(tiny_model_dir):
    c = editing_client()
    edits = c.edits
    await c.start_io(sys.executable, "-m", "runtime.cli", "lsp", "--model", str(tiny_model_dir), "--min-confidence",
                     "0", cwd=str(ROOT))
    await c.initialize_session(lsp.InitializeParams(capabilities=client_capabilities("neovim"), root_uri="file:///tmp"))
    try:
        open_document(c, URI, TEXT)
        rng = {"start": {"line": 4, "character": 8}, "end": {"line": 4, "character": 8}}
        answer = await c.workspace_execute_command_async(lsp.ExecuteCommandParams(
            command="quicksilver.editBlock", arguments=[URI, rng, "complete"]))
        assert answer["applied"] is True and len(edits) == 1
        assert edits[0].edit.document_changes is None and edits[0].edit.changes[URI][0].range.start == at(5, 0)
    finally:
        await c.shutdown_session()
        await c.stop()


async def test_edit_block_request_and_bad_mode(session):
    client, _, _ = session
    answer = await client.protocol.send_request_async("quicksilver/editBlock", {
        "textDocument": {"uri": URI}, "position": {"line": 4, "character": 6}, "mode": "repair",
        "instruction": "read the file"})
    assert answer is None or getattr(answer, "refused", None) or answer.edit.range.start.line == 3
    with pytest.raises(Exception, match="mode"):
        await client.protocol.send_request_async("quicksilver/editBlock", {
            "textDocument": {"uri": URI}, "position": {"line": 4, "character": 6}, "mode": "poem"})


async def test_a_rename_typed_at_a_binding_is_offered_for_its_other_uses(session):
    """Next edits: renaming a local where it is bound, keystroke by keystroke, makes the light bulb's first action
    rename its other uses in that function (and nowhere else), as a workspace edit the client applies."""
    client, _, _ = session
    uri = "file:///tmp/rename.py"
    text = "def total(items):\n    count = 0\n    for it in items:\n        count += it\n    return count\n\n\ncount = 1\n"
    open_document(client, uri, text)
    version = 1
    for old, new in (("count", "coun"), ("coun", ""), ("", "t"), ("t", "to"), ("to", "tot")):
        version += 1
        client.text_document_did_change(lsp.DidChangeTextDocumentParams(
            text_document=lsp.VersionedTextDocumentIdentifier(uri=uri, version=version),
            content_changes=[lsp.TextDocumentContentChangePartial(range=lsp.Range(start=at(1, 4),
                                                                                  end=at(1, 4 + len(old))), text=new)]))
    actions = await client.text_document_code_action_async(lsp.CodeActionParams(
        text_document=lsp.TextDocumentIdentifier(uri=uri), range=lsp.Range(start=at(1, 7), end=at(1, 7)),
        context=lsp.CodeActionContext(diagnostics=[], trigger_kind=lsp.CodeActionTriggerKind.Automatic)))
    first = actions[0]
    assert first.title == "quicksilver: Rename the other 2 uses of count to tot"
    made = first.edit.changes[uri] if first.edit.changes else first.edit.document_changes[0].edits
    assert first.edit.changes or first.edit.document_changes[0].text_document.version == version
    edits = sorted(made, key=lambda e: (e.range.start.line, e.range.start.character))
    assert [(e.range.start.line, e.range.start.character, e.range.end.character, e.new_text) for e in edits] == \
        [(3, 8, 13, "tot"), (4, 11, 16, "tot")]   # never the module's own `count` on line 7

"""The language server's block edits: Complete block (a command) and Repair (a code action carrying its edit, titled
with what it changes), each run through runtime/verify.py by the engine; a refused edit changes nothing and says
why."""
from __future__ import annotations

import logging

from lsprotocol import types as lsp

from lsp.documents import document, run_request
from runtime.nextedit import from_history, keep
from runtime.request import EDITOR_TOKENS, Request
from runtime.syntax import enclosing_block, language_of

log = logging.getLogger("quicksilver.lsp")

EDIT_COMMAND = "quicksilver.editBlock"
ACTIONS = {"complete": "Complete block", "rewrite": "Rewrite block", "repair": "Repair block"}   # editBlock's modes
OFFERED = ("complete", "repair")   # the code actions: a rewrite was refused nearly always (evals/results/edits.json)


class Refused(Exception):
    """The model's edit did not pass runtime/verify.py: nothing is offered, and the message says why."""


async def block_edit(ls, uri: str, rng: lsp.Range | None, position: lsp.Position | None,
                     mode: str, instruction: str = "") -> tuple[str, lsp.TextEdit, int | None] | None:
    """Complete, rewrite or repair the selection (or the block around the position, found with tree-sitter):
    (completion id, the edit, the document version it was made for)."""
    if mode not in ACTIONS:
        raise ValueError(f"mode must be one of {sorted(ACTIONS)}, not {mode!r}")
    doc = document(ls, uri)
    text, language, version = doc.source, language_of(uri, doc.language_id), doc.version
    if rng is not None and rng.start != rng.end:
        start, end = doc.offset_at_position(rng.start), doc.offset_at_position(rng.end)
    else:
        start, end = enclosing_block(text, doc.offset_at_position(position or rng.start), language)
    prefix, block, suffix = text[:start], text[start:end], text[end:]
    if instruction:  # a plain-code prompt: the model reads it as a comment above the block
        indent = block[:len(block) - len(block.lstrip(" \t"))]
        prefix += f"{indent}# {instruction.strip()}\n"
    if mode == "complete":  # keep the block, fill what should follow it inside the same scope
        req = Request(prefix=prefix + block, suffix=suffix, max_new_tokens=EDITOR_TOKENS, language=language)
        start = end
    else:
        if not block.strip():
            return None
        req = Request(prefix=prefix, suffix=suffix, mode="edit", existing=block,
                      edit="all" if mode == "rewrite" else "repair", language=language)
    result = await run_request(ls, uri, req)
    if result is None:
        return None
    if result.stats.get("refused"):   # runtime/verify.py's verdict: say why, change nothing
        raise Refused(result.stats["refused"])
    new = result.text
    if mode != "complete" and block.endswith("\n") and not new.endswith("\n"):
        new += "\n"
    edit_range = lsp.Range(start=doc.client_position_at_offset(start), end=doc.client_position_at_offset(end))
    return result.id, lsp.TextEdit(range=edit_range, new_text=new), version, result.stats.get("change", "")


CONFIRM = "quicksilver"   # the change annotation a model's edit carries


def offered_edit(ls, uri: str, edit: lsp.TextEdit, version: int | None,
                 label: str) -> lsp.WorkspaceEdit:
    """A model's edit as the client should get it: where the client supports change annotations (VS Code), an
    annotated edit that needs the user's confirmation (a preview to accept or discard, not applied blindly), bound
    to the document version it was made for (a document changed since is left alone); elsewhere plain changes."""
    caps = getattr(getattr(ls.client_capabilities, "workspace", None), "workspace_edit", None)
    if caps is None or not caps.document_changes or caps.change_annotation_support is None:
        return lsp.WorkspaceEdit(changes={uri: [edit]})
    return lsp.WorkspaceEdit(
        document_changes=[lsp.TextDocumentEdit(
            text_document=lsp.OptionalVersionedTextDocumentIdentifier(uri=uri, version=version),
            edits=[lsp.AnnotatedTextEdit(range=edit.range, new_text=edit.new_text, annotation_id=CONFIRM)])],
        change_annotations={CONFIRM: lsp.ChangeAnnotation(
            label=label, needs_confirmation=True, description="written by the model: check it before accepting")})


async def offered_repair(ls, uri: str, rng: lsp.Range) -> lsp.CodeAction | None:
    """The repair of the block at `rng` as a code action carrying its edit, titled with what it changes; None when
    the model changes nothing or runtime/verify.py refuses what it changes (one line in the log)."""
    try:
        got = await block_edit(ls, uri, rng if rng.start != rng.end else None, rng.start, "repair")
    except (Refused, ValueError) as e:
        log.info("no repair offered at %s: %s", uri, e)
        return None
    if got is None:
        return None
    cid, edit, version, change = got
    title = f"quicksilver: Repair: {change}"
    return lsp.CodeAction(title=title, kind=lsp.CodeActionKind.QuickFix,
                          edit=offered_edit(ls, uri, edit, version, title))


def refused(ls, mode: str, why: str, answer: dict) -> dict:
    """A refused edit: one line in the log, the reason shown to the user, `answer` to the request."""
    log.info("%s refused: %s", ACTIONS[mode], why)
    ls.window_show_message(lsp.ShowMessageParams(type=lsp.MessageType.Info, message=f"quicksilver: {why}"))
    return answer



def remember(ls, uri: str) -> None:
    """Keep the document's text as it is now (after didOpen or didChange)."""
    try:
        doc = document(ls, uri)
    except ValueError:   # not open, or not valid Unicode: nothing to follow
        return
    keep(ls.history.setdefault(uri, []), doc.source)


def next_edit(ls, uri: str) -> lsp.CodeAction | None:
    """The next edit the document's last edits call for, as a code action carrying it (runtime/nextedit.py: a
    rename carried to the binding's other uses, a deleted parameter deleted from the calls; checked before it is
    offered), bound to the document's version where the client takes versioned edits."""
    try:
        doc = document(ls, uri)
    except ValueError:
        return None
    found = from_history(ls.history.get(uri, [])[:-1], doc.source)
    if found is None:
        return None
    edits = [lsp.TextEdit(range=lsp.Range(start=doc.client_position_at_offset(a), end=doc.client_position_at_offset(b)),
                          new_text=text) for a, b, text in found.edits]
    caps = getattr(getattr(ls.client_capabilities, "workspace", None), "workspace_edit", None)
    change = lsp.WorkspaceEdit(document_changes=[lsp.TextDocumentEdit(   # bound to the version it was made for
        text_document=lsp.OptionalVersionedTextDocumentIdentifier(uri=uri, version=doc.version), edits=edits)]) \
        if caps is not None and caps.document_changes else lsp.WorkspaceEdit(changes={uri: edits})
    return lsp.CodeAction(title=f"quicksilver: {found.title}", kind=lsp.CodeActionKind.QuickFix, is_preferred=True,
                          edit=change)

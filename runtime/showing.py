"""Generated text → what the front ends show: `postprocess` (healing undone, repeats and suffix echoes dropped, one
line when asked, the cursor's scope, never a completion that breaks a valid file), `shape` (its editor-facing
part) and `harm` (runtime/verify.py's verdict on an edit). The text
rules themselves are runtime/postprocess.py's; the syntax ones runtime/syntax.py's."""
from __future__ import annotations

from runtime.postprocess import SURE_REPEAT, clean_completion, drop_unwritten_indent, line_end, unheal_end
from runtime.request import Request
from runtime.syntax import keep_valid, trim_to_scope
from runtime.verify import Verdict, check_edit


def postprocess(req: Request, text: str, stop_reason: str, confidence: float = 0.0) -> str:
    """Generated text → what the front ends show: healing undone, suffix repeats dropped, one line when asked; with
    a language, cut at the end of the cursor's scope and never breaking the syntax of a file that was valid."""
    if req.mode == "edit" and req.edit == "repair":   # the block as it was but a few tokens: not a completion's to
        ends = req.existing[len(req.existing.rstrip("\n")):]   # clean (runtime/verify.py judges it); it ends as
        return text.rstrip("\n") + ends if text.strip() else text   # the block did
    suffix = req.suffix if req.mode != "completion" else ""
    if suffix and stop_reason == "eom":
        text = unheal_end(text, suffix)
    elif stop_reason != "eom":   # cut short (deadline, window)
        text = drop_unwritten_indent(text, suffix)
    return shape(req, clean_completion(text, req.prefix, suffix, single_line=req.single_line,
                                       sure=confidence >= SURE_REPEAT))


def harm(req: Request, text: str) -> Verdict | None:
    """For an edit, runtime/verify.py's verdict on its result: whether it may be offered (it parses where the file
    did, adds no undefined name, renames nothing used elsewhere, and a repair changes a few tokens) and what it
    changes. None for a completion."""
    if req.mode != "edit":
        return None
    return check_edit(req.prefix, req.existing, text, req.suffix, req.language,
                      "repair" if req.edit == "repair" else "rewrite")


def shape(req: Request, text: str) -> str:
    """The editor-facing part of post-processing: one line when asked; with a language, the cursor's scope and
    never a completion that breaks the syntax of a file that was valid."""
    if req.single_line:
        text = text.split("\n", 1)[0]
    if req.language and req.mode != "edit":
        suffix = req.suffix if req.mode != "completion" else ""
        if not req.single_line:
            text = trim_to_scope(text, req.prefix)
        end = line_end(req.prefix, suffix) if req.single_line and text else ""
        text = keep_valid(req.prefix, text + end, suffix, req.language)
        text = text[:len(text) - len(end)]
    return text

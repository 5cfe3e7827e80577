"""Syntax-aware decisions with tree-sitter: a line or a block at the cursor, the block around a position, and
whether a completion keeps an otherwise valid file valid; and, with Python's own parser, where a middle may end
while it is decoded. Python has a grammar; every other language degrades to plain-text rules (no syntax
decisions), never an error.
"""
from __future__ import annotations

import re
from functools import lru_cache
from pathlib import PurePosixPath
from typing import Callable

from runtime.postprocess import indent_of, line_end, unheal_end
from runtime.pyast import parse

EXTENSIONS = {".py": "python", ".pyi": "python", ".pyw": "python"}
# inside these the cursor is in the middle of an expression: finish the line, not a block
LINE_CONTEXTS = {"argument_list", "parameters", "list", "dictionary", "set", "tuple", "parenthesized_expression",
                 "subscript", "string", "list_comprehension", "dictionary_comprehension", "set_comprehension",
                 "generator_expression", "lambda_parameters", "import_from_statement"}
BLOCKS = {"function_definition", "class_definition", "decorated_definition", "if_statement", "for_statement",
          "while_statement", "with_statement", "try_statement", "match_statement"}


PYTHON_LINE = re.compile(r"^\s*(def |class |import |from \S+ import |return\b|elif |else:|try:|except\b|with |"
                         r"for \S.* in |while |if \S|@\w|self\.)")
PYTHON_EVIDENCE = 2           # lines near the cursor that must read as Python (one in a snippet of under 6 lines)
NEAR_CHARS = 4000             # how much text each side of the cursor is looked at


def infer_language(prefix: str, suffix: str) -> str | None:
    """'python' when the code around the cursor reads as Python (for clients that send no language), else None:
    a few lines that start like Python statements (one, in a snippet of a few lines: `from shop import Stock` then
    `stock.re`), and no C-style braces or semicolons at line ends."""
    lines = (prefix[-NEAR_CHARS:] + suffix[:NEAR_CHARS]).split("\n")
    written = [l for l in lines if l.strip()]
    if sum(bool(PYTHON_LINE.match(l)) for l in lines) < min(PYTHON_EVIDENCE, max(1, len(written) // 3)):
        return None
    c_like = sum(l.rstrip().endswith(("{", ";", "}")) for l in written)
    return "python" if c_like * 4 < len(written) else None


def language_of(uri: str, language_id: str | None = None) -> str | None:
    """'python' for a Python document (by the client's languageId, else the file extension), None otherwise."""
    if language_id:
        return "python" if language_id.lower() == "python" else None
    return EXTENSIONS.get(PurePosixPath(uri.split("?", 1)[0]).suffix.lower())


@lru_cache(maxsize=None)
def parser_for(language: str | None):
    if language != "python":
        return None
    import tree_sitter
    import tree_sitter_python

    return tree_sitter.Parser(tree_sitter.Language(tree_sitter_python.language()))


def _parse(language: str | None, text: str):
    parser = parser_for(language)
    return None if parser is None else parser.parse(text.encode("utf-8"))


def error_count(language: str | None, text: str) -> int:
    """ERROR and MISSING nodes in the parse of `text` (0 for a language without a grammar)."""
    tree = _parse(language, text)
    if tree is None or not tree.root_node.has_error:
        return 0
    count, stack = 0, [tree.root_node]
    while stack:
        node = stack.pop()
        if node.is_error or node.is_missing:
            count += 1
        stack.extend(c for c in node.children if c.has_error or c.is_missing)
    return count


def wants_block(prefix: str, suffix: str, language: str | None) -> bool:
    """A block (several lines) at a cursor on a blank line outside any bracket; the rest of a line otherwise."""
    before, after = prefix[prefix.rfind("\n") + 1:], suffix.split("\n", 1)[0]
    if before.strip() or after.strip():
        return False
    tree = _parse(language, prefix + suffix)
    if tree is None:
        return True
    offset = len(prefix.encode("utf-8"))
    node = tree.root_node.descendant_for_byte_range(offset, offset)
    while node is not None:
        if node.type in LINE_CONTEXTS and node.start_byte < offset < node.end_byte:
            return False
        node = node.parent
    return True


def enclosing_block(text: str, offset: int, language: str | None) -> tuple[int, int]:
    """(start, end) character offsets of the smallest function, class or compound statement around `offset`,
    as whole lines; without a grammar, the run of non-blank lines around it."""
    data = text.encode("utf-8")
    tree = _parse(language, text)
    start = end = None
    if tree is not None:
        b = len(text[:offset].encode("utf-8"))
        node = tree.root_node.descendant_for_byte_range(b, b)
        while node is not None and node.type not in BLOCKS:
            node = node.parent
        if node is not None:
            start = len(data[:node.start_byte].decode("utf-8", "replace"))
            end = len(data[:node.end_byte].decode("utf-8", "replace"))
    if start is None:  # paragraph: blank lines bound it
        start = text.rfind("\n\n", 0, offset)
        start = 0 if start < 0 else start + 2
        end = text.find("\n\n", offset)
        end = len(text) if end < 0 else end
    start = text.rfind("\n", 0, start) + 1               # whole lines
    nl = text.find("\n", end)
    return start, len(text) if nl < 0 else nl + 1


def trim_to_scope(text: str, prefix: str) -> str:
    """Cut a multi-line completion where it leaves the cursor's indentation scope (a line indented less)."""
    lines = text.split("\n")
    indent = len(indent_of(prefix[prefix.rfind("\n") + 1:] + lines[0]))  # the completion's first line
    for i, l in enumerate(lines[1:], 1):
        if l.strip() and len(indent_of(l)) < indent:
            return "\n".join(lines[:i]).rstrip() + "\n"
    return text


LINE_CUTS = ",;:)]}"     # a single line that breaks the file may end before one of these, or after a closing bracket


def keep_valid(prefix: str, text: str, suffix: str, language: str | None, cut_line: bool = True) -> str:
    """The completion, or the longest part of it that adds no syntax error to the file: whole lines, and for a
    completion of one line, the line up to a boundary between tokens (before one of `LINE_CUTS`, after a closing
    bracket), so that an overfilled window's `Mapping[Any, _T], _T] | None = None` keeps `Mapping[Any,
    _T]`; '' if every part breaks a file that parses cleanly without it. Without a grammar, the completion
    unchanged. `cut_line` False: whole lines only (docs/history.md, "Probes behind single rules")."""
    if parser_for(language) is None or not text:
        return text
    base = error_count(language, prefix + suffix)
    if error_count(language, prefix + text + suffix) <= base:
        return text
    lines = text.split("\n")
    for n in range(len(lines) - 1, 0, -1):
        part = "\n".join(lines[:n]) + "\n"
        if part.strip() and error_count(language, prefix + part + suffix) <= base:
            return part
    if base:
        return text
    line = text.rstrip("\n")
    if cut_line and "\n" not in line:
        end = text[len(line):]
        for i in range(len(line) - 1, 0, -1):
            if line[i] in LINE_CUTS or line[i - 1] in ")]}":
                part = line[:i].rstrip()
                if part.strip() and error_count(language, prefix + part + end + suffix) <= base:
                    return part + end
    return ""


GUARD_CHARS = 6000  # the document the end guard parses: about this much on each side of the cursor, cut at top-level lines


def _python_error_at(text: str) -> int | None:
    """The character offset of Python's first syntax error in `text`, None if it parses."""
    try:
        parse(text)
    except SyntaxError as e:
        lines = text.split("\n")
        row = min(max((e.lineno or 1) - 1, 0), len(lines))
        return sum(len(line) + 1 for line in lines[:row]) + max(0, (e.offset or 1) - 1)
    except (ValueError, RecursionError, MemoryError):  # null bytes, absurd nesting: no judgement
        return None
    return None


def _top_level(line: str) -> bool:
    return bool(line) and not line[0].isspace() and line[0] not in ")]}#'\"@"


def _near_cursor(prefix: str, suffix: str) -> tuple[str, str]:
    """The prefix from a top-level line at most GUARD_CHARS back, the suffix up to one GUARD_CHARS ahead: a slice of
    a large file that still starts and ends between statements, so parsing it stays cheap and meaningful."""
    if len(prefix) > GUARD_CHARS:
        start = len(prefix) - GUARD_CHARS
        while start < len(prefix) and not (prefix[start - 1] == "\n" and _top_level(prefix[start:start + 1])):
            start = prefix.find("\n", start) + 1 or len(prefix)
        prefix = prefix[start:]
    if len(suffix) > GUARD_CHARS:
        end = GUARD_CHARS
        while end < len(suffix) and not (suffix[end - 1] == "\n" and _top_level(suffix[end:end + 1])):
            end = suffix.find("\n", end) + 1 or len(suffix)
        suffix = suffix[:end]
    return prefix, suffix


def end_guard(language: str | None, prefix: str, suffix: str, single_line: bool) -> Callable[[str], bool] | None:
    """The sampler's `may_end` for a Python document: the middle may end only where it leaves no syntax error of
    its own — the first error Python's parser finds is before the middle (not ours to fix), or after it where the
    document without the middle already had one. So "    if" or "    total =" cannot end a line; an editor file
    broken elsewhere still gets its completions. `text` is the window's text as it would end (the healed suffix
    start included, as the model writes it; through the newline for a line cut at a stop), against the unhealed
    prefix and suffix. None for other languages: no guidance."""
    if language != "python":
        return None
    prefix, suffix = _near_cursor(prefix, suffix)
    end = line_end(prefix, suffix)
    base: list[int | None] = []  # the document's first error without the middle, computed on first need

    def may_end(text: str) -> bool:
        text = text.split("\n", 1)[0] + end if single_line else unheal_end(text, suffix)
        doc = prefix + text + suffix
        pos = _python_error_at(doc)
        if pos is None or pos < len(prefix):
            return True
        ours = len(prefix) + len(text)  # the middle's text, and the rest of its last line when it ends mid-line
        if not text.endswith("\n"):
            ours = len(doc) if (nl := doc.find("\n", ours)) < 0 else nl + 1
        if pos < ours:
            return False
        if not base:
            base.append(_python_error_at(prefix + suffix))
        return base[0] is not None and pos - len(text) >= base[0]

    return may_end

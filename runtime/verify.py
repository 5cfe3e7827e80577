"""Edit verification: whether a model's edit of a block may be offered, and a one-line summary of what it changes.

    verdict = check_edit(prefix, old, new, suffix, language, kind)   # kind: "repair" | "rewrite"
    if not verdict.ok: report verdict.why instead of offering the edit; else title it with verdict.summary

An edit is refused (its `why` says which rule) when
  any language  it changes nothing; it deletes most of its block; it is a repair that changes more than
                REPAIR_MAX_TOKENS tokens
  Python        it breaks a file that compiled (where the file did not compile: a block that did on its own);
                it introduces an undefined name, or leaves a variable or an import unused (pyflakes, before and
                after compared by name); it renames or removes a name the block binds that the rest of the file
                uses, or a function's name, parameters, decorators or async-ness; it trades an attribute the
                file uses elsewhere for one it never uses (a misspelled `.apend`); it comments out code; it
                leaves a statement that computes a value and drops it (a lost `return`); it is a repair that
                changes only whitespace or comments, deletes a statement, drops a `return`, `raise` or `yield`,
                or changes the text of a string
Pure and torch-free: the serving runtime calls it on every edit before a front end sees it.
"""
from __future__ import annotations

import ast
import bisect
import difflib
import io
import re
import textwrap
import tokenize
import warnings
from dataclasses import dataclass
from functools import cached_property, lru_cache

from pyflakes import messages as flakes
from pyflakes.checker import Checker

from runtime.pyast import parse

KINDS = ("repair", "rewrite")
PYTHON = "python"
REPAIR_MAX_TOKENS = 3       # a repair changes at most this many lexical tokens (a name, an operator, `- 1`)
MIN_KEPT = 0.5              # an edit keeping less than this share of its block's characters deletes most of it
SUMMARY_CHARS = 80          # a summary is at most this long
CONTEXT_TOKENS = 4          # at most this many tokens of context each side of a change in a line too long to show
UNDEFINED = (flakes.UndefinedName, flakes.UndefinedLocal, flakes.UndefinedExport)
UNUSED = (flakes.UnusedVariable, flakes.UnusedImport)
SCOPES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ListComp, ast.SetComp, ast.DictComp,
          ast.GeneratorExp)
EXITS = ("return", "raise", "yield")    # a repair that drops one of these changes what the block gives back
IDLE_OK = (ast.Call, ast.Await, ast.Yield, ast.YieldFrom, ast.NamedExpr)
SKIPPED = {tokenize.NL, tokenize.COMMENT, tokenize.ENDMARKER, tokenize.ENCODING}
WORDS = re.compile(r"\w+|[^\w\s]")
NAME = re.compile(r"[^\W\d]\w*")
NOT_OFFERED = ": not offered"


@dataclass(frozen=True)
class Verdict:
    ok: bool
    why: str | None      # one line for the user when the edit is not offered; None when it is
    summary: str         # what the edit changes, e.g. "mesage → message" or "+ 2 lines, − 1 line"


def check_edit(prefix: str, old: str, new: str, suffix: str, language: str | None = None,
               kind: str = "repair") -> Verdict:
    """Whether replacing `old` (between `prefix` and `suffix`) by `new` may be offered, and what it changes.
    `language` "python" gets every rule; any other (or None) only the size rules. `kind` is "repair" (a few
    tokens fixed) or "rewrite" (the block written again)."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, not {kind!r}")
    summary = describe(old, new)
    python = (language or "").lower() == PYTHON
    why = _size_rules(old, new) or (_lexical_rules(old, new, kind) if python else None) or \
        _repair_size(old, new, kind, python) or (_compiled_rules(prefix, old, new, suffix) if python else None)
    return Verdict(why is None, why, summary)


# --- rules ------------------------------------------------------------------------------------------------
def _size_rules(old: str, new: str) -> str | None:
    if new.strip() == old.strip():
        return "the model found nothing to change"
    kept, was = len(new.strip()), len(old.strip())
    if kept < MIN_KEPT * was:
        return f"the edit would delete most of the block ({was} → {kept} characters){NOT_OFFERED}"
    return None


def _repair_size(old: str, new: str, kind: str, python: bool) -> str | None:
    if kind == "repair" and (n := changed_tokens(*tokens(old, new, python))) > REPAIR_MAX_TOKENS:
        return f"the repair changes {n} tokens (a repair changes at most {REPAIR_MAX_TOKENS}){NOT_OFFERED}"
    return None


def _lexical_rules(old: str, new: str, kind: str) -> str | None:
    """Python's tokens before and after: comments, statements and `return`s (where both blocks tokenize)."""
    before, after = _lexemes(old), _lexemes(new)
    if before is None or after is None:
        return None
    if kind == "repair" and not changed_tokens(*tokens(old, new, True)):
        return "the repair changes only whitespace or comments: nothing to offer"
    if (line := _commented_out(before, after)) is not None:
        return f"the edit comments out code ({_clip(line, 40)}){NOT_OFFERED}"
    if kind == "repair" and _statements(after) < _statements(before):
        return f"the repair deletes a statement{NOT_OFFERED}"
    for word in EXITS:
        if kind == "repair" and _count(after, word) < _count(before, word):
            return f"the repair drops a `{word}`{NOT_OFFERED}"
    if kind == "repair" and _changes_text(before, after):
        return f"the repair changes the text of a string, not code{NOT_OFFERED}"
    return None


def _compiled_rules(prefix: str, old: str, new: str, suffix: str) -> str | None:
    """The rules that read the code: on the whole file where it compiled, else on the block where that did."""
    where = "a file"
    old_file, new_file = analyse(prefix + old + suffix), analyse(prefix + new + suffix)
    if old_file is None:
        prefix, suffix, where = "", "", "a block"
        old, new = _dedent(old), _dedent(new)
        old_file, new_file = analyse(old), analyse(new)
        if old_file is None:
            return None          # nothing compiled before the edit: no Python rule can judge it
    if new_file is None:
        return f"the edit would break {where} that compiles{NOT_OFFERED}"
    was, now = (old_file, len(prefix), len(prefix) + len(old)), (new_file, len(prefix), len(prefix) + len(new))
    return _name_rules(was, now, prefix + suffix)


def _name_rules(was: tuple, now: tuple, outside: str) -> str | None:
    """Functions, bindings, attributes and names: `was` and `now` are (Analysis, block start, block end)."""
    (a, s, e), (b, t, f) = was, now
    old_defs, new_defs = a.defs(s, e), b.defs(t, f)
    for name, signatures in old_defs.items():
        if name not in new_defs:
            return f"the edit renames or removes the function `{name}`{NOT_OFFERED}"
        if new_defs[name] != signatures:
            return f"the edit changes the signature of `{name}` (parameters, decorators or async){NOT_OFFERED}"
    if b.idle(t, f) > a.idle(s, e):
        return f"the edit leaves a statement that computes a value and drops it (a lost `return`?){NOT_OFFERED}"
    for name, attribute in sorted(a.bindings(s, e) - b.bindings(t, f)):
        if re.search((r"\." if attribute else r"\b") + re.escape(name) + r"\b", outside):
            return f"the edit renames or removes `{name}`, which the rest of the file uses{NOT_OFFERED}"
    read_before, read_after = a.attributes(s, e), b.attributes(t, f)
    for name in sorted(read_after - read_before):
        if not re.search(rf"\b{re.escape(name)}\b", outside) and any(
                re.search(rf"\.{re.escape(lost)}\b", outside) for lost in read_before - read_after):
            return (f"the edit uses the attribute `.{name}`, which the file never uses, instead of one it "
                    f"does{NOT_OFFERED}")
    for what, name in sorted(b.names - a.names):
        if what == "undefined":
            return f"the edit uses `{name}`, which is not defined{NOT_OFFERED}"
        return f"the edit leaves `{name}` assigned or imported but never used{NOT_OFFERED}"
    return None


@dataclass(frozen=True, eq=False)
class Analysis:
    """A source that compiles: its tree, pyflakes' undefined and unused names ("undefined" | "unused", name),
    and where each line starts (to place ast's nodes at character offsets)."""
    tree: ast.Module
    names: frozenset
    lines: tuple[str, ...]
    starts: tuple[int, ...]

    @cached_property
    def nodes(self) -> tuple[ast.AST, ...]:
        """Every node of the tree (`ast.walk`'s order), walked once for all who ask."""
        return tuple(ast.walk(self.tree))

    def offset(self, lineno: int, col: int) -> int:
        """The character offset of ast's (1-based line, column in UTF-8 bytes)."""
        line = self.lines[lineno - 1]
        return self.starts[lineno - 1] + len(line.encode("utf-8")[:col].decode("utf-8", "replace"))

    def inside(self, start: int, end: int):
        """(node, whether its innermost function-like scope lies wholly inside) for each node in [start, end)."""
        first, last = bisect.bisect_right(self.starts, start), bisect.bisect_right(self.starts, end)
        spans, found = {}, []
        stack = [(self.tree, None)]
        while stack:
            node, scope = stack.pop()
            if getattr(node, "end_lineno", None) is not None:
                top = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", ())])
                if node.end_lineno < first or top > last:
                    continue      # nothing under a node outside the block's lines is inside the block
            inner = node if isinstance(node, SCOPES) else scope
            stack.extend((child, inner) for child in ast.iter_child_nodes(node))
            if getattr(node, "end_lineno", None) is not None:
                spans[node] = (self.offset(node.lineno, node.col_offset),
                               self.offset(node.end_lineno, node.end_col_offset))
                found.append((node, scope))
        for node, scope in found:
            s, e = spans[node]
            if start <= s and e <= end:
                yield node, scope is not None and start <= spans[scope][0] and spans[scope][1] <= end

    def bindings(self, start: int, end: int) -> set[tuple[str, bool]]:
        """(name, is an attribute) bound in [start, end) that code outside can see: assignment targets, imports,
        `for`/`with`/`except` names, classes and functions, attributes assigned (`self.items = ...`), less the
        names local to a function (or lambda, comprehension) that lies wholly inside."""
        out = set()
        for node, private in self.inside(start, end):
            if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                out.add((node.attr, True))
            elif private:
                continue
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                out.add((node.id, False))
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                out.add((node.name, False))
            elif isinstance(node, ast.alias):
                out.add(((node.asname or node.name).split(".")[0], False))
            elif isinstance(node, ast.ExceptHandler) and node.name:
                out.add((node.name, False))
        return out

    def attributes(self, start: int, end: int) -> set[str]:
        """The attribute names read in [start, end) (`.append` of `items.append(x)`)."""
        return {n.attr for n, _ in self.inside(start, end) if isinstance(n, ast.Attribute)
                and isinstance(n.ctx, ast.Load)}

    def idle(self, start: int, end: int) -> int:
        """Expression statements in [start, end) whose value is computed and dropped: not a call, an await, a
        yield, a docstring or `...`."""
        return sum(isinstance(n, ast.Expr) and not isinstance(n.value, IDLE_OK) and
                   not (isinstance(n.value, ast.Constant) and isinstance(n.value.value, (str, type(...))))
                   for n, _ in self.inside(start, end))

    def defs(self, start: int, end: int) -> dict[str, list[tuple]]:
        """The signatures of the functions defined in [start, end), by name, in source order: async or not,
        parameters (names and kinds, how many defaults), decorators."""
        out: dict[str, list[tuple]] = {}
        found = [n for n, _ in self.inside(start, end) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
        for node in sorted(found, key=lambda n: (n.lineno, n.col_offset)):
            a = node.args
            out.setdefault(node.name, []).append((
                isinstance(node, ast.AsyncFunctionDef), tuple(p.arg for p in a.posonlyargs),
                tuple(p.arg for p in a.args), a.vararg and a.vararg.arg, tuple(p.arg for p in a.kwonlyargs),
                a.kwarg and a.kwarg.arg, len(a.defaults), tuple(d is None for d in a.kw_defaults),
                tuple(ast.dump(d) for d in node.decorator_list)))
        return out


@lru_cache(maxsize=4)
def analyse(source: str) -> Analysis | None:
    """The Analysis of a source that compiles (symbol-table errors count: a duplicate parameter, `return`
    outside a function); None otherwise. Cached: the file around a block is the same for every edit in it."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tree = parse(source, check=True)
    except (SyntaxError, ValueError, TypeError, RecursionError, MemoryError, OverflowError):
        return None
    try:
        found = Checker(tree, filename="<edit>").messages
    except (RecursionError, AttributeError, TypeError, ValueError):   # pyflakes could not judge it: no names
        found = []
    names = frozenset(("undefined" if isinstance(m, UNDEFINED) else "unused", _flake_name(m))
                      for m in found if isinstance(m, UNDEFINED + UNUSED))
    lines = source.split("\n")
    starts, at = [], 0
    for line in lines:
        starts.append(at)
        at += len(line) + 1
    return Analysis(tree, names, tuple(lines), tuple(starts))


def _flake_name(m) -> str:
    name = m.message_args[0]
    return name if isinstance(name, str) else ", ".join(map(str, name))


def _dedent(block: str) -> str:
    return textwrap.dedent(block.expandtabs(8))


# --- tokens ---------------------------------------------------------------------------------------------
def _lexemes(block: str) -> list[tuple[int, str, int]] | None:
    """Python's tokens of a block (type, text, line) — comments included, blank-line markers left out; INDENT
    and NEWLINE compared by kind, not text. None when the block does not tokenize on its own."""
    try:
        toks = list(tokenize.generate_tokens(io.StringIO(_dedent(block)).readline))
    except (tokenize.TokenError, IndentationError, SyntaxError):
        return None
    return [(t.type, "" if t.type in (tokenize.INDENT, tokenize.NEWLINE) else t.string, t.start[0]) for t in toks
            if t.type not in SKIPPED or t.type == tokenize.COMMENT]


def _words(text: str) -> list[str]:
    """Language-free tokens: words and single punctuation marks."""
    return WORDS.findall(text)


def tokens(old: str, new: str, python: bool) -> tuple[list[str], list[str]]:
    """The lexical tokens of two blocks that a repair's size is counted in: Python's (comments left out,
    indentation as INDENT and DEDENT) where both blocks tokenize, else words and punctuation marks."""
    pair = (_lexemes(old), _lexemes(new)) if python else (None, None)
    if None in pair:
        return _words(old), _words(new)
    return tuple([f"{t}:{s}" for t, s, _ in lexemes if t != tokenize.COMMENT] for lexemes in pair)


def changed_tokens(a: list[str], b: list[str]) -> int:
    """How many tokens differ between two sequences: each changed run counts its longer side."""
    ops = difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes()
    return sum(max(i2 - i1, j2 - j1) for op, i1, i2, j1, j2 in ops if op != "equal")


def _changes_text(before, after) -> bool:
    """Whether a plain string literal (not an f-string, whose names are code) is among the tokens changed."""
    a, b = [t[:2] for t in before if t[0] != tokenize.COMMENT], [t[:2] for t in after if t[0] != tokenize.COMMENT]
    ops = difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes()
    changed = [t for op, i1, i2, j1, j2 in ops if op != "equal" for t in a[i1:i2] + b[j1:j2]]
    return any(t == tokenize.STRING and "f" not in s[:s.find(s[-1])].lower() for t, s in changed)


def _count(lexemes: list[tuple[int, str, int]], word: str) -> int:
    return sum(t == tokenize.NAME and s == word for t, s, _ in lexemes)


def _statements(lexemes: list[tuple[int, str, int]]) -> int:
    """Statements that do something: logical lines and the simple statements `;` joins, less each `pass`."""
    return sum((t == tokenize.NEWLINE or (t == tokenize.OP and s == ";")) - (t == tokenize.NAME and s == "pass")
               for t, s, _ in lexemes)


def _commented_out(before, after) -> str | None:
    """A comment the edit added whose text is a line of code the edit removed: commented-out code."""
    old_comments = {s for t, s, _ in before if t == tokenize.COMMENT}
    removed = _code_lines(before) - _code_lines(after)
    for t, s, _ in after:
        if t == tokenize.COMMENT and s not in old_comments and "".join(s.lstrip("#").split()) in removed:
            return s.lstrip("#").strip()
    return None


def _code_lines(lexemes) -> set[str]:
    """The code of each physical line without whitespace (comments left out)."""
    by_line: dict[int, list[str]] = {}
    for t, s, line in lexemes:
        if t not in (tokenize.COMMENT, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT):
            by_line.setdefault(line, []).append(s)
    return {"".join("".join(toks).split()) for toks in by_line.values()}


# --- summaries -------------------------------------------------------------------------------------------
def describe(old: str, new: str) -> str:
    """What an edit changes, in at most SUMMARY_CHARS characters: `mesage → message` (a word, `(2×)` when the
    same word changes in several places), `return a + b → return a * b` (one line), `- if not items: return
    items` / `+ line` (one line removed or added), else `+ 2 lines, − 1 line`."""
    a = [l.rstrip() for l in old.strip("\n").split("\n")]
    b = [l.rstrip() for l in new.strip("\n").split("\n")]
    if [l.split() for l in a] == [l.split() for l in b]:
        moved = [x.strip() for x, y in zip(a, b) if _indent(x) != _indent(y)]
        if not moved:
            return "no change" if old == new else "whitespace only"
        return _clip(f"indentation of {moved[0]}" if len(moved) == 1 else f"indentation of {len(moved)} lines")
    ops = [o for o in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes() if o[0] != "equal"]
    if len(ops) == 1 and ops[0][0] == "delete" and ops[0][2] - ops[0][1] == 1:
        return _clip("- " + a[ops[0][1]].strip())
    if len(ops) == 1 and ops[0][0] == "insert" and ops[0][4] - ops[0][3] == 1:
        return _clip("+ " + b[ops[0][3]].strip())
    pairs = [(a[i1 + k], b[j1 + k]) for op, i1, i2, j1, j2 in ops if op == "replace" and i2 - i1 == j2 - j1
             for k in range(i2 - i1)]
    if pairs and sum(i2 - i1 for _, i1, i2, _, _ in ops) == len(pairs) == sum(j2 - j1 for *_, j1, j2 in ops):
        swaps = [_word_swaps(x, y) for x, y in pairs]
        if all(swaps) and len({w for ws in swaps for w in ws}) == 1:
            (x, y), count = swaps[0][0], sum(map(len, swaps))
            return _clip(f"{x} → {y}" + (f" ({count}×)" if count > 1 else ""))
        if len(pairs) == 1:
            return _line_change(*pairs[0])
    plus = sum(j2 - j1 for *_, j1, j2 in ops)
    minus = sum(i2 - i1 for _, i1, i2, _, _ in ops)
    return ", ".join(f"{sign} {n} line{'s' * (n != 1)}" for sign, n in (("+", plus), ("−", minus)) if n)


def _word_swaps(x: str, y: str) -> list[tuple[str, str]]:
    """The (old name, new name) pairs, one per place, when two lines differ only by names replaced one for one
    (a number changed is shown in its line: `1 → 2` alone says little)."""
    p, q = _words(x), _words(y)
    if len(p) != len(q):
        return []
    swaps = [(u, v) for u, v in zip(p, q) if u != v]
    return swaps if all(NAME.fullmatch(u) and NAME.fullmatch(v) for u, v in swaps) else []


def _line_change(x: str, y: str) -> str:
    """`old line → new line`, or the changed tokens with a little context when the lines are too long."""
    whole = f"{x.strip()} → {y.strip()}"
    if len(whole) <= SUMMARY_CHARS:
        return whole
    p, q = [m.span() for m in WORDS.finditer(x)], [m.span() for m in WORDS.finditer(y)]
    px, qy = [x[s:e] for s, e in p], [y[s:e] for s, e in q]
    head = 0
    while head < min(len(px), len(qy)) and px[head] == qy[head]:
        head += 1
    tail = 0
    while tail < min(len(px), len(qy)) - head and px[-1 - tail] == qy[-1 - tail]:
        tail += 1

    def part(text, spans, toks, context):
        i, j = max(0, head - context), min(len(toks), len(toks) - tail + context)
        if j <= i:
            return "…"
        return ("…" if i > 0 else "") + text[spans[i][0]:spans[j - 1][1]] + ("…" if j < len(toks) else "")
    for context in range(CONTEXT_TOKENS, -1, -1):
        short = f"{part(x, p, px, context)} → {part(y, q, qy, context)}"
        if len(short) <= SUMMARY_CHARS:
            return short
    return _clip(short)


def _indent(line: str) -> str:
    return line[:len(line) - len(line.lstrip())]


def _clip(text: str, limit: int = SUMMARY_CHARS) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "…"

"""Next edits: from the edit a user just made, the edit that should follow elsewhere in the file. The first kind is
rename propagation: when the one difference between the document before an edit and now is one name (`count` →
`total` at one place), every other use of that binding in the same scope is renamed too. The proposal is found by
analysis, not guessed: Python's tokenizer finds the renamed name, its `ast` finds the scope and the uses (a local
of the function the edit is in, or a module-level name), and runtime/verify.py's check passes the result (it
parses, adds no undefined name) before it is offered.
"""
from __future__ import annotations

import ast
import difflib
import io
import keyword
import re
import tokenize
from dataclasses import dataclass

MAX_CHARS = 200_000     # a larger document is not analysed
MAX_USES = 200          # a rename with more uses is left to a real refactoring tool


@dataclass
class Rename:
    old: str
    new: str
    line: int                                  # 1-based line of the edit
    uses: list[tuple[int, int]]                # (line, column) of each remaining use of `old` to rename


def _names(text: str) -> list[tokenize.TokenInfo] | None:
    """The line's tokens (a line that opens a bracket it does not close is tokenized up to its end)."""
    out = []
    try:
        for t in tokenize.generate_tokens(io.StringIO(text).readline):
            if t.type not in (tokenize.NL, tokenize.NEWLINE, tokenize.COMMENT, tokenize.INDENT, tokenize.DEDENT):
                out.append(t)
    except tokenize.TokenError:   # EOF in a multi-line statement: the line's own tokens are all there
        pass
    except (IndentationError, SyntaxError):
        return None
    return out


def _common(a: str, b: str) -> int:
    """The length of the common start of two strings (a bisection over slice comparisons, which run in C)."""
    lo, hi = 0, min(len(a), len(b))
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if a[:mid] == b[:mid] else (lo, mid - 1)
    return lo


def _changed_lines(before: str, after: str) -> tuple[str, str, int]:
    """The whole lines where two texts differ (before's, after's) and the first one's number: all that a one-token
    edit touches, so only those lines are tokenized."""
    i = _common(before, after)
    j = min(_common(before[::-1], after[::-1]), len(before) - i, len(after) - i)
    start = before.rfind("\n", 0, i) + 1
    end_b, end_a = before.find("\n", len(before) - j), after.find("\n", len(after) - j)
    end_b, end_a = (len(before) if end_b < 0 else end_b), (len(after) if end_a < 0 else end_a)
    return before[start:end_b], after[start:end_a], before.count("\n", 0, start) + 1


def renamed(before: str, after: str) -> tuple[str, str, int] | None:
    """(old, new, line) when `after` differs from `before` by one name token only, else None."""
    if before == after or max(len(before), len(after)) > MAX_CHARS:
        return None
    before, after, first = _changed_lines(before, after)
    if "\n" in before or "\n" in after:   # a one-token edit touches one line
        return None
    a, b = _names(before.strip() + "\n"), _names(after.strip() + "\n")
    if a is None or b is None or len(a) != len(b):
        return None
    ops = [op for op in difflib.SequenceMatcher(None, [t.string for t in a], [t.string for t in b],
                                                autojunk=False).get_opcodes() if op[0] != "equal"]
    if len(ops) != 1 or ops[0][0] != "replace" or ops[0][2] - ops[0][1] != 1 or ops[0][4] - ops[0][3] != 1:
        return None
    old, new = a[ops[0][1]], b[ops[0][3]]
    if old.type != tokenize.NAME or new.type != tokenize.NAME or keyword.iskeyword(old.string) or \
            keyword.iskeyword(new.string) or not new.string.isidentifier():
        return None
    return old.string, new.string, first


FUNCTIONS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)


def _binds(scope: ast.AST, name: str) -> bool:
    """Whether a function binds `name` itself (a parameter, an assignment, a nested definition)."""
    a = scope.args
    params = [x.arg for x in a.posonlyargs + a.args + a.kwonlyargs] + [x.arg for x in (a.vararg, a.kwarg) if x]
    return name in params or any(
        (isinstance(n, ast.Name) and n.id == name and isinstance(n.ctx, ast.Store)) or
        (isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and n.name == name and n is not scope)
        for n in ast.walk(scope))


def _binding_scope(tree: ast.Module, name: str, line: int) -> ast.AST | None:
    """The scope whose binding of `name` the edit at `line` is (the innermost function around it that binds it,
    else the module); None when the edit is not at a binding (a use renamed alone is not a rename)."""
    at = [n for n in ast.walk(tree) if getattr(n, "lineno", None) == line and (
        (isinstance(n, ast.Name) and n.id == name and isinstance(n.ctx, ast.Store)) or
        (isinstance(n, ast.arg) and n.arg == name) or
        (isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and n.name == name) or
        (isinstance(n, ast.alias) and (n.asname or n.name) == name))]
    if not at:
        return None
    around = [f for f in ast.walk(tree) if isinstance(f, FUNCTIONS) and f.lineno <= line <= f.end_lineno
              and _binds(f, name) and not (isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef)) and
                                           f.name == name and f.lineno == line)]
    return max(around, key=lambda f: f.lineno) if around else tree


def _uses(scope: ast.AST, old: str) -> list[ast.AST]:
    """The Name and parameter nodes of `old` in the scope, not those of nested functions that bind it again."""
    out, stack = [], [scope]
    while stack:
        node = stack.pop()
        for child in ast.iter_child_nodes(node):
            if isinstance(child, FUNCTIONS) and _binds(child, old):
                continue
            if (isinstance(child, ast.Name) and child.id == old) or (isinstance(child, ast.arg) and child.arg == old):
                out.append(child)
            stack.append(child)
    if isinstance(scope, FUNCTIONS):
        a = scope.args
        out += [x for x in a.posonlyargs + a.args + a.kwonlyargs + [a.vararg, a.kwarg] if x and x.arg == old]
    return out


def propagation(before: str, after: str, tree: ast.Module | None = None) -> Rename | None:
    """The rename the edit from `before` to `after` started at a binding, with the uses still to rename (character
    columns); None when the edit is not such a rename, the document does not parse, or nothing is left to do."""
    found = renamed(before, after)
    if found is None:
        return None
    old, new, line = found
    if not re.search(rf"\b{re.escape(old)}\b", after):   # no use left: no analysis needed
        return None
    try:
        tree = tree or ast.parse(after)
    except SyntaxError:
        return None
    scope = _binding_scope(tree, new, line)
    if scope is None:
        return None
    lines = after.splitlines()
    uses = sorted({(n.lineno, len(lines[n.lineno - 1].encode()[:n.col_offset].decode(errors="replace")))
                   for n in _uses(scope, old)})
    if not uses or len(uses) > MAX_USES:
        return None
    return Rename(old, new, line, uses)


def apply(text: str, rename: Rename) -> str:
    """`text` with each use renamed."""
    lines = text.splitlines(keepends=True)
    for line, col in sorted(rename.uses, reverse=True):
        s = lines[line - 1]
        if s[col:col + len(rename.old)] == rename.old:
            lines[line - 1] = s[:col] + rename.new + s[col + len(rename.old):]
    return "".join(lines)


def offered(now: str, rename: Rename) -> str | None:
    """The document with the rename carried through, when it compiles and has no undefined name the document did
    not have (runtime/verify.py's analysis); else None."""
    from runtime.verify import analyse
    new = apply(now, rename)
    after, before = analyse(new), analyse(now)
    if after is None:
        return None
    undefined = lambda a: {n for kind, n in a.names if kind == "undefined"}   # noqa: E731
    return new if before is None or undefined(after) <= undefined(before) else None


def from_history(versions: list[str], now: str) -> tuple[Rename, str] | None:
    """The rename started since one of the earlier `versions` (the latest that is one), carried through and
    checked: (the rename, the document after it); None when there is none to offer."""
    tree = None
    for before in reversed(versions):
        if renamed(before, now) is None:
            continue
        if tree is None:
            try:
                tree = ast.parse(now)
            except SyntaxError:
                return None
        if (found := propagation(before, now, tree)) is not None:
            new = offered(now, found)
            return (found, new) if new is not None else None
    return None

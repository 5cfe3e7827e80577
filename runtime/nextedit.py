"""Next edits: from the edit a user just made, the edit that should follow elsewhere in the file. The first kind is
rename propagation: when the one difference between the document before an edit and now is one name (`count` →
`total` at one place), every other use of that binding in the same scope is renamed too. The proposal is found by
analysis, not guessed: Python's tokenizer finds the renamed name, its `ast` finds the scope and the uses (a local
of the function the edit is in, or a module-level name), and runtime/verify.py's check passes the result (it
parses, adds no undefined name) before it is offered; a rename into a name the scope already has is never one.
The second kind: a parameter deleted from a `def` is deleted from the calls in the file that pass it. The third:
the same change on the other lines that have what the edited line had (`log.warn(` → `log.warning(`,
`x == None` → `x is None`), matched with a token of context on each side.
"""
from __future__ import annotations

import ast
import difflib
import io
import keyword
import re
import tokenize
from dataclasses import dataclass

from runtime.pyast import parse

MAX_CHARS = 200_000     # a larger document is not analysed
MAX_USES = 200          # a rename with more uses is left to a real refactoring tool (and a change repeated on more lines)
HISTORY = 32            # versions of a document kept to find the edit a next edit follows from


def keep(versions: list[str], text: str) -> None:
    """Add the document's text as it is now to its kept versions (the language server's, a session's)."""
    if not versions or versions[-1] != text:
        versions.append(text)
        del versions[:-HISTORY]


def source_lines(text: str) -> list[str]:
    """The lines as Python numbers them, each with its end: str.splitlines also splits at a form feed or U+2028,
    which Python's parser does not (positions from `ast` would land on the wrong line)."""
    lines = [line + "\n" for line in text.split("\n")]
    lines[-1] = lines[-1][:-1]
    return lines if lines[-1] else lines[:-1]


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


def _keyword_uses(tree: ast.Module, scope: ast.AST, old: str, new: str, line: int) -> list[ast.keyword]:
    """When the rename is of a function's parameter (at its `def`), the calls in the file that pass it by keyword
    (`area(width=2)`, `self.area(width=2)`: runtime/nextedit.py `_calls`), of which the file defines one only."""
    if not isinstance(scope, (ast.FunctionDef, ast.AsyncFunctionDef)):
        return []
    a = scope.args
    if not any(x.arg == new and x.lineno == line for x in a.args + a.kwonlyargs):   # positional-only: no keyword
        return []
    if sum(isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.name == scope.name for n in ast.walk(tree)) > 1:
        return []   # which of two same-named functions a call reaches is not known here
    method = _is_method(tree, scope)
    calls = (n for n in ast.walk(tree) if isinstance(n, ast.Call) and _calls(n, scope.name, method))
    return [k for c in calls for k in c.keywords if k.arg == old]


def _is_method(tree: ast.Module, fn: ast.AST) -> bool:
    return any(isinstance(c, ast.ClassDef) and fn in c.body for c in ast.walk(tree))


def _calls(call: ast.Call, name: str, method: bool) -> bool:
    """Whether a call surely reaches the file's function `name`: a module function called by its name, a method
    through `self.` or `cls.` (`d.get(k)` is not the file's `get`)."""
    if method:
        return isinstance(call.func, ast.Attribute) and call.func.attr == name and \
            isinstance(call.func.value, ast.Name) and call.func.value.id in ("self", "cls")
    return isinstance(call.func, ast.Name) and call.func.id == name


def _named(scope: ast.AST, name: str) -> int:
    """How many nodes in the scope, nested scopes included, name `name` (read, bound, a parameter, a definition,
    an import, a global or nonlocal declaration)."""
    return sum((isinstance(n, ast.Name) and n.id == name) or (isinstance(n, ast.arg) and n.arg == name) or
               (isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and n.name == name) or
               (isinstance(n, ast.alias) and (n.asname or n.name).split(".")[0] == name) or
               (isinstance(n, (ast.Global, ast.Nonlocal)) and name in n.names) for n in ast.walk(scope))


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
        tree = tree or parse(after)
    except SyntaxError:
        return None
    scope = _binding_scope(tree, new, line)
    if scope is None or _named(scope, new) > 1:   # the new name is in the scope already (another variable, a
        return None                               # parameter, a builtin or module it uses, a nested function's):
    lines = source_lines(after)                   # renaming into it would merge two things into one
    uses = sorted({(n.lineno, len(lines[n.lineno - 1].encode()[:n.col_offset].decode(errors="replace")))
                   for n in _uses(scope, old) + _keyword_uses(tree, scope, old, new, line)})
    if not uses or len(uses) > MAX_USES:
        return None
    return Rename(old, new, line, uses)


def apply(text: str, rename: Rename) -> str:
    """`text` with each use renamed."""
    lines = source_lines(text)
    for line, col in sorted(rename.uses, reverse=True):
        s = lines[line - 1]
        if s[col:col + len(rename.old)] == rename.old:
            lines[line - 1] = s[:col] + rename.new + s[col + len(rename.old):]
    return "".join(lines)


@dataclass
class NextEdit:
    title: str                                 # what it does, shown to the user
    edits: list[tuple[int, int, str]]          # (start, end, text): character offsets of the document as it is now
    after: str                                 # the document with the edits made


def _offsets(text: str) -> list[int]:
    starts = [0]
    for line in source_lines(text):
        starts.append(starts[-1] + len(line))
    return starts


def _as_edit(now: str, rename: Rename) -> NextEdit:
    starts, n = _offsets(now), len(rename.uses)
    edits = [(starts[line - 1] + col, starts[line - 1] + col + len(rename.old), rename.new) for line, col in rename.uses]
    return NextEdit(f"Rename the other {n} use{'s' * (n > 1)} of {rename.old} to {rename.new}", edits,
                    apply(now, rename))


def _header_params(fn: ast.AST) -> list[str]:
    a = fn.args
    return [x.arg for x in a.posonlyargs + a.args]


def _functions(tree: ast.Module) -> dict[tuple[str, int], ast.AST]:
    return {(n.name, n.lineno): n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}


def removed_argument(before: str, after: str, tree: ast.Module) -> NextEdit | None:
    """When the edit removed one parameter from a function's `def` (`def area(w, h, unit)` → `def area(w, h)`), the
    calls in the file that pass it — by position or by keyword — without it: a module function's calls by its
    name, a method's through `self.` or `cls.`. Calls that spread arguments (`*args`, `**kw`) are left alone; a
    function whose name the file defines twice gets nothing (which one a call reaches is not known here)."""
    old_lines, new_lines, line = _changed_lines(before, after)
    if "\n" in old_lines or "\n" in new_lines or "def " not in old_lines:   # one `def` line changed, nothing else
        return None
    try:
        was = parse(before)
    except SyntaxError:
        return None
    now_fns, was_fns = _functions(tree), _functions(was)
    fn = next((f for (_, at_line), f in now_fns.items() if at_line == line), None)
    old = was_fns.get((fn.name, line)) if fn is not None else None
    if fn is None or old is None or sum(name == fn.name for name, _ in now_fns) != 1:
        return None
    params, had = _header_params(fn) + [x.arg for x in fn.args.kwonlyargs], \
        _header_params(old) + [x.arg for x in old.args.kwonlyargs]
    gone = [p for p in had if p not in params]
    if len(had) != len(params) + 1 or len(gone) != 1 or [p for p in had if p != gone[0]] != params:
        return None
    gone = gone[0]
    positional = _header_params(old)
    method = _is_method(tree, fn)
    bound = method and not any(isinstance(d, ast.Name) and d.id == "staticmethod" for d in fn.decorator_list)
    lines, starts, edits = source_lines(after), _offsets(after), []

    def at(ln: int, col: int) -> int:   # ast's UTF-8 byte column → a character offset
        return starts[ln - 1] + len(lines[ln - 1].encode()[:col].decode(errors="replace"))

    for call in (n for n in ast.walk(tree) if isinstance(n, ast.Call)):
        if not _calls(call, fn.name, method) or any(isinstance(a, ast.Starred) for a in call.args) or \
                any(k.arg is None for k in call.keywords):
            continue
        index = positional.index(gone) - (1 if bound else 0) if gone in positional else None
        target = next((k for k in call.keywords if k.arg == gone), None)
        if target is None and index is not None and 0 <= index < len(call.args):
            target = call.args[index]
        if target is None:
            continue
        opening = after.index("(", at(call.func.end_lineno, call.func.end_col_offset))

        def extent(node: ast.AST) -> tuple[int, int]:   # the argument with the parentheses around it, if any
            a, b = at(node.lineno, node.col_offset), at(node.end_lineno, node.end_col_offset)
            while True:
                left, right = after[:a].rstrip(), after[b:].lstrip()
                if not (left.endswith("(") and len(left) - 1 != opening and right.startswith(")")):
                    return a, b
                a, b = len(left) - 1, len(after) - len(right) + 1

        parts = [extent(n) for n in sorted(call.args + call.keywords, key=lambda n: (n.lineno, n.col_offset))]
        k = sorted(call.args + call.keywords, key=lambda n: (n.lineno, n.col_offset)).index(target)
        if k + 1 < len(parts):
            span = (parts[k][0], parts[k + 1][0])
        elif k > 0:
            span = (parts[k - 1][1], parts[k][1])
        else:
            span = parts[k]
        edits.append((*span, ""))
    if not edits:
        return None
    text = after
    for a, b, new in sorted(edits, reverse=True):
        text = text[:a] + new + text[b:]
    n = len(edits)
    return NextEdit(f"Remove the {gone} argument from {n} call{'s' * (n > 1)} of {fn.name}", sorted(edits), text)


TOKEN = re.compile(r"\w+|\S")
SIMILAR = 0.6           # a change that is not an attribute's is repeated only on lines this alike (difflib's ratio)


def repeated_change(before: str, after: str) -> NextEdit | None:
    """When the edit changed one line (`logger.warn("x")` → `logger.warning("x")`), the same change on every other
    line that has the edited text with the same token on each side of it (an attribute with its object,
    `logger.warn`, and a word ending where a word ends); a change that is not an attribute's, only on lines alike
    (`if x == None:` and `return x == None`, not a call of another function that passes the same argument). A change of one bare name is a rename's (`propagation`), and a pattern the edited line has twice, or
    that would be made on more than MAX_USES lines, gives nothing."""
    old_line, new_line, line = _changed_lines(before, after)
    if "\n" in old_line or "\n" in new_line or old_line.strip() == new_line.strip():
        return None
    a = _common(old_line, new_line)
    z = min(_common(old_line[::-1], new_line[::-1]), len(old_line) - a, len(new_line) - a)
    while a and _word(old_line[a - 1]) and (_word(old_line[a]) if a < len(old_line) - z else True):
        a -= 1   # whole words: `warn` → `warning`, not `` → `ing`
    while z and _word(old_line[-z]) and _word(old_line[-z - 1]):
        z -= 1
    was, now = old_line[a:len(old_line) - z], new_line[a:len(new_line) - z]
    if not was.strip() or (was.isidentifier() and now.isidentifier() and not old_line[:a].endswith(".")):
        return None
    left = [m for m in TOKEN.finditer(old_line[:a])]
    right = None if _word(was[-1]) else TOKEN.search(old_line, len(old_line) - z)   # a word ends at a boundary
    if not left or (right is None and not _word(was[-1])):
        return None
    attribute = left[-1].group() == "." and len(left) > 1 and _word(left[-2].group()[0])
    start = left[-2].start() if attribute else left[-1].start()   # an attribute's object comes with it
    end = right.end() if right else len(old_line) - z
    pattern, change = old_line[start:end], old_line[start:a] + now + old_line[len(old_line) - z:end]
    if old_line.count(pattern) != 1 or len(pattern.strip()) < 3:
        return None
    lines, starts, edits = source_lines(after), _offsets(after), []
    for n, text in enumerate(lines, 1):
        at = text.find(pattern)
        if n == line or at < 0 or text.count(pattern) != 1 or \
                (at and _word(text[at - 1]) and _word(pattern[0])) or \
                (at + len(pattern) < len(text) and _word(text[at + len(pattern)]) and _word(pattern[-1])) or \
                not (attribute or difflib.SequenceMatcher(None, old_line.strip(), text.strip()).ratio() >= SIMILAR):
            continue
        edits.append((starts[n - 1] + at, starts[n - 1] + at + len(pattern), change))
    if not edits or len(edits) > MAX_USES:
        return None
    new = after
    for s_, e_, text in reversed(edits):
        new = new[:s_] + text + new[e_:]
    k = len(edits)
    return NextEdit(f"Make the same change on {k} other line{'s' * (k > 1)}: {pattern.strip()} → {change.strip()}",
                    edits, new)


def _word(ch: str) -> bool:
    return ch.isalnum() or ch == "_"


def checked(now: str, new: str) -> bool:
    """Whether the document after a next edit compiles and has no undefined name the document did not have
    (runtime/verify.py's analysis)."""
    from runtime.verify import analyse
    after, before = analyse(new), analyse(now)
    if after is None:
        return False
    undefined = lambda a: {n for kind, n in a.names if kind == "undefined"}   # noqa: E731
    return before is None or undefined(after) <= undefined(before)


def from_history(versions: list[str], now: str) -> NextEdit | None:
    """The next edit the change since one of the earlier `versions` calls for: a rename carried to the binding's
    other uses, a removed parameter removed from the calls, or the same change on similar lines; checked before
    it is offered (None when there is none, or it does not pass)."""
    if len(now) > MAX_CHARS or all(before == now for before in versions):
        return None
    try:
        tree = parse(now)
    except SyntaxError:
        return None
    for before in reversed(versions):   # a rename: from the latest version where a name was whole
        if renamed(before, now) is not None and (found := propagation(before, now, tree)) is not None:
            edit = _as_edit(now, found)
            return edit if checked(now, edit.after) else None
    for before in versions:   # a removed parameter: from the earliest version that still had it whole (`unit`, not
        if (edit := removed_argument(before, now, tree)) is not None:   # the `u` left while deleting it)
            return edit if checked(now, edit.after) else None
    for before in versions:   # the same change elsewhere: from the earliest version that parses (not `x  None` while
        if _parses(before) and (edit := repeated_change(before, now)) is not None:   # `==` becomes `is`)
            return edit if checked(now, edit.after) else None
    return None


def _parses(text: str) -> bool:
    try:
        parse(text)
    except (SyntaxError, ValueError):
        return False
    return True

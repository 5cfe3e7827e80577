"""Repairs static analysis makes on its own, before the model is asked: a name the block reads that nothing in the
file defines (pyflakes says so), an attribute of `self` read nowhere else in the file, or an attribute another object
lacks as jedi knows its type, replaced by the one name in scope or attribute that it most resembles — an IDE's "did
you mean". What it proposes still passes runtime/verify.py."""
from __future__ import annotations

import ast
import builtins
import difflib
import io
import time
import tokenize

import numpy as np

from runtime.repair import Plan
from runtime.verify import analyse

LIKENESS = 0.8         # difflib's ratio a replacement must reach, and lead the next candidate by LEAD
LEAD = 0.05
MIN_NAME = 3           # shorter names are too easy to confuse
BUILTIN_ATTRIBUTES = {a for t in (str, bytes, list, dict, set, tuple, int, float, object) for a in dir(t)}


def _candidates(wrong: str, pool: set[str]) -> str | None:
    """The one name of `pool` that `wrong` most resembles, if it is alike enough and clearly the best."""
    scored = sorted(((difflib.SequenceMatcher(None, wrong, n).ratio(), n) for n in pool if n != wrong
                     and abs(len(n) - len(wrong)) <= 2), reverse=True)
    if not scored or scored[0][0] < LIKENESS or (len(scored) > 1 and scored[0][0] - scored[1][0] < LEAD):
        return None
    return scored[0][1]


def _replace(block: str, wrong: str, right: str, attribute: bool) -> str:
    """`block` with each name token `wrong` (only after a `.` if `attribute`, never one after it otherwise)
    spelled `right`; strings and comments untouched."""
    lines = block.split("\n")
    try:
        toks = list(tokenize.generate_tokens(io.StringIO(block).readline))
    except (tokenize.TokenError, SyntaxError):   # a block that does not tokenize alone: left as it is
        return block
    for i in range(len(toks) - 1, -1, -1):
        t = toks[i]
        after_dot = i > 0 and toks[i - 1].type == tokenize.OP and toks[i - 1].string == "."
        if t.type == tokenize.NAME and t.string == wrong and after_dot == attribute:
            row, col = t.start[0] - 1, t.start[1]
            lines[row] = lines[row][:col] + right + lines[row][col + len(wrong):]
    return "\n".join(lines)


def repairable(req) -> tuple[str, str, str, str]:
    """A repair's (prefix, block, suffix, language); ValueError where the code is not Python: the model learnt
    Python only, and only Python's edits can be checked (a Python-trained model's repair of JavaScript deleted a
    `let`)."""
    if (req.language or "").lower() != "python":
        raise ValueError(f"repair reads Python only, not {req.language or 'code of an unknown language'}: the "
                         "model learnt Python, and only Python's edits can be checked before they are offered")
    return req.prefix, req.existing, req.suffix, req.language


def name_fix(prefix: str, block: str, suffix: str, language: str | None) -> str | None:
    """The block with a misspelled name or attribute fixed, or None where analysis finds nothing it is sure of."""
    if (language or "").lower() != "python":
        return None
    a = analyse(prefix + block + suffix)
    if a is None:
        return None
    start, end = len(prefix), len(prefix) + len(block)
    undefined = {n for kind, n in a.names if kind == "undefined"}
    inside = [n for n, _ in a.inside(start, end)]
    nodes = a.nodes
    methods = {m for c in nodes if isinstance(c, ast.ClassDef) for m in c.body
               if isinstance(m, (ast.FunctionDef, ast.AsyncFunctionDef))}   # attributes, not names in scope
    defined = {n.id for n in nodes if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
    defined |= {n.name for n in nodes if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
                and n not in methods}
    defined |= {n.arg for n in nodes if isinstance(n, ast.arg)}
    defined |= {(n.asname or n.name).split(".")[0] for n in nodes if isinstance(n, ast.alias)}
    defined |= set(dir(builtins))
    fixed = block
    for wrong in sorted({n.id for n in inside if isinstance(n, ast.Name) and n.id in undefined}):
        if len(wrong) >= MIN_NAME and (right := _candidates(wrong, defined)) is not None:
            fixed = _replace(fixed, wrong, right, attribute=False)
    attrs = [n.attr for n in nodes if isinstance(n, ast.Attribute)]
    # the attributes the file defines: assigned (`self.items = ...`), its classes' fields or methods; never a builtin
    # type's (`.strip` read once is a str method, not a misspelled `.rstrip`)
    own = {n.attr for n in nodes if isinstance(n, ast.Attribute) and isinstance(n.ctx, ast.Store)}
    own |= {m.name for m in methods}
    own |= {t.id for c in nodes if isinstance(c, ast.ClassDef) for st in c.body   # class fields (a
            for t in ([st.target] if isinstance(st, ast.AnnAssign) else getattr(st, "targets", []))  # dataclass's)
            if isinstance(t, ast.Name)}
    mine = {n.attr for n in inside if isinstance(n, ast.Attribute) and isinstance(n.ctx, ast.Load)
            and isinstance(n.value, ast.Name) and n.value.id in ("self", "cls")}   # another object's: unknowable
    for wrong in sorted(mine):
        if len(wrong) >= MIN_NAME and attrs.count(wrong) == 1 and wrong not in BUILTIN_ATTRIBUTES:
            if (right := _candidates(wrong, own)) is not None:
                fixed = _replace(fixed, wrong, right, attribute=True)
    for wrong, right in _known_attributes(a, inside, attrs, prefix + block + suffix):   # another object's, as jedi
        fixed = _replace(fixed, wrong, right, attribute=True)                           # knows its type
    return fixed if fixed != block else None


def _known_attributes(a, inside: list, attrs: list[str], code: str) -> list[tuple[str, str]]:
    """(misspelled, right) for attributes of another object (`os.path.exsts`, `inventory.remve`) read once in the
    file, that analysis (runtime/names.py: jedi) says the object lacks while it has one alike; an object analysis
    cannot type, or one answering any attribute (`__getattr__`), is left alone."""
    from runtime.names import BUDGET_S, existing_names
    out, deadline = [], time.monotonic() + BUDGET_S   # the whole block's analysis within one request's budget
    for n in inside:
        if not (isinstance(n, ast.Attribute) and isinstance(n.ctx, ast.Load) and len(n.attr) >= MIN_NAME
                and attrs.count(n.attr) == 1 and not (isinstance(n.value, ast.Name) and n.value.id in ("self", "cls"))):
            continue
        end = a.offset(n.end_lineno, n.end_col_offset)
        if code[end - len(n.attr):end] != n.attr:
            continue
        if (left := deadline - time.monotonic()) <= 0:
            break
        found = existing_names(code[:end - len(n.attr)], code[end:], budget_s=left)
        if isinstance(found, tuple) and n.attr not in found[1] and (right := _candidates(n.attr, set(found[1]))):
            out.append((n.attr, right))
    return out


def code_tokens(tok, block: str, language: str | None) -> np.ndarray | None:
    """Which of `block`'s tokens (`tok.encode(block)`) a model's repair may re-fill: those whose every character
    that is not blank is code (`code_chars`). None where every token may."""
    if (spans := code_chars(block, language)) is None or (offsets := token_offsets(tok, block)) is None:
        return None
    code = np.zeros(len(block) + 1, bool)
    for s, e in spans:
        code[s:e] = True
    return np.array([e > s and all(code[i] or block[i].isspace() for i in range(s, e)) and code[s:e].any()
                     for s, e in offsets], bool)


def code_chars(block: str, language: str | None) -> list[tuple[int, int]] | None:
    """The character ranges of `block` a model's repair may re-fill: its Python code, not its strings (an f-string's
    text included), comments, indentation or the names it defines functions and classes by. None where the block
    is not Python or does not tokenize alone (then every token may be re-filled; runtime/verify.py still judges
    the result)."""
    if (language or "").lower() != "python":
        return None
    starts = [0]
    for line in block.splitlines(keepends=True):
        starts.append(starts[-1] + len(line))
    try:
        toks = list(tokenize.generate_tokens(io.StringIO(block).readline))
    except (tokenize.TokenError, SyntaxError, IndentationError):
        return None
    text = (tokenize.STRING, tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT,
            tokenize.ENDMARKER) + tuple(getattr(tokenize, k) for k in ("FSTRING_START", "FSTRING_MIDDLE",
                                                                        "FSTRING_END") if hasattr(tokenize, k))
    named = {i + 1 for i, t in enumerate(toks) if t.type == tokenize.NAME and t.string in ("def", "class")}
    return [(starts[t.start[0] - 1] + t.start[1], starts[t.end[0] - 1] + t.end[1]) for i, t in enumerate(toks)
            if t.type not in text and t.start[0] - 1 < len(starts) - 1 and i not in named]   # a definition's name:
                                                                                        # what others call it


DEFINITIONS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
POINTLESS = (ast.Name, ast.Attribute, ast.Subscript, ast.Compare, ast.BoolOp, ast.BinOp, ast.UnaryOp, ast.Constant,
             ast.IfExp, ast.Tuple, ast.List, ast.Dict, ast.Set)


def pointless_end(prefix: str, block: str, suffix: str, language: str | None) -> int | None:
    """Where in `block` a `return` seems missing: the start of an expression statement that
    - does nothing (a name, an attribute, a comparison, a conditional, a constant, a literal: no call, no `await`,
      no docstring) and is the last statement of a function or of a branch in one — pylint's pointless-statement,
      where it ends a body; or
    - is any expression (a call too) where the function ends with it although it returns a value elsewhere or is
      annotated to (not `None`, not a generator) — pylint's inconsistent-return-statements, mypy's missing return.
    Analysis only says where; what goes there is the model's to say (runtime/repair.py). None where the file does
    not compile."""
    if (language or "").lower() != "python" or (a := analyse(prefix + block + suffix)) is None:
        return None
    top, bottom = prefix.count("\n") + 1, (prefix + block).count("\n") + 1   # the block's lines
    for fn in a.nodes:
        if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)) or fn.end_lineno < top or fn.lineno > bottom:
            continue   # (a function around no line of the block holds no site in it)
        bodies, stack = [], [fn]
        while stack:   # the function's bodies and its branches' (not a nested definition's)
            node = stack.pop()
            for field in ("body", "orelse", "finalbody", "handlers"):
                if isinstance(part := getattr(node, field, None), list) and part:
                    bodies.append(part)
                    stack += [s for s in part if not isinstance(s, DEFINITIONS)]
        own = [n for body in bodies for n in body]
        inner = [n for s in own for n in ast.walk(s) if not isinstance(s, DEFINITIONS)]
        returns = fn.returns is not None and not (isinstance(fn.returns, ast.Constant) and fn.returns.value is None)
        returns = (returns or any(isinstance(n, ast.Return) and n.value is not None for n in inner)) and \
            not any(isinstance(n, (ast.Yield, ast.YieldFrom)) for n in inner)
        for last in [body[-1] for body in bodies if body[-1] in _tails(fn.body) or
                     isinstance(getattr(body[-1], "value", None), POINTLESS)]:
            value = getattr(last, "value", None)
            if not isinstance(last, ast.Expr) or (isinstance(value, ast.Constant) and (
                    isinstance(value.value, str) or value.value is ...)):
                continue
            if (isinstance(value, POINTLESS) or (returns and last in _tails(fn.body))) and \
                    0 <= (at := a.offset(last.lineno, last.col_offset) - len(prefix)) < len(block):
                return at
    return None


def _tails(body: list) -> list:
    """The statements a function's body may end its run with: the last one, or the last ones of its branches."""
    last = body[-1]
    if isinstance(last, ast.If):
        return _tails(last.body) + (_tails(last.orelse) if last.orelse else [])
    if isinstance(last, (ast.With, ast.AsyncWith)):
        return _tails(last.body)
    if isinstance(last, ast.Try):
        return _tails(last.orelse or last.body) + [t for h in last.handlers for t in _tails(h.body)]
    return [last]   # a loop's body runs on past its last statement: not a tail


def token_offsets(tok, block: str) -> list[tuple[int, int]] | None:
    """The character range of each of `block`'s tokens (`tok.encode(block)`); None where the tokenizer's own
    encoding differs from it (text that spells a special token)."""
    enc = tok.tok.encode(block, add_special_tokens=False)
    return enc.offsets if enc.ids == tok.encode(block) else None


def token_at(offsets: list[tuple[int, int]] | None, at: int) -> int | None:
    """The index of the token (of `token_offsets`) that holds character `at`."""
    return next((i for i, (s, e) in enumerate(offsets or []) if s <= at < e), None)


def repair_plan(tok, req) -> Plan:
    """What analysis says of `req.existing` before the model repairs it (runtime/repair.py): its code tokens
    (`code_tokens`) and where a `return` seems missing (`pointless_end`)."""
    at = pointless_end(req.prefix, req.existing, req.suffix, req.language)
    return Plan(code=code_tokens(tok, req.existing, req.language),
                insert_at=None if at is None else token_at(token_offsets(tok, req.existing), at))

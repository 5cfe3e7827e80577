"""quicksilver eval nextedits: next edits on the held-out packages' code (evals/edit-files.tsv), of three kinds.

Rename propagation: a case takes a local variable of a function (bound by an assignment, used at least twice more in that function),
renames it where it is first bound — typed one keystroke at a time, as a user does — and asks for the next edit
(runtime/nextedit.py, the language server's light bulb: lsp/edits.py `next_edit`). Right: the proposal renames
exactly the variable's other uses in that function (the function's text equals a full rename done with the
function's own symbol table); harmed: a proposal that changes anything else or misses a use; none: nothing offered.
The same variable renamed into a name the function already has (another of its variables, a parameter, a global
or builtin it reads) must get nothing: right when nothing is offered, harmed when anything is.

A removed parameter: a case takes a module-level function (its name defined once in the file) with a parameter
that calls in the file pass, deletes the parameter from its `def` a keystroke at a time, and asks for the next
edit. Right: the proposed document's syntax tree is the file's with exactly that argument taken out of each call
that passes it by position or keyword (calls that spread `*args` / `**kw` left as they are), judged on the trees,
not the text; harmed: any other proposal.

The same change on other lines: a case takes an attribute of a module-level name or `self` (`log.warn`,
`self.items`) that the file reads on at least three lines (once a line), writes the file as it was before an API
rename (every one of them `log.warn_old`), and makes the rename back on the first, deleting `_old` a keystroke at
a time. Right: the proposal is the file itself; partial: it renames some of the others and nothing else; harmed:
it changes anything else.
"""
from __future__ import annotations

import ast
import json
import symtable
import time
from pathlib import Path

import numpy as np

from evals.edits import parsed_edit_files, spread
from runtime.nextedit import from_history, source_lines

SEED = 0
CASES = 100
MAX_PER_FILE = 3


def cases(n: int = CASES, seed: int = SEED) -> list[dict]:
    found = []
    for package, path, text, tree in parsed_edit_files():
        try:
            table = symtable.symtable(text, str(path), "exec")
        except (SyntaxError, ValueError):
            continue
        tables = {}
        stack = [table]
        while stack:
            t = stack.pop()
            tables.setdefault((t.get_name(), t.get_lineno()), t)
            stack += t.get_children()
        for fn in (f for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))):
            t = tables.get((fn.name, fn.lineno))
            if t is None or t.get_children():   # nested scopes make "every use" harder to judge: left out
                continue
            for sym in t.get_symbols():
                if not (sym.is_local() and sym.is_assigned() and not sym.is_parameter() and not sym.is_global()):
                    continue
                nodes = sorted((n for n in ast.walk(fn) if isinstance(n, ast.Name) and n.id == sym.get_name()),
                               key=lambda n: (n.lineno, n.col_offset))
                if len(nodes) < 3 or not isinstance(nodes[0].ctx, ast.Store) or not nodes[0].id.isascii():
                    continue
                taken = sorted(o.get_name() for o in t.get_symbols() if o.get_name() != sym.get_name() and
                               (o.is_referenced() or o.is_assigned() or o.is_parameter()))
                found.append({"package": package, "file": str(path), "name": sym.get_name(), "text": text,
                              "uses": [(n.lineno, n.col_offset) for n in nodes], "taken": taken})
    return spread(found, n, seed, MAX_PER_FILE)


def removal_cases(n: int = CASES, seed: int = SEED) -> list[dict]:
    found = []
    for package, path, text, tree in parsed_edit_files():
        fns = [f for f in tree.body if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))]
        names = [f.name for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))]
        for fn in fns:
            a = fn.args
            if names.count(fn.name) != 1 or not a.args or a.posonlyargs or a.vararg or \
                    any(x.lineno != fn.lineno for x in a.args + a.kwonlyargs) or \
                    any(d.end_lineno != fn.lineno for d in a.defaults + [d for d in a.kw_defaults if d]):
                continue   # parameters on the `def` line, a name the file defines once
            calls = [c for c in ast.walk(tree) if isinstance(c, ast.Call) and isinstance(c.func, ast.Name)
                     and c.func.id == fn.name]
            for i, param in enumerate(fn.args.args):
                if any(passes(c, param.arg, i) is not None for c in calls) and param.arg.isascii():
                    found.append({"package": package, "file": str(path), "name": fn.name, "param": param.arg,
                                  "index": i, "text": text, "line": fn.lineno})
    return spread(found, n, seed, MAX_PER_FILE)


def passes(call: ast.Call, param: str, index: int) -> ast.AST | None:
    """The argument node of a call that passes the parameter (by keyword, or at its position), None if none does
    or the call spreads arguments."""
    if any(isinstance(a, ast.Starred) for a in call.args) or any(k.arg is None for k in call.keywords):
        return None
    by_keyword = next((k for k in call.keywords if k.arg == param), None)
    return by_keyword or (call.args[index] if index < len(call.args) else None)


def removal_versions(c: dict) -> tuple[list[str], str]:
    """The file as the parameter is deleted from the `def` a keystroke at a time, and the expected tree's dump."""
    lines = source_lines(c["text"])
    header = lines[c["line"] - 1]
    tree = ast.parse(c["text"])
    fn = next(f for f in tree.body if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef)) and f.lineno == c["line"])
    args = fn.args.args
    arg = args[c["index"]]
    nodes = args + fn.args.kwonlyargs   # the parameter's text, with its default and the comma that joins it
    defaults = dict(zip([a.arg for a in args][len(args) - len(fn.args.defaults):], fn.args.defaults))
    end_node = defaults.get(arg.arg, arg)
    b = header.encode()
    start, end = arg.col_offset, end_node.end_col_offset
    if c["index"] + 1 < len(nodes) and nodes[c["index"] + 1].lineno == c["line"]:
        end = nodes[c["index"] + 1].col_offset
    elif c["index"] > 0:
        prev = defaults.get(args[c["index"] - 1].arg, args[c["index"] - 1])
        start = prev.end_col_offset
    gone = b[start:end].decode()
    head, tail = b[:start].decode(), b[end:].decode()
    versions = [head + gone[:k] + tail for k in range(len(gone), -1, -1)]
    texts = ["".join(lines[:c["line"] - 1]) + v + "".join(lines[c["line"]:]) for v in versions]
    expected = ast.parse(texts[-1])
    for call in ast.walk(expected):
        if isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and call.func.id == c["name"]:
            node = passes(call, c["param"], c["index"])
            if node is not None:
                call.keywords = [k for k in call.keywords if k is not node]
                call.args = [a for a in call.args if a is not node]
    return texts, ast.dump(expected)


OLD = "_old"


def repeated_cases(n: int = CASES, seed: int = SEED) -> list[dict]:
    found = []
    for package, path, text, tree in parsed_edit_files():
        at: dict[tuple[str, str], list[tuple[int, int]]] = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.attr.isascii() and \
                    node.lineno == node.end_lineno:
                at.setdefault((node.value.id, node.attr), []).append((node.end_lineno, node.end_col_offset))
        for (obj, attr), ends in at.items():
            lines = [ln for ln, _ in ends]
            if len(ends) >= 3 and len(set(lines)) == len(lines) and attr + OLD not in text:
                found.append({"package": package, "file": str(path), "name": f"{obj}.{attr}", "attr": attr,
                              "text": text, "ends": sorted(ends)})
    return spread(found, n, seed, MAX_PER_FILE)


def repeated_versions(c: dict) -> list[str]:
    """The file before the rename (every use `attr_old`), then `_old` deleted at the first use a keystroke at a
    time: the last version is the file with the first use renamed back."""
    lines = source_lines(c["text"])

    def spelled(first: int) -> str:   # the first use spelled attr + OLD[:first], the others attr + OLD
        out = list(lines)
        for i, (ln, end) in enumerate(c["ends"]):
            b = out[ln - 1].encode()
            out[ln - 1] = (b[:end] + OLD[:first if i == 0 else len(OLD)].encode() + b[end:]).decode()
        return "".join(out)
    return [spelled(k) for k in range(len(OLD), -1, -1)]


def rename_at(text: str, uses: list[tuple[int, int]], old: str, new: str) -> str:
    lines = source_lines(text)
    for line, col in sorted(uses, reverse=True):
        s = lines[line - 1].encode()
        lines[line - 1] = (s[:col] + new.encode() + s[col + len(old.encode()):]).decode()
    return "".join(lines)


def evaluate(n: int = CASES, seed: int = SEED) -> dict:
    rows = []
    for c in removal_cases(n, seed):
        versions, expected = removal_versions(c)
        t0 = time.perf_counter()
        got = from_history(versions[:-1], versions[-1])
        ms = 1000 * (time.perf_counter() - t0)
        try:
            right = got is not None and ast.dump(ast.parse(got.after)) == expected
        except SyntaxError:
            right = False
        rows.append({"kind": "removed parameter", "package": c["package"], "file": c["file"],
                     "name": f"{c['name']}({c['param']})", "ms": ms,
                     "outcome": "none" if got is None else ("right" if right else "harmed")})
    for c in cases(n, seed):
        old, new = c["name"], c["name"] + "_renamed"
        versions = [c["text"]]   # typing the new name over the old one at its binding, a keystroke at a time
        for k in range(len(old) - 1, -1, -1):
            versions.append(rename_at(c["text"], c["uses"][:1], old, old[:k]))
        for k in range(1, len(new) + 1):
            versions.append(rename_at(c["text"], c["uses"][:1], old, new[:k]))
        t0 = time.perf_counter()
        got = from_history(versions[:-1], versions[-1])
        ms = 1000 * (time.perf_counter() - t0)
        expected = rename_at(c["text"], c["uses"], old, new)
        outcome = "none" if got is None else ("right" if got.after == expected else "harmed")
        rows.append({"kind": "rename", "package": c["package"], "file": c["file"], "name": old, "outcome": outcome,
                     "ms": ms, "uses": len(c["uses"])})
        if c["taken"]:   # the same rename into a name the function already has: merging two things, never offered
            taken = c["taken"][0]
            t0 = time.perf_counter()
            got = from_history([c["text"]], rename_at(c["text"], c["uses"][:1], old, taken))
            rows.append({"kind": "rename into a taken name", "package": c["package"], "file": c["file"],
                         "name": f"{old} -> {taken}", "outcome": "right" if got is None else "harmed",
                         "ms": 1000 * (time.perf_counter() - t0)})
    for c in repeated_cases(n, seed):
        versions = repeated_versions(c)
        t0 = time.perf_counter()
        got = from_history(versions[:-1], versions[-1])
        ms = 1000 * (time.perf_counter() - t0)
        rows.append({"kind": "same change elsewhere", "package": c["package"], "file": c["file"], "name": c["name"],
                     "ms": ms, "uses": len(c["ends"]), "outcome": repeated_outcome(c, versions[-1], got)})
    out = {"cases": len(rows), "seed": seed, **summary(rows),
           "kinds": {k: summary([r for r in rows if r["kind"] == k])
                     for k in ("rename", "rename into a taken name", "removed parameter", "same change elsewhere")},
           "rows": rows}
    return out


def repeated_outcome(c: dict, now: str, got) -> str:
    """right: the proposal is the file; partial: each line it changes is the file's line; else harmed."""
    if got is None:
        return "none"
    if got.after == c["text"]:
        return "right"
    real, was, after = source_lines(c["text"]), source_lines(now), source_lines(got.after)
    if len(after) == len(real) and all(a in (r, w) for a, r, w in zip(after, real, was)):
        return "partial"
    return "harmed"


def summary(rows: list[dict]) -> dict:
    return {"cases": len(rows), **{k: sum(r["outcome"] == k for r in rows) / max(1, len(rows))
                                   for k in ("right", "partial", "harmed", "none")},
            "p50_ms": float(np.percentile([r["ms"] for r in rows], 50)) if rows else 0.0}


def add_arguments(p) -> None:
    p.add_argument("--cases", type=int, default=CASES, help="cases of each kind")
    p.add_argument("--seed", type=int, default=SEED, help="which cases")
    p.add_argument("--json", type=Path, help="write the results here")


def run(args) -> None:
    out = evaluate(args.cases, args.seed)
    out["command"] = f"quicksilver eval nextedits --cases {args.cases} --seed {args.seed}" + \
        (f" --json {args.json}" if args.json else "")
    for kind, k in [*out["kinds"].items(), ("all", out)]:
        print(f"{kind:24} {k['cases']:4} cases: right {k['right']:.1%}, partial {k['partial']:.1%}, "
              f"harmed {k['harmed']:.1%}, none {k['none']:.1%}; "
              f"p50 {k['p50_ms']:.0f} ms")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=1) + "\n")

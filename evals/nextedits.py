"""quicksilver eval nextedits: rename propagation on the held-out packages' code (evals/edit-files.tsv).

A case takes a local variable of a function (bound by an assignment, used at least twice more in that function),
renames it where it is first bound — typed one keystroke at a time, as a user does — and asks for the next edit
(runtime/nextedit.py, the language server's light bulb: lsp/edits.py `next_edit`). Right: the proposal renames
exactly the variable's other uses in that function (the function's text equals a full rename done with the
function's own symbol table); harmed: a proposal that changes anything else or misses a use; none: nothing offered.
"""
from __future__ import annotations

import ast
import json
import symtable
import time
from pathlib import Path

import numpy as np

from evals.edits import edit_files
from runtime.nextedit import from_history

SEED = 0
CASES = 100
MAX_PER_FILE = 3


def cases(n: int = CASES, seed: int = SEED) -> list[dict]:
    found = []
    for package, path in edit_files():
        try:
            text = path.read_text()
            tree = ast.parse(text)
            table = symtable.symtable(text, str(path), "exec")
        except (SyntaxError, UnicodeDecodeError, ValueError, OSError):
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
                found.append({"package": package, "file": str(path), "name": sym.get_name(), "text": text,
                              "uses": [(n.lineno, n.col_offset) for n in nodes]})
    rng = np.random.default_rng(seed)
    out, per_file = [], {}
    for i in rng.permutation(len(found)):
        c = found[i]
        if per_file.get(c["file"], 0) < MAX_PER_FILE:
            per_file[c["file"]] = per_file.get(c["file"], 0) + 1
            out.append(c)
        if len(out) == n:
            break
    return out


def rename_at(text: str, uses: list[tuple[int, int]], old: str, new: str) -> str:
    lines = text.splitlines(keepends=True)
    for line, col in sorted(uses, reverse=True):
        s = lines[line - 1].encode()
        lines[line - 1] = (s[:col] + new.encode() + s[col + len(old.encode()):]).decode()
    return "".join(lines)


def evaluate(n: int = CASES, seed: int = SEED) -> dict:
    rows = []
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
        outcome = "none" if got is None else ("right" if got[1] == expected else "harmed")
        rows.append({"package": c["package"], "file": c["file"], "name": old, "outcome": outcome, "ms": ms,
                     "uses": len(c["uses"])})
    out = {"cases": len(rows), "seed": seed, **{k: sum(r["outcome"] == k for r in rows) / max(1, len(rows))
                                                 for k in ("right", "harmed", "none")},
           "p50_ms": float(np.percentile([r["ms"] for r in rows], 50)) if rows else 0.0, "rows": rows}
    return out


def add_arguments(p) -> None:
    p.add_argument("--cases", type=int, default=CASES, help="renames")
    p.add_argument("--seed", type=int, default=SEED, help="which cases")
    p.add_argument("--json", type=Path, help="write the results here")


def run(args) -> None:
    out = evaluate(args.cases, args.seed)
    out["command"] = f"quicksilver eval nextedits --cases {args.cases} --seed {args.seed}" + \
        (f" --json {args.json}" if args.json else "")
    print(f"{out['cases']} renames: right {out['right']:.1%}, harmed {out['harmed']:.1%}, none {out['none']:.1%}; "
          f"p50 {out['p50_ms']:.0f} ms")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=1) + "\n")

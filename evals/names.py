"""quicksilver eval names: member-access cursors (`module.▮`, `self.▮`) and import cursors (`from pkg.mod import ▮`)
in packages the model never trained on, asked through /v1/completions as an OpenAI client asks, with the analysis
of names on and off.

A member cursor sits right after the dot of an attribute read in a function body, on a one-line statement of a
module of the frozen held-out packages (evals/edit-files.tsv; never in a training corpus); an import cursor right
after `import ` of a one-line `from … import` at a module's top level, the first imported name expected. The names that exist there are
what jedi completes at the cursor with no time limit (the analyzer's own word: a cursor it cannot judge — an
unknown object, `__getattr__` — is left out of the invented rate). Measured per way: how often the answer's first
name does not exist (invented), how often it is the file's own name (right), how often an invented name would be
shown to an editor (confidence at the editors' floor), and latency.
"""
from __future__ import annotations

import ast
import json
import re
import time
from pathlib import Path

import numpy as np

from evals.edits import parsed_edit_files

SEED = 0
CURSORS = 160
MAX_PER_FILE = 3
MAX_TOKENS = 32
NAME = re.compile(r"\w*")


KINDS = ("self", "other", "import", "keyword")


def member_cursors(n: int = CURSORS, seed: int = SEED) -> list[dict]:
    """A quarter each of `self.` cursors, `name.` cursors (a module or another object), `from … import` cursors and
    keyword-argument cursors (`f(x, key=1, ▮other=2)`: after another keyword, where only a keyword may stand), at
    most MAX_PER_FILE of a kind a file."""
    by_kind: dict[str, list[dict]] = {k: [] for k in KINDS}
    for package, path, text, tree in parsed_edit_files():
        lines = text.split("\n")
        for stmt in tree.body:
            if isinstance(stmt, ast.ImportFrom) and stmt.module and not stmt.level and stmt.lineno == stmt.end_lineno:
                line = lines[stmt.lineno - 1]
                at = line.find(" import ") + len(" import ")
                if line.startswith("from ") and line[at:].startswith(stmt.names[0].name) and stmt.names[0].name != "*":
                    by_kind["import"].append({
                        "package": package, "file": str(path), "line": stmt.lineno, "attr": stmt.names[0].name,
                        "prefix": "\n".join(lines[:stmt.lineno - 1] + [line[:at]]),
                        "suffix": "\n" + "\n".join(lines[stmt.lineno:]), "expected": line[at:]})
        for call in (n for n in ast.walk(tree) if isinstance(n, ast.Call) and n.lineno == n.end_lineno):
            for before, kw in zip(call.keywords, call.keywords[1:]):
                line = lines[kw.lineno - 1]
                if before.arg and kw.arg and line[kw.col_offset:].startswith(kw.arg + "="):
                    by_kind["keyword"].append({
                        "package": package, "file": str(path), "line": kw.lineno, "attr": kw.arg,
                        "prefix": "\n".join(lines[:kw.lineno - 1] + [line[:kw.col_offset]]),
                        "suffix": "\n" + "\n".join(lines[kw.lineno:]), "expected": line[kw.col_offset:]})
        for fn in (f for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))):
            for stmt in fn.body:
                if stmt.lineno != stmt.end_lineno:
                    continue
                for node in ast.walk(stmt):
                    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and \
                            node.end_lineno == node.lineno:
                        line = lines[node.lineno - 1]
                        dot = node.value.end_col_offset   # the cursor goes right after the dot
                        if line[dot:dot + 1] != "." or not line[dot + 1:].startswith(node.attr):
                            continue
                        by_kind["self" if node.value.id == "self" else "other"].append({
                            "package": package, "file": str(path), "line": node.lineno, "attr": node.attr,
                            "prefix": "\n".join(lines[:node.lineno - 1] + [line[:dot + 1]]),
                            "suffix": "\n" + "\n".join(lines[node.lineno:]), "expected": line[dot + 1:]})
    rng = np.random.default_rng(seed)
    out = []
    for kind, found in by_kind.items():
        per_file: dict[str, int] = {}
        for i in rng.permutation(len(found)):
            c = found[i]
            if per_file.get(c["file"], 0) < MAX_PER_FILE and sum(o["kind"] == kind for o in out) < n // len(KINDS):
                per_file[c["file"]] = per_file.get(c["file"], 0) + 1
                out.append({**c, "kind": kind})
    return out


def ask(http, c: dict) -> dict:
    t0 = time.perf_counter()
    r = http.post("/v1/completions", json={"prompt": c["prefix"][-6000:], "suffix": c["suffix"][:6000],
                                           "max_tokens": MAX_TOKENS, "temperature": 0})
    r.raise_for_status()
    choice = r.json()["choices"][0]
    return {"text": choice["text"], "ms": 1000 * (time.perf_counter() - t0), **{
        k: choice["quicksilver"][k] for k in ("confidence", "calibrated", "names", "forward_passes")}}


def evaluate(model_dir: Path | None, n: int = CURSORS, seed: int = SEED) -> dict:
    import httpx

    from evals.editor import local_server
    from runtime.engine import Engine
    from runtime.names import _kept as kept
    from runtime.names import existing_names, names_one
    from runtime.request import EDITOR_MIN_CONFIDENCE, UNCALIBRATED_MIN_CONFIDENCE
    points = member_cursors(n, seed)
    judged = [existing_names(c["prefix"][-6000:], c["suffix"][:6000], budget_s=600) for c in points]
    rows = []
    srv, base = local_server(model_dir)
    try:
        with httpx.Client(base_url=base, timeout=120) as http:
            for names in (False, True):
                Engine.names = names
                kept.clear()   # each request analyses its cursor itself (jedi keeps the modules it loaded)
                if (answers := srv.config.app.state.engine.answers) is not None:
                    answers.clear()   # and is decoded: an answer kept from the other way would be typed through
                for i, (c, exist) in enumerate(zip(points, judged)):
                    row = ask(http, c)
                    first = NAME.match(row["text"]).group(0)
                    floor = EDITOR_MIN_CONFIDENCE if row["calibrated"] else UNCALIBRATED_MIN_CONFIDENCE
                    known = isinstance(exist, tuple)
                    row.update(analysis="on" if names else "off", cursor=i, kind=c["kind"], first=first,
                               judged=known, invented=known and bool(first) and not names_one(first, exist[1]),
                               right=first == c["attr"], shown=bool(row["text"].strip()) and row["confidence"] >= floor)
                    rows.append(row)
    finally:
        Engine.names = True
        srv.should_exit = True
    out = {"cursors": len(points), "seed": seed, "judged": int(sum(isinstance(j, tuple) for j in judged)),
           "kinds": {k: sum(c["kind"] == k for c in points) for k in KINDS}, "analysis": {}}
    for way in ("off", "on"):
        out["analysis"][way] = summary([r for r in rows if r["analysis"] == way])
        out["analysis"][way]["kinds"] = {k: summary([r for r in rows if r["analysis"] == way and r["kind"] == k])
                                         for k in KINDS}
    out["rows"] = rows
    return out


def summary(these: list[dict]) -> dict:
    judged_rows = [r for r in these if r["judged"] and r["first"]]
    return {"invented": float(np.mean([r["invented"] for r in judged_rows])) if judged_rows else 0.0,
            "judged": len(judged_rows),
            "invented_shown": sum(r["invented"] and r["shown"] for r in these),
            "right": float(np.mean([r["right"] for r in these])) if these else 0.0,
            "shown": float(np.mean([r["shown"] for r in these])) if these else 0.0,
            "shown_right": float(np.mean([r["right"] for r in these if r["shown"]])) if any(r["shown"] for r in these)
            else 0.0,
            "timeouts": sum(r["names"] == "timeout" for r in these),
            "p50_ms": float(np.percentile([r["ms"] for r in these], 50)) if these else 0.0}


def add_arguments(p) -> None:
    p.add_argument("--model", type=Path, help="model directory (default: the shipped model)")
    p.add_argument("--cursors", type=int, default=CURSORS, help="cursors, a quarter of each kind")
    p.add_argument("--seed", type=int, default=SEED, help="which cursors")
    p.add_argument("--json", type=Path, help="write the results here")


def run(args) -> None:
    out = evaluate(args.model, args.cursors, args.seed)
    out["command"] = f"quicksilver eval names --cursors {args.cursors} --seed {args.seed}" + \
        (f" --json {args.json}" if args.json else "")
    print(f"{out['cursors']} cursors ({out['kinds']}), {out['judged']} judged by analysis")
    for way, m in out["analysis"].items():
        for kind, k in [*m["kinds"].items(), ("all", m)]:
            print(f"analysis {way:3} {kind:6}  invented {k['invented']:.1%} (shown {k['invented_shown']})  "
                  f"right {k['right']:.1%}  shown {k['shown']:.1%} at {k['shown_right']:.1%}  timeouts {k['timeouts']}  "
                  f"p50 {k['p50_ms']:.0f} ms")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=1) + "\n")

"""quicksilver eval edits: planted bugs repaired through the server as clients ask. One bug of six kinds (a misspelled
local, a wrong variable, a flipped operator, an off-by-one, a missing `return`, a misspelled attribute) is planted
into a function of at most 25 lines of a package the model never trained on (edit-files.tsv: its header says
which and why), and the function is sent to a real server on 127.0.0.1 exactly as a client sends it: a websocket
session (docs/sessions.md) opened on the buggy file, then `repair` over the function's whole lines.

Each case is judged on what the server returns, nothing else: fixed (the function as it was before the bug),
harmed (any other change offered, or a file that no longer compiles), refused (nothing offered: an error, or the
function given back unchanged), and latency. Each row also says what runtime/verify.py would say of the offered
edit (`verdict`), so the harm a verifier would stop is visible before it is wired in.
"""
from __future__ import annotations

import ast
import builtins
import hashlib
import json
import keyword
import re
import sys
import sysconfig
import time
import warnings
from collections import Counter
from pathlib import Path

import numpy as np

KINDS = ("misspelled-local", "wrong-variable", "flipped-operator", "off-by-one", "missing-return",
         "misspelled-attribute")
SEED = 0
PER_KIND = 10
MAX_LINES = 25                    # functions of at most this many lines, the `def` line to the last
MIN_NAME = 3                      # names and attributes shorter than this are not misspelled
EDIT_FILES = Path(__file__).with_name("edit-files.tsv")   # the frozen files bugs are planted in
PACKAGES = tuple(l.strip() for l in Path(__file__).with_name("heldout-packages.txt").read_text().splitlines()
                 if l.strip() and not l.startswith("#"))   # the held-out packages (evals/heldout-packages.txt)
TIMEOUT_S = 120
BINOPS = {ast.Add: ("+", "-"), ast.Sub: ("-", "+"), ast.Mult: ("*", "/"), ast.Div: ("/", "*"),
          ast.FloorDiv: ("//", "/"), ast.BitAnd: ("&", "|"), ast.BitOr: ("|", "&"), ast.LShift: ("<<", ">>"),
          ast.RShift: (">>", "<<")}
COMPARE = {ast.Lt: ("<", "<="), ast.LtE: ("<=", "<"), ast.Gt: (">", ">="), ast.GtE: (">=", ">"),
           ast.Eq: ("==", "!="), ast.NotEq: ("!=", "=="), ast.In: ("in", "not in"), ast.NotIn: ("not in", "in"),
           ast.Is: ("is", "is not"), ast.IsNot: ("is not", "is")}
BOOLEAN = {ast.And: ("and", "or"), ast.Or: ("or", "and")}
LANGUAGE = "python"
NOT_NAMES = {"self", "cls"}


# --- the files --------------------------------------------------------------------------------------------
def edit_files() -> list[tuple[str, Path]]:
    """(package, path) of the frozen files that this machine has with the same content, in the list's order."""
    root = Path(sysconfig.get_paths()["purelib"])
    out = []
    for line in EDIT_FILES.read_text().splitlines():
        if line and not line.startswith("#"):
            package, rel, digest = line.split("\t")
            path = root / rel
            if path.is_file() and hashlib.sha1(path.read_bytes()).hexdigest() == digest:
                out.append((package, path))
    return out


def parsed_edit_files():
    """(package, path, text, tree) of each frozen file that parses."""
    for package, path in edit_files():
        try:
            text = path.read_text()
            yield package, path, text, ast.parse(text)
        except (SyntaxError, UnicodeDecodeError, ValueError, OSError):
            continue


def spread(found: list[dict], n: int, seed: int, most: int) -> list[dict]:
    """n of the found cases in a seeded random order, at most `most` of them from one file."""
    rng = np.random.default_rng(seed)
    out, per_file = [], {}
    for i in rng.permutation(len(found)):
        c = found[i]
        if per_file.get(c["file"], 0) < most:
            per_file[c["file"]] = per_file.get(c["file"], 0) + 1
            out.append(c)
        if len(out) == n:
            break
    return out


def freeze(packages: tuple[str, ...] = PACKAGES) -> list[str]:
    """The list's lines for the installed packages (tests left out): package, path under site-packages, sha1."""
    root = Path(sysconfig.get_paths()["purelib"])
    lines = []
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            if not any(p in ("test", "tests") for p in path.relative_to(root).parts):
                lines.append(f"{package}\t{path.relative_to(root)}\t{hashlib.sha1(path.read_bytes()).hexdigest()}")
    return lines


def functions(package: str, name: str, text: str) -> list[dict]:
    """The functions of at most MAX_LINES lines of a file that compiles, each as whole lines of the file."""
    if not compiles(text):
        return []
    tree = ast.parse(text)
    starts = line_starts(text)
    out = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno < MAX_LINES:
            start = starts[node.lineno - 1]
            end = starts[node.end_lineno] if node.end_lineno < len(starts) else len(text)
            out.append({"package": package, "file": name, "text": text, "starts": starts, "node": node,
                        "start": start, "end": end, "name": node.name, "line": node.lineno})
    return out


def compiles(text: str) -> bool:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            compile(text, "<edit>", "exec", dont_inherit=True)
        return True
    except (SyntaxError, ValueError):
        return False


def line_starts(text: str) -> list[int]:
    out, at = [], 0
    for line in text.split("\n"):
        out.append(at)
        at += len(line) + 1
    return out


# --- planting ---------------------------------------------------------------------------------------------
def offset(text: str, starts: list[int], lineno: int, col: int) -> int:
    """A character offset from ast's line (1-based) and column (UTF-8 bytes)."""
    line = text[starts[lineno - 1]:starts[lineno] if lineno < len(starts) else len(text)]
    return starts[lineno - 1] + len(line.encode("utf-8")[:col].decode("utf-8", "ignore"))


def span(fn: dict, node: ast.AST) -> tuple[int, int]:
    return (offset(fn["text"], fn["starts"], node.lineno, node.col_offset),
            offset(fn["text"], fn["starts"], node.end_lineno, node.end_col_offset))


def body_nodes(fn: dict) -> list[ast.AST]:
    """The nodes of the function's body (no decorators, defaults or docstring), with `parent` set."""
    body = fn["node"].body
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) and \
            isinstance(body[0].value.value, str):
        body = body[1:]
    out = []
    for stmt in body:
        for node in ast.walk(stmt):
            for child in ast.iter_child_nodes(node):
                child.parent = node
            out.append(node)
    return out


def local_names(fn: dict) -> dict[str, int]:
    """The function's parameters and assigned names, each with the line it is first bound on."""
    a = fn["node"].args
    out = {p.arg: fn["line"] for p in a.posonlyargs + a.args + a.kwonlyargs + [a.vararg, a.kwarg] if p}
    for node in body_nodes(fn):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            out.setdefault(node.id, node.lineno)
    return {k: v for k, v in out.items() if k not in NOT_NAMES}


def misspell(name: str, rng: np.random.Generator, taken: set[str]) -> str | None:
    """A typo of `name` (a letter dropped, doubled, two swapped, or a vowel changed) that names nothing in `taken`;
    None for a dunder name."""
    if name.startswith("__") and name.endswith("__"):
        return None
    for _ in range(20):
        i = int(rng.integers(1, len(name)))
        op = int(rng.integers(4))
        if op == 0:
            new = name[:i] + name[i + 1:]
        elif op == 1:
            new = name[:i] + name[i] + name[i:]
        elif op == 2 and i + 1 < len(name):
            new = name[:i] + name[i + 1] + name[i] + name[i + 2:]
        elif op == 3 and name[i] in "aeiou":
            new = name[:i] + "aeiou"[("aeiou".index(name[i]) + 1 + int(rng.integers(4))) % 5] + name[i + 1:]
        else:
            continue
        if new != name and new.isidentifier() and not keyword.iskeyword(new) and new not in taken:
            return new
    return None


def operator_at(fn: dict, left: ast.AST, right: ast.AST, pattern: str) -> tuple[int, int] | None:
    """Where the operator matching `pattern` sits between two operands (nothing else there but brackets)."""
    s, e = span(fn, left)[1], span(fn, right)[0]
    between = fn["text"][s:e]
    found = list(re.finditer(rf"(?<![\w=<>!*/&|+-]){pattern}(?![\w=<>*/&|])", between))
    if len(found) != 1 or re.sub(r"[\s()\\]", "", between[:found[0].start()] + between[found[0].end():]):
        return None
    return s + found[0].start(), s + found[0].end()


def sites(kind: str, fn: dict, rng: np.random.Generator) -> list[tuple[int, int, str]]:
    """Where a bug of `kind` can go in the function: (start, end, replacement) in the file."""
    text, nodes, names = fn["text"], body_nodes(fn), local_names(fn)
    taken = set(re.findall(r"\w+", text)) | set(dir(builtins))
    out = []
    for node in nodes:
        if kind in ("misspelled-local", "wrong-variable") and isinstance(node, ast.Name) and \
                isinstance(node.ctx, ast.Load) and node.id in names:
            if kind == "misspelled-local" and len(node.id) >= MIN_NAME and (new := misspell(node.id, rng, taken)):
                out.append((*span(fn, node), new))
            if kind == "wrong-variable":
                others = sorted(n for n, line in names.items() if n != node.id and line <= node.lineno)
                if others:
                    out.append((*span(fn, node), others[int(rng.integers(len(others)))]))
        elif kind == "misspelled-attribute" and isinstance(node, ast.Attribute) and \
                isinstance(node.ctx, ast.Load) and len(node.attr) >= MIN_NAME:
            e = span(fn, node)[1]
            if text[e - len(node.attr):e] == node.attr and (new := misspell(node.attr, rng, taken)):
                out.append((e - len(node.attr), e, new))
        elif kind == "flipped-operator":
            out += flips(fn, node)
        elif kind == "off-by-one":
            out += off_by_one(fn, node, rng)
        elif kind == "missing-return" and isinstance(node, ast.Return) and node.value is not None:
            s, v = span(fn, node)[0], span(fn, node.value)[0]
            if re.fullmatch(r"return\s+", text[s:v]):     # not `return (...)`: its bracket would stay
                out.append((s, v, ""))
    return out


def flips(fn: dict, node: ast.AST) -> list[tuple[int, int, str]]:
    """The operator of a binary operation, augmented assignment, comparison or boolean operation, flipped."""
    if isinstance(node, ast.BinOp) and type(node.op) in BINOPS:
        left, right, (was, now) = node.left, node.right, BINOPS[type(node.op)]
    elif isinstance(node, ast.AugAssign) and type(node.op) in BINOPS:
        left, right, (was, now) = node.target, node.value, (x + "=" for x in BINOPS[type(node.op)])
    elif isinstance(node, ast.Compare) and type(node.ops[0]) in COMPARE:
        left, right, (was, now) = node.left, node.comparators[0], COMPARE[type(node.ops[0])]
    elif isinstance(node, ast.BoolOp):
        left, right, (was, now) = node.values[0], node.values[1], BOOLEAN[type(node.op)]
    else:
        return []
    at = operator_at(fn, left, right, r"\s+".join(re.escape(w) for w in was.split()))
    return [] if at is None else [(*at, now)]


def off_by_one(fn: dict, node: ast.AST, rng: np.random.Generator) -> list[tuple[int, int, str]]:
    text = fn["text"]
    if isinstance(node, ast.Constant) and type(node.value) is int and 0 <= node.value < 1000:
        s, e = span(fn, node)
        if text[s:e] != str(node.value):
            return []
        negative = isinstance(getattr(node, "parent", None), ast.UnaryOp)
        step = 1 if negative or node.value == 0 or rng.random() < 0.5 else -1
        return [(s, e, str(node.value + step))]
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "len" and \
            not isinstance(getattr(node, "parent", None), ast.Attribute):
        s, e = span(fn, node)
        wrap = isinstance(getattr(node, "parent", None), (ast.BinOp, ast.UnaryOp))
        new = f"{text[s:e]} - 1"
        return [(s, e, f"({new})" if wrap else new)]
    return []


def plant(kind: str, fn: dict, rng: np.random.Generator) -> dict | None:
    """One bug of `kind` in the function: the case (buggy file, the function's range in it), or None."""
    found = sites(kind, fn, rng)
    if not found:
        return None
    s, e, new = found[int(rng.integers(len(found)))]
    text = fn["text"]
    buggy = text[:s] + new + text[e:]
    start, end = fn["start"], fn["end"] + len(new) - (e - s)
    if not compiles(buggy) or buggy[start:end] == text[fn["start"]:fn["end"]]:
        return None
    return {"kind": kind, "package": fn["package"], "file": fn["file"], "function": fn["name"], "line": fn["line"],
            "original": text[fn["start"]:fn["end"]], "buggy_file": buggy, "start": start, "end": end}


def cases(files: list[tuple[str, str, str]], per_kind: int, seed: int = SEED) -> list[dict]:
    """`per_kind` cases of each kind, from (package, name, text) files: a package drawn uniformly, then one of its
    functions, then a site of the kind in it; never the same function twice for one kind. Interleaved by kind."""
    rng = np.random.default_rng(seed)
    by_package: dict[str, list[dict]] = {}
    for package, name, text in files:
        by_package.setdefault(package, []).extend(functions(package, name, text))
    packages = sorted(p for p, fns in by_package.items() if fns)
    out = {k: [] for k in KINDS}
    for kind in KINDS:
        used = set()
        for _ in range(per_kind * 100):
            if len(out[kind]) >= per_kind or not packages:
                break
            fns = by_package[packages[int(rng.integers(len(packages)))]]
            fn = fns[int(rng.integers(len(fns)))]
            if (fn["file"], fn["line"]) in used:
                continue
            if (case := plant(kind, fn, rng)) is not None:
                used.add((fn["file"], fn["line"]))
                out[kind].append(case)
    return [c for i in range(per_kind) for k in KINDS if i < len(out[k]) for c in [out[k][i]]]


# --- asking the server ------------------------------------------------------------------------------------
def ask(ws, case: dict, i: int) -> tuple[str | None, str | None, float]:
    """(the text offered, or None; the server's message when nothing is; ms): a session opened on the buggy file,
    then `repair` over the function."""
    ws.send(json.dumps({"type": "open", "document": {"text": case["buggy_file"], "language": LANGUAGE}}))
    opened = json.loads(ws.recv(timeout=TIMEOUT_S))
    if opened.get("type") != "opened":
        raise RuntimeError(f"the server did not open a session: {opened}")
    rid = f"edit-{i}"
    t0 = time.perf_counter()
    ws.send(json.dumps({"type": "repair", "request_id": rid, "range": {"start": case["start"], "end": case["end"]}}))
    while True:
        msg = json.loads(ws.recv(timeout=TIMEOUT_S))
        if msg.get("request_id") != rid or msg["type"] not in ("result", "error", "cancelled"):
            continue
        ms = 1000 * (time.perf_counter() - t0)
        if msg["type"] == "result":
            return msg["text"], None, ms
        return None, msg.get("message", msg["type"]), ms


def judge(case: dict, text: str | None, message: str | None) -> dict:
    """fixed / harmed / refused for what the server returned, and what runtime/verify.py says of it."""
    from runtime.verify import check_edit, describe
    buggy_file, s, e = case["buggy_file"], case["start"], case["end"]
    buggy = buggy_file[s:e]
    if text is None:
        return {"outcome": "refused", "why": message}
    after = buggy_file[:s] + text + buggy_file[e:]
    parses = compiles(after)
    if text.rstrip() == case["original"].rstrip() and parses:
        outcome = "fixed"
    elif text.rstrip() == buggy.rstrip() and parses:
        outcome = "refused"
    else:
        outcome = "harmed"
    v = check_edit(buggy_file[:s], buggy, text, buggy_file[e:], LANGUAGE, "repair")
    return {"outcome": outcome, "why": None if outcome != "refused" else "nothing changed", "parses": parses,
            "offered": describe(buggy, text), "text": text, "verdict": v.why or "offered"}


def summarise(rows: list[dict]) -> dict:
    ms = np.array([r["ms"] for r in rows]) if rows else np.zeros(1)
    n = max(1, len(rows))
    counts = {o: sum(r["outcome"] == o for r in rows) for o in ("fixed", "harmed", "refused")}
    harmed = [r for r in rows if r["outcome"] == "harmed"]
    return {"cases": len(rows), **counts, **{f"{o}_rate": c / n for o, c in counts.items()},
            "harmed_unparsable": sum(not r["parses"] for r in harmed),
            "harmed_the_verifier_refuses": sum(r["verdict"] != "offered" for r in harmed),
            "fixed_the_verifier_refuses": sum(r["verdict"] != "offered" for r in rows if r["outcome"] == "fixed"),
            "refused_because": dict(Counter(re.sub(r"\d+", "N", r["why"]) for r in rows
                                            if r["outcome"] == "refused").most_common()),
            "p50_ms": float(np.percentile(ms, 50)), "p95_ms": float(np.percentile(ms, 95))}


def evaluate(model_dir: Path | None, per_kind: int, limit: int | None = None, url: str | None = None,
             seed: int = SEED) -> dict:
    import httpx
    from websockets.sync.client import connect

    from evals.editor import local_server
    listed = edit_files()
    files = [(package, str(path.relative_to(sysconfig.get_paths()["purelib"])), path.read_text())
             for package, path in listed]
    todo = cases(files, per_kind, seed)[:limit]
    srv = None
    if url is None:   # a real server of our own on a free loopback port
        srv, url = local_server(model_dir)
    rows = []
    try:
        model = httpx.get(url + "/v1/models", timeout=TIMEOUT_S).json()["data"][0]["id"]
        with connect(url.replace("http", "ws", 1) + "/v1/sessions", max_size=None) as ws:
            for i, case in enumerate(todo):
                text, message, ms = ask(ws, case, i)
                rows.append({k: case[k] for k in ("kind", "package", "file", "function", "line")} |
                            {"bug": describe_bug(case), "ms": ms} | judge(case, text, message))
                print(f"{i + 1}/{len(todo)} {case['kind']:20s} {rows[-1]['outcome']:8s} {ms:6.0f} ms  "
                      f"{case['file']}:{case['line']}", file=sys.stderr)
    finally:
        if srv is not None:
            srv.should_exit = True
    return {"set": "edits", "model": model, "seed": seed, "per_kind": per_kind, "packages": list(PACKAGES),
            "files_listed": sum(not l.startswith("#") for l in EDIT_FILES.read_text().splitlines()),
            "files_here": len(listed),
            "totals": summarise(rows), "kinds": {k: summarise([r for r in rows if r["kind"] == k]) for k in KINDS},
            "rows": rows}


def describe_bug(case: dict) -> str:
    from runtime.verify import describe
    return describe(case["original"], case["buggy_file"][case["start"]:case["end"]])


def add_arguments(p) -> None:
    p.add_argument("--model", type=Path, help="model directory (default: the shipped model)")
    p.add_argument("--url", help="a running server to ask instead of starting one (e.g. http://127.0.0.1:8000)")
    p.add_argument("--per-kind", type=int, default=PER_KIND, help="cases of each of the six kinds of bug")
    p.add_argument("--limit", type=int, help="ask only the first N cases (kinds interleaved)")
    p.add_argument("--seed", type=int, default=SEED, help="which functions and sites (the committed results: 0)")
    p.add_argument("--json", type=Path, help="write the results (with every case) here")
    p.add_argument("--freeze", action="store_true",
                   help=f"write {EDIT_FILES.name} from the installed packages ({', '.join(PACKAGES)}) and stop")


def run(args) -> None:
    if args.freeze:
        header = [l for l in EDIT_FILES.read_text().splitlines() if l.startswith("#")] if EDIT_FILES.exists() else []
        EDIT_FILES.write_text("\n".join(header + freeze()) + "\n")
        print(f"wrote {EDIT_FILES}")
        return
    out = evaluate(args.model, args.per_kind, args.limit, args.url, args.seed)
    out["command"] = "quicksilver eval edits " + " ".join(
        f"--{k.replace('_', '-')} {v}" for k, v in (("per_kind", args.per_kind), ("limit", args.limit),
                                                    ("seed", args.seed), ("json", args.json)) if v is not None)
    if args.json:
        args.json.write_text(json.dumps(out, indent=1) + "\n")
    for name, s in [("all", out["totals"])] + list(out["kinds"].items()):
        print(f"{name:22s} {s['cases']:3d} cases  fixed {s['fixed']:3d}  harmed {s['harmed']:3d} "
              f"({s['harmed_unparsable']} unparsable, {s['harmed_the_verifier_refuses']} the verifier refuses)  "
              f"refused {s['refused']:3d}  p50 {s['p50_ms']:.0f} ms  p95 {s['p95_ms']:.0f} ms")

"""quicksilver eval repo: cross-file cursors in packages the model never trained on, asked through a running server
as llama.vim asks `/infill` — with the chunks of other files it would send in `input_extra`, and without.

A cursor sits in a function of one module right before a name that module imports from another module of the same
package (CrossCodeEval's construction: the line cannot be completed from its own file alone). The chunks are
llama.vim's: CHUNK_LINES-line pieces of other files of the package, the defining module's piece around the name's
definition and the CHUNKS - 1 pieces most like the lines before the cursor (Jaccard similarity of their
identifiers, as llama.vim and RepoCoder rank). The packages are the frozen held-out set of `quicksilver eval
edits` (evals/edit-files.tsv: installed after the shipped model was trained; never in a training corpus).

Measured per way of asking: exact first line (the answer's first line is the rest of the file's line), identifier
match (the answer starts with the imported name), shown (confidence at the editors' floor) and the precision of
what is shown, the tokens the model read (`tokens_evaluated`: whether the chunks reached it), latency.
"""
from __future__ import annotations

import ast
import json
import re
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from evals.edits import edit_files, spread

SEED = 0
CURSORS = 150
CHUNK_LINES = 64                  # llama.vim's chunk size (g:llama_config.ring_chunk_size)
CHUNKS = 4                        # chunks sent with each request: the defining one and the most similar others
MAX_PER_FILE = 4                  # cursors drawn from one module at most
IDENT = re.compile(r"[A-Za-z_]\w*")
ASKED = ("without", "with chunks", "completions", "workspace")   # /infill bare, /infill with llama.vim's chunks,
                                  # /v1/completions bare, /v1/completions against `serve --workspace`
OPENAI_MAX_TOKENS = 32            # what an OpenAI client asks for a tab completion


def modules(files: list[tuple[str, Path]]) -> dict[str, tuple[str, Path, str]]:
    """dotted module name → (package, path, text) for the frozen files that parse."""
    out = {}
    for package, path in files:
        parts = list(path.with_suffix("").parts)
        top = parts.index(package) if package in parts else len(parts) - 1
        dotted = ".".join(parts[top:])
        if dotted.endswith(".__init__"):
            dotted = dotted[: -len(".__init__")]
        try:
            text = path.read_text()
            ast.parse(text)
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        out[dotted] = (package, path, text)
    return out


def imported_names(tree: ast.Module, dotted: str, is_package: bool, known: dict) -> dict[str, str]:
    """Names this module imports from other modules of its package: name → the defining module's dotted name."""
    out = {}
    for node in tree.body:
        if not isinstance(node, ast.ImportFrom):
            continue
        if node.level:
            base = dotted.split(".") if is_package else dotted.split(".")[:-1]
            base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
            source = ".".join(base + ([node.module] if node.module else []))
        else:
            source = node.module or ""
        if source not in known or source == dotted:
            continue
        for alias in node.names:
            if alias.name != "*" and alias.asname is None:
                out[alias.name] = source
    return out


def definition_line(text: str, name: str) -> int | None:
    """The 0-based line where a module defines `name` at its top level (def, class or assignment)."""
    for node in ast.parse(text).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.name == name:
            return node.lineno - 1
        if isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Name) and t.id == name for t in targets):
                return node.lineno - 1
    return None


def cross_file_cursors(n: int = CURSORS, seed: int = SEED) -> list[dict]:
    """Cursors before a name imported from another module of the package, in function bodies, on one-line
    statements; at most MAX_PER_FILE a module, drawn with `seed`."""
    known = modules(edit_files())
    candidates = []
    for dotted, (package, path, text) in known.items():
        tree = ast.parse(text)
        names = imported_names(tree, dotted, path.name == "__init__.py", known)
        names = {k: v for k, v in names.items() if definition_line(known[v][2], k) is not None}
        if not names:
            continue
        lines, sites = text.split("\n"), []
        for fn in (f for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))):
            for stmt in fn.body:
                if stmt.lineno != stmt.end_lineno:
                    continue
                for node in ast.walk(stmt):
                    if isinstance(node, ast.Name) and node.id in names and isinstance(node.ctx, ast.Load):
                        sites.append((node.lineno - 1, node.col_offset, node.id))
        for line, col, name in sorted(set(sites))[:50]:
            before = "\n".join(lines[:line]) + "\n" + lines[line][:col]
            candidates.append({"package": package, "module": dotted, "file": str(path), "name": name,
                               "source": names[name], "line": line + 1, "prefix": before,
                               "suffix": "\n" + "\n".join(lines[line + 1:]), "expected": lines[line][col:]})
    out = spread(candidates, n, seed, MAX_PER_FILE)
    for c in out:
        c["chunks"] = chunks_for(c, known)
    return out


def idents(text: str) -> set[str]:
    return set(IDENT.findall(text))


def chunks_for(c: dict, known: dict) -> list[dict]:
    """llama.vim's input_extra for the cursor, oldest first (it sends its ring buffer so; the server puts the last
    nearest the file): the most similar other chunks, then the defining module's chunk around the definition."""
    text = known[c["source"]][2]
    at = definition_line(text, c["name"])
    lines = text.split("\n")
    start = max(0, at - CHUNK_LINES // 8)
    defining = {"filename": c["source"].replace(".", "/") + ".py", "text": "\n".join(lines[start:start + CHUNK_LINES])}
    here = idents("\n".join(c["prefix"].split("\n")[-CHUNK_LINES:]))
    pool = []
    for dotted, (package, _, other) in known.items():
        if package != c["package"] or dotted in (c["module"], c["source"]):
            continue
        ol = other.split("\n")
        for s in range(0, len(ol), CHUNK_LINES):
            piece = "\n".join(ol[s:s + CHUNK_LINES])
            words = idents(piece)
            score = len(here & words) / max(1, len(here | words))
            pool.append((score, dotted, s, piece))
    pool.sort(key=lambda t: (-t[0], t[1], t[2]))
    similar = [{"filename": d.replace(".", "/") + ".py", "text": p} for _, d, _, p in pool[:CHUNKS - 1]]
    return similar[::-1] + [defining]


def leading_name(text: str) -> str:
    m = IDENT.match(text.lstrip())
    return m.group(0) if m else ""


def ask(http, c: dict, asked: str) -> dict:
    """One cursor asked one way: /infill as llama.vim asks (with its chunks or not), or /v1/completions as an
    OpenAI client asks (prompt and suffix only)."""
    t0 = time.perf_counter()
    if asked in ("without", "with chunks"):
        r = http.post("/infill", json={"input_prefix": c["prefix"], "input_suffix": c["suffix"], "min_confidence": 0,
                                       "input_extra": c["chunks"] if asked == "with chunks" else []})
        r.raise_for_status()
        got = r.json()
        got["passes"], got["tokens"] = got["timings"]["forward_passes"], got["tokens_predicted"]
    else:
        r = http.post("/v1/completions", json={"prompt": c["prefix"], "suffix": c["suffix"], "temperature": 0,
                                               "max_tokens": OPENAI_MAX_TOKENS})
        r.raise_for_status()
        choice = r.json()["choices"][0]
        got = {**choice["quicksilver"], "content": choice["text"], "passes": choice["quicksilver"]["forward_passes"],
               "tokens_evaluated": choice["quicksilver"]["context_tokens"]}
    ms = 1000 * (time.perf_counter() - t0)
    answer = got["content"].split("\n", 1)[0]
    return {"content": got["content"], "ms": ms, "confidence": got["confidence"], "extra_chunks": got["extra_chunks"],
            "calibrated": got["calibrated"], "tokens_evaluated": got["tokens_evaluated"], "passes": got["passes"],
            "tokens": got["tokens"], "in_context": c["expected"].strip() in "".join(ch["text"] for ch in c["chunks"]),
            "exact": bool(answer.strip()) and answer.strip() == c["expected"].strip(),
            "identifier": leading_name(answer) == c["name"]}


def workspace_of(points: list[dict], dest: Path) -> Path:
    """The held-out packages as a user's repository on disk: every file but those holding a cursor (on disk they
    would hold the answer; an editor's buffer is ahead of its file)."""
    held = {c["file"] for c in points}
    for package, path in edit_files():
        parts = list(path.parts)
        if str(path) in held or package not in parts:
            continue
        target = dest.joinpath(*parts[parts.index(package):])
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
    return dest


def evaluate(model_dir: Path | None, n: int = CURSORS, seed: int = SEED, url: str | None = None,
             ways: tuple[str, ...] = ASKED) -> dict:
    """Every cursor asked every way; the "workspace" way on a second server given the packages as --workspace."""
    import httpx

    from evals.editor import local_server
    from runtime.request import EDITOR_MIN_CONFIDENCE, UNCALIBRATED_MIN_CONFIDENCE
    points, rows = cross_file_cursors(n, seed), []
    with tempfile.TemporaryDirectory(prefix="qs-repo-") as tmp:
        for group in ([w for w in ways if w != "workspace"], [w for w in ways if w == "workspace"]):
            if not group:
                continue
            srv, base = (None, url) if url and "workspace" not in group else \
                local_server(model_dir, workspace_of(points, Path(tmp)) if "workspace" in group else None)
            try:
                with httpx.Client(base_url=base, timeout=120) as http:
                    for i, c in enumerate(points):
                        for asked in group:
                            row = ask(http, c, asked)
                            floor = EDITOR_MIN_CONFIDENCE if row["calibrated"] else UNCALIBRATED_MIN_CONFIDENCE
                            row.update(asked=asked, cursor=i, package=c["package"], name=c["name"],
                                       shown=bool(row["content"].strip()) and row["confidence"] >= floor)
                            rows.append(row)
            finally:
                if srv is not None:
                    srv.should_exit = True
    out = {"cursors": len(points), "seed": seed, "packages": sorted({c["package"] for c in points}), "asked": {}}
    for asked in ways:
        these = [r for r in rows if r["asked"] == asked]
        shown = [r for r in these if r["shown"]]
        out["asked"][asked] = {
            "exact": float(np.mean([r["exact"] for r in these])), "identifier": float(np.mean([r["identifier"] for r in these])),
            "shown": len(shown) / max(1, len(these)), "precision": float(np.mean([r["exact"] for r in shown])) if shown else 0.0,
            "tokens_evaluated": float(np.mean([r["tokens_evaluated"] for r in these])),
            "extra_chunks": float(np.mean([r["extra_chunks"] for r in these])),
            "tokens_per_pass": sum(r["tokens"] for r in these) / max(1, sum(r["passes"] for r in these)),
            "tokens_per_pass_in_context": sum(r["tokens"] for r in these if r["in_context"]) /
            max(1, sum(r["passes"] for r in these if r["in_context"])),
            "p50_ms": float(np.percentile([r["ms"] for r in these], 50)),
            "p95_ms": float(np.percentile([r["ms"] for r in these], 95))}
    out["rows"] = rows
    return out


def add_arguments(p) -> None:
    p.add_argument("--model", type=Path, help="model directory (default: the shipped model)")
    p.add_argument("--cursors", type=int, default=CURSORS, help="cross-file cursors")
    p.add_argument("--seed", type=int, default=SEED, help="which cursors")
    p.add_argument("--url", help="a running server to ask instead of starting one (not for the workspace way)")
    p.add_argument("--ways", nargs="+", choices=ASKED, default=list(ASKED), help="which ways of asking")
    p.add_argument("--json", type=Path, help="write the results here")


def run(args) -> None:
    out = evaluate(args.model, args.cursors, args.seed, args.url, tuple(args.ways))
    out["command"] = f"quicksilver eval repo --cursors {args.cursors} --seed {args.seed}" + \
        (f" --ways {' '.join(args.ways)}" if tuple(args.ways) != ASKED else "") + \
        (f" --json {args.json}" if args.json else "")
    for asked, m in out["asked"].items():
        print(f"{asked:12} chunks {m['extra_chunks']:.1f}  exact {m['exact']:.1%}  identifier {m['identifier']:.1%}  shown {m['shown']:.1%} at "
              f"{m['precision']:.1%}  tokens/pass {m['tokens_per_pass']:.2f} ({m['tokens_per_pass_in_context']:.2f} where "
              f"the line is in the chunks)  tokens read {m['tokens_evaluated']:.0f}  p50 {m['p50_ms']:.0f} ms")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=1) + "\n")

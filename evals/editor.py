"""quicksilver eval editor: what an editor's user receives. Cursors are drawn from held-out source files (the
standard library files the corpus holds out by content hash: never trained on, never HumanEval) at the places
people ask for completions — the end of a partially typed line, a fresh line in a block, a missing line — and asked
through a real server on 127.0.0.1 exactly as clients ask: `/v1/completions` at the `max_tokens` editor plugins
send (no language), `/infill` with llama.vim's request, and `quicksilver lsp` (a language-server process on the
same model, each cursor's file opened as a Python document, an inline completion requested at the cursor, with
the editors' default abstention; it reports no confidence, so it is left out of the curve).

Per client: the shown rate (a non-empty answer), the degenerate rate among shown answers (a line the answer
repeats, or a line of the code around the cursor re-written), exact-line precision of what is shown (the cursor's
line as the file has it), edit similarity of the first line, and latency.
"""
from __future__ import annotations

import difflib
import hashlib
import json
import sysconfig
import threading
import time
from pathlib import Path

import httpx
import numpy as np

from model.corpus import HELDOUT_PERMILLE, clean_text

KINDS = ("partial-line", "blank-line", "missing-line")
COMPLETION_TOKENS = (16, 64, 128, 256)       # what editor plugins send as max_tokens
LLAMA_VIM = {"n_predict": 128, "t_max_predict_ms": 1500, "top_k": 40, "top_p": 0.99, "samplers": ["top_k", "top_p", "infill"],
             "cache_prompt": True, "stream": False}
PREFIX_LINES, SUFFIX_LINES = 256, 64         # llama.vim's n_prefix / n_suffix
NEARBY = 3                                   # non-blank lines each side of the cursor an answer must not re-write
TRIVIAL = 5                                  # lines no longer than this ("pass", ")", "else:") may repeat
SEED = 0


HELDOUT_LIST = Path(__file__).with_name("heldout-files.tsv")   # the frozen list (its header says why)
MIN_LISTED = 20   # a machine with fewer of the listed files than this (other versions) scans its own instead


def heldout_files(roots: list[Path] | None = None) -> list[Path]:
    """The held-out files cursors are drawn from, in a fixed order: those of HELDOUT_LIST that this machine has
    with the same content, so that installing a package does not change the eval sets; else (roots given, or too
    few listed files here) a scan of the standard library and site-packages with the corpus's held-out rule."""
    if roots is None and HELDOUT_LIST.exists():
        paths = sysconfig.get_paths()
        base = {"stdlib": Path(paths["stdlib"]), "purelib": Path(paths["purelib"])}
        listed = []
        for line in HELDOUT_LIST.read_text().splitlines():
            if line and not line.startswith("#"):
                root, rel, digest = line.split("\t")
                path = base[root] / rel
                if path.is_file() and hashlib.sha1(path.read_bytes()).hexdigest() == digest:
                    listed.append(path)
        if len(listed) >= MIN_LISTED:
            return listed
    return scan_heldout(roots)


def scan_heldout(roots: list[Path] | None = None) -> list[Path]:
    """Files of the interpreter's standard library and site-packages that the corpus holds out (its content-hash
    rule and filters), tests and codec tables left out, in a fixed order."""
    paths = sysconfig.get_paths()
    roots = roots or [Path(paths["stdlib"]), Path(paths["purelib"])]
    out, seen = [], set()
    for root in roots:
        for path in sorted(root.rglob("*.py")):
            if any(p in ("test", "tests", "encodings") for p in path.parts) or path.name.startswith("test_"):
                continue
            data = path.read_bytes()
            digest = hashlib.sha1(data).hexdigest()
            if digest not in seen and int(digest[:8], 16) % 1000 < HELDOUT_PERMILLE and clean_text(data)[0]:
                seen.add(digest)
                out.append(path)
    return out


def cursors(files: list[Path], per_kind: int, seed: int = SEED) -> list[dict]:
    """Cursor positions: prefix, suffix and the cursor's line as the file has it."""
    return cursors_in([p.read_text() for p in files], [p.name for p in files], per_kind, seed)


def cursors_in(texts: list[str], names: list[str], per_kind: int, seed: int = SEED) -> list[dict]:
    """`cursors` on texts (named `names`): also how `quicksilver distill` draws its training cursors."""
    rng = np.random.default_rng(seed)
    out = {k: [] for k in KINDS}
    for _ in range(per_kind * len(KINDS) * 50):
        if all(len(v) >= per_kind for v in out.values()):
            break
        f = int(rng.integers(len(texts)))
        lines = texts[f].split("\n")
        i = int(rng.integers(5, max(6, len(lines) - 5)))
        line = lines[i] if i < len(lines) else ""
        body = line.strip()
        if not 8 <= len(body) <= 100 or body.startswith(("#", '"', "'")):
            continue
        kind = KINDS[int(rng.integers(len(KINDS)))]
        if len(out[kind]) >= per_kind:
            continue
        before, after = "\n".join(lines[:i]) + "\n", "\n".join(lines[i + 1:])
        indent = line[: len(line) - len(line.lstrip())]
        if kind == "partial-line":
            cut = int(rng.integers(len(indent) + 2, len(line) - 2))
            prefix, suffix = before + line[:cut], "\n" + after
        elif kind == "blank-line":
            prefix, suffix = before + indent, "\n" + after
        else:
            prefix, suffix = before, after
        out[kind].append({"kind": kind, "file": names[f], "line": i + 1, "prefix": prefix, "suffix": suffix,
                          "expected": line})
    return [c for k in KINDS for c in out[k]]


def nearby(prefix: str, suffix: str) -> set[str]:
    """The non-blank lines just before the cursor's line and just after it, stripped."""
    above = [l.strip() for l in prefix.split("\n")[:-1] if l.strip()][-NEARBY:]
    below = [l.strip() for l in suffix.split("\n")[1:] if l.strip()][:NEARBY]
    return set(above + below)


def judge(c: dict, text: str) -> dict:
    """Shown, degenerate, exact first line, edit similarity for one answer."""
    cursor_line = c["prefix"].rsplit("\n", 1)[-1]
    first = (cursor_line + text.split("\n", 1)[0]).rstrip()
    expected = c["expected"].rstrip()
    lines = [l.strip() for l in text.split("\n") if len(l.strip()) > TRIVIAL]
    repeated = len(lines) != len(set(lines))
    around = nearby(c["prefix"], c["suffix"]) - {expected.strip()}
    rewritten = any(l in around for l in lines)
    shown = bool(text.strip())
    return {"shown": shown, "degenerate": shown and (repeated or rewritten), "repeated": repeated,
            "rewritten": rewritten, "exact": shown and first == expected,
            "similarity": difflib.SequenceMatcher(None, first.strip(), expected.strip()).ratio() if shown else 0.0}


def ask(http: httpx.Client, client: str, c: dict) -> tuple[str, float]:
    """(the text the client receives, the completion's confidence)."""
    if client.startswith("completions-"):
        r = http.post("/v1/completions", json={"prompt": c["prefix"], "suffix": c["suffix"],
                                               "max_tokens": int(client.split("-")[1]), "temperature": 0})
        r.raise_for_status()
        choice = r.json()["choices"][0]
        return choice["text"], choice["quicksilver"].get("confidence", 0.0)   # (a server without scores: 0)
    above, cursor_line = c["prefix"].rsplit("\n", 1) if "\n" in c["prefix"] else ("", c["prefix"])
    line_rest, _, below = c["suffix"].partition("\n")
    body = {"input_prefix": "\n".join(above.split("\n")[-PREFIX_LINES:]) + "\n", "prompt": cursor_line,
            "input_suffix": line_rest + "\n" + "\n".join(below.split("\n")[:SUFFIX_LINES]) + "\n",
            "input_extra": [], **LLAMA_VIM}
    r = http.post("/infill", json=body)
    r.raise_for_status()
    return r.json()["content"], r.json().get("confidence", 0.0)


async def ask_lsp(points: list[dict], model_dir: Path | None) -> list[tuple[str, float, float]]:
    """(text, confidence (unknown: 0), ms) for every cursor, from one `quicksilver lsp` process."""
    import sys

    from lsprotocol import types as lsp
    from pygls.lsp.client import LanguageClient

    from evals.typing import ROOT, position
    client = LanguageClient("quicksilver-editor-eval", "1")
    args = ["-m", "runtime.cli", "lsp"] + (["--model", str(model_dir)] if model_dir else [])
    await client.start_io(sys.executable, *args, cwd=str(ROOT))
    await client.initialize_async(lsp.InitializeParams(capabilities=lsp.ClientCapabilities(), process_id=None))
    client.initialized(lsp.InitializedParams())
    out = []
    try:
        for i, c in enumerate(points):
            uri, text = f"file:///editor-eval/{i}/{c['file']}", c["prefix"] + c["suffix"]
            client.text_document_did_open(lsp.DidOpenTextDocumentParams(
                text_document=lsp.TextDocumentItem(uri=uri, language_id="python", version=1, text=text)))
            t0 = time.perf_counter()
            got = await client.text_document_inline_completion_async(lsp.InlineCompletionParams(
                text_document=lsp.TextDocumentIdentifier(uri=uri), position=position(text, len(c["prefix"])),
                # ghost text as the user types: an automatic trigger, which abstains below the editors' floor
                context=lsp.InlineCompletionContext(trigger_kind=lsp.InlineCompletionTriggerKind.Automatic)))
            items = got.items if hasattr(got, "items") else (got or [])
            out.append((items[0].insert_text if items else "", 0.0, 1000 * (time.perf_counter() - t0)))
            client.text_document_did_close(lsp.DidCloseTextDocumentParams(
                text_document=lsp.TextDocumentIdentifier(uri=uri)))
    finally:
        await client.shutdown_async(None)
        client.exit(None)
        await client.stop()
    return out


def summarise(rows: list[dict]) -> dict:
    shown = [r for r in rows if r["shown"]]
    ms = np.array([r["ms"] for r in rows])
    return {"cursors": len(rows), "shown_rate": len(shown) / max(1, len(rows)),
            "degenerate_rate": sum(r["degenerate"] for r in shown) / max(1, len(shown)),
            "repeated_rate": sum(r["repeated"] for r in shown) / max(1, len(shown)),
            "rewritten_rate": sum(r["rewritten"] for r in shown) / max(1, len(shown)),
            "precision": sum(r["exact"] for r in shown) / max(1, len(shown)),
            "exact_rate": sum(r["exact"] for r in rows) / max(1, len(rows)),
            "similarity": float(np.mean([r["similarity"] for r in shown])) if shown else 0.0,
            "p50_ms": float(np.percentile(ms, 50)), "p95_ms": float(np.percentile(ms, 95))}


CURVE_CLIENT = "completions-128"
THRESHOLDS = tuple(round(0.01 * i, 2) for i in range(100))
SHOWN_TARGET = 0.25   # the editors' threshold (runtime/engine.py EDITOR_MIN_CONFIDENCE) is chosen at seed 0 as the
                      # highest that still shows a completion at this share of the cursors (`chosen` in the output)


def chosen(points: list[dict]) -> float | None:
    """The highest threshold of a curve that shows a completion at SHOWN_TARGET of the cursors."""
    return max((p["threshold"] for p in points if p["coverage"] >= SHOWN_TARGET), default=None)


def curve(rows: list[dict]) -> list[dict]:
    """Precision and coverage of the shown answers if only those with confidence >= t were shown."""
    out = []
    for t in THRESHOLDS:
        kept = [r for r in rows if r["shown"] and r["confidence"] >= t]
        out.append({"threshold": t, "coverage": len(kept) / max(1, len(rows)),
                    "precision": sum(r["exact"] for r in kept) / max(1, len(kept)),
                    "degenerate_rate": sum(r["degenerate"] for r in kept) / max(1, len(kept))})
    return out


def plot(out: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    pts = out["curve"]
    fig, ax = plt.subplots(figsize=(5.5, 4))
    ax.plot([p["coverage"] for p in pts], [p["precision"] for p in pts], marker="o")
    for p in pts[::10]:
        ax.annotate(f"{p['threshold']:.1f}", (p["coverage"], p["precision"]), fontsize=7, xytext=(3, 3),
                    textcoords="offset points")
    d = next(p for p in pts if p["threshold"] >= out["editor_min_confidence"])
    ax.scatter([d["coverage"]], [d["precision"]], color="red", zorder=3, label=f"editor default ({d['threshold']})")
    ax.set_xlabel("coverage: cursors shown a completion")
    ax.set_ylabel("precision: shown completions with the exact line")
    ax.set_title(f"{out['model']}: {out['cursors']} held-out cursors, {CURVE_CLIENT}", fontsize=9)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def local_server(model_dir: Path | None, workspace: Path | None = None, **options):
    """(uvicorn server, base url): the product's server on a free loopback port, in a thread; set `should_exit`.
    With a workspace, it returns once the workspace is indexed. `options`: other ServerConfig fields."""
    import socket

    import uvicorn

    from server.app import ServerConfig, create_app
    from server.serve import uvicorn_config
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app = create_app(ServerConfig(model=model_dir, db=Path(":memory:"), workspace=workspace, **options))
    srv = uvicorn.Server(uvicorn_config(app, "127.0.0.1", port, log_level="warning"))
    threading.Thread(target=srv.run, daemon=True).start()
    while not srv.started:
        time.sleep(0.05)
    if workspace is not None:
        app.state.workspace.ready.wait()
    return srv, f"http://127.0.0.1:{port}"


def evaluate(model_dir: Path | None, per_kind: int, clients: list[str], url: str | None = None,
             seed: int = SEED) -> dict:
    srv = None
    if url is None:  # a real server of our own on a free loopback port
        srv, url = local_server(model_dir)
    points = cursors(heldout_files(), per_kind, seed)
    results, rows = {}, []
    try:
        with httpx.Client(base_url=url, timeout=120) as http:
            model = http.get("/v1/models").json()["data"][0]["id"]
            for client in clients:
                these = []
                if client == "lsp":
                    import asyncio
                    answers = asyncio.run(ask_lsp(points, model_dir))
                for i, c in enumerate(points):
                    t0 = time.perf_counter()
                    if client == "lsp":
                        text, confidence, ms = answers[i]
                    else:
                        text, confidence = ask(http, client, c)
                        ms = 1000 * (time.perf_counter() - t0)
                    these.append({**judge(c, text), "ms": ms, "kind": c["kind"],
                                  "confidence": confidence,
                                  "client": client, "file": c["file"], "line": c["line"], "text": text})
                results[client] = summarise(these) | {k: summarise([r for r in these if r["kind"] == k]) for k in KINDS}
                rows += these
    finally:
        if srv is not None:
            srv.should_exit = True
    from runtime.request import EDITOR_MIN_CONFIDENCE, WINDOWS
    these = [r for r in rows if r["client"] == CURVE_CLIENT]
    default = [{**r, "shown": r["shown"] and r["confidence"] >= EDITOR_MIN_CONFIDENCE} for r in these]
    return {"set": "editor", "model": model, "seed": seed, "cursors": len(points),
            "files": len({c["file"] for c in points}), "windows": WINDOWS, "editor_min_confidence": EDITOR_MIN_CONFIDENCE,
            "clients": results, "with_editor_abstention": summarise(default) if these else None,
            "curve": curve(these) if these else None, "chosen": chosen(curve(these)) if these else None,
            "rows": rows}


def add_arguments(p) -> None:
    p.add_argument("--model", type=Path, help="model directory (default: the shipped model)")
    p.add_argument("--url", help="a running server to ask instead of starting one (e.g. http://127.0.0.1:8000)")
    p.add_argument("--per-kind", type=int, default=40, help="cursors of each kind (partial line, blank line, missing line)")
    p.add_argument("--clients", default=",".join([f"completions-{n}" for n in COMPLETION_TOKENS] + ["infill-llama.vim", "lsp"]),
                   help="comma-separated: completions-N (max_tokens N), infill-llama.vim, lsp")
    p.add_argument("--seed", type=int, default=SEED, help="which cursors (thresholds were chosen at seed 0)")
    p.add_argument("--json", type=Path, help="write the results (with every answer) here")
    p.add_argument("--plot", type=Path, help="write the precision/coverage plot (PNG) here")


def run(args) -> None:
    out = evaluate(args.model, args.per_kind, args.clients.split(","), args.url, args.seed)
    out["command"] = "quicksilver eval editor " + " ".join(
        f"--{k.replace('_', '-')} {v}" for k, v in (("per_kind", args.per_kind), ("seed", args.seed),
                                                    ("clients", args.clients), ("json", args.json),
                                                    ("plot", args.plot)) if v is not None)
    if args.json:
        args.json.write_text(json.dumps(out, indent=1) + "\n")
    if args.plot and out["curve"]:
        plot(out, args.plot)
    for client, s in out["clients"].items():
        print(f"{client:20s} shown {s['shown_rate']:.0%}  degenerate {s['degenerate_rate']:.0%}  precision "
              f"{s['precision']:.0%}  similarity {s['similarity']:.2f}  p50 {s['p50_ms']:.0f} ms  p95 {s['p95_ms']:.0f} ms")
    if (s := out["with_editor_abstention"]) is not None:
        print(f"{CURVE_CLIENT} with the editors' abstention (confidence >= {out['editor_min_confidence']}): shown "
              f"{s['shown_rate']:.0%}  degenerate {s['degenerate_rate']:.0%}  precision {s['precision']:.0%}; the "
              f"highest threshold showing {SHOWN_TARGET:.0%}: {out['chosen']}")

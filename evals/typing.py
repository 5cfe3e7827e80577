"""quicksilver eval typing: replay an editing session against `quicksilver lsp` and time the ghost text.

The session (evals/sessions/*.json) is a document and a list of keystrokes with the delays a person types
them at; Enter inserts the new line's indentation as editors do. After every keystroke the replay sends the
change (didChange) and asks for an inline completion, like an editor without debouncing; the next keystroke
supersedes a request still running (the server cancels it at its next denoising step). Reported: median and
p95 time from didChange to the inline completion response over the requests answered before the next
keystroke, how many were answered, how many were superseded, and how many came from the completion cache —
with the language server's completion cache and without it, in one run.
"""
from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

import numpy as np
from lsprotocol import types as lsp
from pygls.lsp.client import LanguageClient

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SESSION = Path(__file__).resolve().parent / "sessions" / "typing.json"
KEY_MS, NEWLINE_MS = 150, 800      # ~70 words a minute, a pause at the end of each line
URI = "file:///replay/session.py"


def record(document: str, cursor: int, typed: str) -> dict:
    """A session: `typed` entered at `cursor` one key at a time (Enter carries the next line's indentation)."""
    keys, i = [], 0
    while i < len(typed):
        if typed[i] == "\n":
            j = i + 1
            while j < len(typed) and typed[j] in " \t":
                j += 1
            keys.append({"text": typed[i:j], "delay_ms": NEWLINE_MS})
            i = j
        else:
            keys.append({"text": typed[i], "delay_ms": KEY_MS})
            i += 1
    return {"document": document, "cursor": cursor, "keys": keys}


def position(text: str, offset: int) -> lsp.Position:
    line = text.count("\n", 0, offset)
    col = offset - (text.rfind("\n", 0, offset) + 1)
    return lsp.Position(line=line, character=len(text[offset - col:offset].encode("utf-16-le")) // 2)


async def replay(session: dict, model_dir: Path | None = None, log_file: Path | None = None,
                 cache: bool = True) -> dict:
    client = LanguageClient("quicksilver-typing", "1")
    args = ["-m", "runtime.cli", "lsp"] + ([] if cache else ["--no-completion-cache"])
    if model_dir:
        args += ["--model", str(model_dir)]
    if log_file:
        args += ["--log-file", str(log_file)]
    await client.start_io(sys.executable, *args, cwd=str(ROOT))
    await client.initialize_async(lsp.InitializeParams(capabilities=lsp.ClientCapabilities(), process_id=None))
    client.initialized(lsp.InitializedParams())
    text, cursor = session["document"], session["cursor"]
    client.text_document_did_open(lsp.DidOpenTextDocumentParams(
        text_document=lsp.TextDocumentItem(uri=URI, language_id="python", version=1, text=text)))
    latencies, superseded, empty, pending = [], 0, 0, []
    for version, key in enumerate(session["keys"], start=2):
        here = position(text, cursor)
        text = text[:cursor] + key["text"] + text[cursor:]
        cursor += len(key["text"])
        t0 = time.perf_counter()
        client.text_document_did_change(lsp.DidChangeTextDocumentParams(
            text_document=lsp.VersionedTextDocumentIdentifier(uri=URI, version=version),
            content_changes=[lsp.TextDocumentContentChangePartial(range=lsp.Range(start=here, end=here),
                                                                  text=key["text"])]))
        request = asyncio.ensure_future(client.text_document_inline_completion_async(lsp.InlineCompletionParams(
            text_document=lsp.TextDocumentIdentifier(uri=URI), position=position(text, cursor),
            context=lsp.InlineCompletionContext(trigger_kind=lsp.InlineCompletionTriggerKind.Automatic))))
        done, _ = await asyncio.wait({request}, timeout=key["delay_ms"] / 1000)
        if done:
            latencies.append(1000 * (time.perf_counter() - t0))
            try:
                result = request.result()
                items = result.items if hasattr(result, "items") else result
                empty += not items
            except Exception:
                empty += 1
            await asyncio.sleep(max(0.0, key["delay_ms"] / 1000 - (time.perf_counter() - t0)))
        else:
            superseded += 1
            pending.append(request)
    await asyncio.gather(*pending, return_exceptions=True)
    await client.shutdown_async(None)
    client.exit(None)
    await client.stop()
    lat = np.array(latencies) if latencies else np.array([np.nan])
    cache_hits = log_file.read_text().count("served from the cache") if log_file and log_file.exists() else None
    return {"completion_cache": cache, "keystrokes": len(session["keys"]), "answered": len(latencies), "superseded": superseded,
            "answered_empty": empty, "cache_hits": cache_hits,
            "p50_ms": float(np.percentile(lat, 50)), "p95_ms": float(np.percentile(lat, 95)),
            "key_ms": KEY_MS, "newline_ms": NEWLINE_MS}


def add_arguments(p) -> None:
    p.add_argument("--model", type=Path, help="model directory (default: the shipped model)")
    p.add_argument("--session", type=Path, default=DEFAULT_SESSION, help="recorded editing session (JSON)")
    p.add_argument("--log-file", type=Path, help="keep the language server's log (of the last run) here")
    p.add_argument("--json", type=Path, help="write the results here")


def run(args) -> None:
    import tempfile

    from runtime.session import DEFAULT_MODEL_DIR, MODEL_FILES, read_card

    session = json.loads(args.session.read_text())
    card = read_card(args.model or DEFAULT_MODEL_DIR)
    model_file = next(f for f in MODEL_FILES.values() if f in card["files"])
    runs = []
    for cache in (True, False):  # the same session with the completion cache and without it
        with tempfile.TemporaryDirectory() as tmp:
            log_file = Path(tmp) / "lsp.log"
            runs.append(asyncio.run(replay(session, args.model, log_file, cache)))
            if args.log_file:
                args.log_file.write_text(log_file.read_text())
    result = {"session": args.session.name, "model_file": model_file, "model_sha256": card["files"][model_file],
              "runs": runs}
    print(json.dumps(result, indent=1))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1) + "\n")

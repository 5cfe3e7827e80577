"""The user's first path, checked on a serving-only install: serve the shipped model, complete, no torch, the
language server answers, Ctrl+C with a dashboard open exits promptly; records the server's memory.

Run with the python of a venv that has only what `make serve` installs (so only the standard library and the
serving dependencies are used here):

    VENV/bin/python .ci/serving_check.py --venv VENV [--json evals/results/serving.json]
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

MAX_RSS_MB = 200          # the budget for the serving install's server after a completion
SHUTDOWN_S = 5            # Ctrl+C with a dashboard websocket open must end the server within this
START_S = 120
LSP_S = 120


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(url: str, body: dict) -> dict:
    req = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=120) as r:
        return json.load(r)


def wait_healthy(url: str, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + START_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited with {proc.returncode} before it was healthy")
        try:
            with urllib.request.urlopen(url + "/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"the server was not healthy within {START_S} s")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise SystemExit("no VmRSS in /proc")


def torch_loaded(pid: int) -> bool:
    maps = Path(f"/proc/{pid}/maps").read_text()
    return "libtorch" in maps or "/torch/" in maps


def lsp_message(payload: dict) -> bytes:
    body = json.dumps(payload).encode()
    return f"Content-Length: {len(body)}\r\n\r\n".encode() + body


def lsp_read(stream) -> dict:
    length = None
    while True:
        line = stream.readline()
        if not line:
            raise SystemExit("the language server closed its output")
        if line in (b"\r\n", b"\n"):
            break
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    return json.loads(stream.read(length))


def check_lsp(venv: Path) -> dict:
    """initialize, open a document, ask for completions at its end: the language server answers each."""
    proc = subprocess.Popen([str(venv / "bin" / "quicksilver"), "lsp"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL)
    t0 = time.monotonic()
    try:
        text = "def is_even(n):\n    return "
        proc.stdin.write(lsp_message({"jsonrpc": "2.0", "id": 1, "method": "initialize",
                                      "params": {"processId": None, "rootUri": None, "capabilities": {}}}))
        proc.stdin.flush()
        init = next(m for m in iter(lambda: lsp_read(proc.stdout), None) if m.get("id") == 1)
        proc.stdin.write(lsp_message({"jsonrpc": "2.0", "method": "initialized", "params": {}}))
        proc.stdin.write(lsp_message({"jsonrpc": "2.0", "method": "textDocument/didOpen", "params": {"textDocument": {
            "uri": "file:///tmp/even.py", "languageId": "python", "version": 1, "text": text}}}))
        proc.stdin.write(lsp_message({"jsonrpc": "2.0", "id": 2, "method": "textDocument/completion", "params": {
            "textDocument": {"uri": "file:///tmp/even.py"}, "position": {"line": 1, "character": 11}}}))
        proc.stdin.flush()
        answer = next(m for m in iter(lambda: lsp_read(proc.stdout), None) if m.get("id") == 2)
        if "error" in answer or "capabilities" not in init.get("result", {}):
            raise SystemExit(f"the language server answered with an error: {answer.get('error') or init}")
        proc.stdin.write(lsp_message({"jsonrpc": "2.0", "id": 3, "method": "shutdown", "params": None}))
        proc.stdin.write(lsp_message({"jsonrpc": "2.0", "method": "exit", "params": None}))
        proc.stdin.flush()
        proc.wait(timeout=30)
        items = answer["result"]["items"] if isinstance(answer.get("result"), dict) else answer.get("result") or []
        return {"lsp_answer_s": round(time.monotonic() - t0, 2), "lsp_items": len(items)}
    finally:
        if proc.poll() is None:
            proc.kill()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--venv", type=Path, required=True, help="the serving-only venv (its bin/quicksilver is run)")
    p.add_argument("--json", type=Path, help="write the measurements here")
    args = p.parse_args()
    from websockets.sync.client import connect   # a serving dependency: this venv has it

    try:
        __import__("torch")
        raise SystemExit("torch is importable in this venv: it is not a serving-only install")
    except ModuleNotFoundError:
        pass
    port, tmp = free_port(), Path(tempfile.mkdtemp(prefix="qs-serving-"))
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen([str(args.venv / "bin" / "quicksilver"), "serve", "--port", str(port),
                               "--db", str(tmp / "qs.sqlite")], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, cwd=tmp)
    try:
        wait_healthy(url, server)
        r = post(url + "/v1/completions", {"prompt": "def is_even(n):\n    return ", "suffix": "\n", "max_tokens": 16})
        text = r["choices"][0]["text"]
        out = {"completion": text, "finish_reason": r["choices"][0]["finish_reason"],
               "server_rss_mb": round(rss_mb(server.pid), 1), "torch_loaded": torch_loaded(server.pid)}
        out |= check_lsp(args.venv)
        with connect(f"ws://127.0.0.1:{port}/v1/dashboard/live", origin=url):   # the dashboard's live feed
            t0 = time.monotonic()
            server.send_signal(signal.SIGINT)
            try:
                log, _ = server.communicate(timeout=SHUTDOWN_S + 10)
            except subprocess.TimeoutExpired:
                raise SystemExit(f"Ctrl+C did not stop the server within {SHUTDOWN_S + 10} s (dashboard open)")
            out["shutdown_s"] = round(time.monotonic() - t0, 2)
    finally:
        if server.poll() is None:
            server.kill()
    print(json.dumps(out, indent=2))
    problems = ["torch is loaded in the server"] if out["torch_loaded"] else []
    problems += [f"server RSS {out['server_rss_mb']} MB > {MAX_RSS_MB} MB"] if out["server_rss_mb"] > MAX_RSS_MB else []
    problems += [f"shutdown took {out['shutdown_s']} s > {SHUTDOWN_S} s"] if out["shutdown_s"] > SHUTDOWN_S else []
    problems += ["a traceback in the server's output:\n" + log] if "Traceback" in log else []
    if args.json:
        args.json.write_text(json.dumps({**out, "command": " ".join(sys.argv),
                                         "python": sys.version.split()[0]}, indent=2) + "\n")
    if problems:
        raise SystemExit("serving-only install check failed: " + "; ".join(problems))
    print("serving-only install: served, completed, no torch, language server answered, Ctrl+C exited promptly")


if __name__ == "__main__":
    main()

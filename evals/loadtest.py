"""quicksilver eval load: a bounded load test of the real server on loopback (it stops by itself).

Starts `quicksilver serve` on a free 127.0.0.1 port, then runs N concurrent HTTP clients (OpenAI-style completions)
and M concurrent websocket sessions (complete at a cursor), each making a fixed number of requests.
"""
from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import websockets

from evals.tasks import load_problems

ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT_S = 60
REQUEST_TIMEOUT_S = 300


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def http_client(url: str, prompts: list[str], n: int, out: dict) -> None:
    async with httpx.AsyncClient(timeout=REQUEST_TIMEOUT_S) as client:
        for i in range(n):
            t0 = time.perf_counter()
            try:
                r = await client.post(url + "/v1/completions", json={"prompt": prompts[i % len(prompts)], "max_tokens": 16,
                                                                      "stop": ["\n"]})
                ok = r.status_code == 200
                out["tokens"] += r.json()["usage"]["completion_tokens"] if ok else 0
            except httpx.HTTPError:
                ok = False
            out["http_ms" if ok else "http_errors"].append(1000 * (time.perf_counter() - t0))


async def ws_client(url: str, prompts: list[str], n: int, out: dict) -> None:
    try:
        async with websockets.connect(url.replace("http://", "ws://") + "/v1/sessions", max_size=None) as ws:
            for i in range(n):
                doc = prompts[i % len(prompts)]
                t0 = time.perf_counter()
                await ws.send(json.dumps({"type": "open", "document": {"text": doc}}) if i == 0 else
                              json.dumps({"type": "set_document", "text": doc}))
                await ws.recv()
                await ws.send(json.dumps({"type": "complete", "request_id": f"r{i}", "offset": len(doc), "max_tokens": 16}))
                while True:
                    msg = json.loads(await asyncio.wait_for(ws.recv(), REQUEST_TIMEOUT_S))
                    if msg["type"] in ("result", "error"):
                        break
                ok = msg["type"] == "result"
                out["tokens"] += msg["stats"]["tokens"] if ok else 0
                out["ws_ms" if ok else "ws_errors"].append(1000 * (time.perf_counter() - t0))
    except (OSError, websockets.WebSocketException, asyncio.TimeoutError):
        out["ws_errors"].append(0.0)


async def load(url: str, http_clients: int, ws_sessions: int, per_client: int) -> dict:
    prompts = [p["prompt"] for p in load_problems()]
    out = {"http_ms": [], "http_errors": [], "ws_ms": [], "ws_errors": [], "tokens": 0}
    t0 = time.perf_counter()
    await asyncio.gather(*[http_client(url, prompts[i::http_clients], per_client, out) for i in range(http_clients)],
                         *[ws_client(url, prompts[i::ws_sessions], per_client, out) for i in range(ws_sessions)])
    wall = time.perf_counter() - t0
    pct = lambda xs, q: float(np.percentile(xs, q)) if xs else None  # noqa: E731
    return {"http_clients": http_clients, "ws_sessions": ws_sessions, "requests_per_client": per_client,
            "http_requests": len(out["http_ms"]) + len(out["http_errors"]), "http_errors": len(out["http_errors"]),
            "ws_requests": len(out["ws_ms"]) + len(out["ws_errors"]), "ws_errors": len(out["ws_errors"]),
            "http_p50_ms": pct(out["http_ms"], 50), "http_p95_ms": pct(out["http_ms"], 95),
            "ws_p50_ms": pct(out["ws_ms"], 50), "ws_p95_ms": pct(out["ws_ms"], 95),
            "tokens_per_s": out["tokens"] / wall, "requests_per_s": (len(out["http_ms"]) + len(out["ws_ms"])) / wall,
            "wall_s": wall}


def run_against_server(model: Path | None, http_clients: int, ws_sessions: int, per_client: int) -> dict:
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "runtime.cli", "serve", "--port", str(port), "--db", f"{tmp}/load.sqlite"]
        if model:
            cmd += ["--model", str(model)]
        server = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                  env={**os.environ, "QUICKSILVER_API_KEY": ""})
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.time() + START_TIMEOUT_S
            while time.time() < deadline:
                try:
                    if httpx.get(url + "/health", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.2)
            else:
                raise SystemExit("the server did not start")
            return asyncio.run(load(url, http_clients, ws_sessions, per_client))
        finally:
            server.terminate()
            server.wait(timeout=30)


def add_arguments(p) -> None:
    p.add_argument("--model", type=Path, help="model directory (default: the shipped model)")
    p.add_argument("--http-clients", type=int, default=32, help="concurrent HTTP clients")
    p.add_argument("--ws-sessions", type=int, default=16, help="concurrent websocket sessions")
    p.add_argument("--requests", type=int, default=3, help="requests per client")
    p.add_argument("--json", type=Path, help="write the results here")


def run(args) -> None:
    result = run_against_server(args.model, args.http_clients, args.ws_sessions, args.requests)
    print(json.dumps(result, indent=1))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1) + "\n")

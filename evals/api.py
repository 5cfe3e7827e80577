"""quicksilver eval api: HumanEval infilling asked the way an OpenAI-compatible client asks — through a real server's
`/v1/completions` with the prefix as `prompt`, the suffix as `suffix`, a client's `max_tokens` and no language —
and scored on exactly the text the client receives (no harness-side cut: what is inserted is what is tested).

The harness rows (`quicksilver eval infill`) size the window themselves; these say what a user of the API gets.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import httpx
import numpy as np
from tqdm import tqdm

from evals.editor import local_server
from evals.infill import normalise, pick
from evals.sandbox import run_many
from evals.tasks import infill_tasks
from runtime import DECODING_REVISION

MAX_TOKENS = 128     # what editor plugins commonly send


def evaluate(model_dir: Path | None, set_name: str, max_tokens: int, limit: int | None, workers: int) -> dict:
    tasks = pick(infill_tasks(set_name), limit)
    srv, url = local_server(model_dir)
    rows = []
    try:
        with httpx.Client(base_url=url, timeout=300) as http:
            model = http.get("/v1/models").json()["data"][0]["id"]
            health = http.get("/health").json()
            for t in tqdm(tasks, desc=f"{set_name} via /v1/completions", file=sys.stderr):
                t0 = time.perf_counter()
                r = http.post("/v1/completions", json={"prompt": t.prefix, "suffix": t.suffix,
                                                       "max_tokens": max_tokens, "temperature": 0})
                r.raise_for_status()
                choice = r.json()["choices"][0]
                rows.append({"task_id": t.task_id, "completion": choice["text"], "ms": 1000 * (time.perf_counter() - t0),
                             "exact": normalise(choice["text"]) == normalise(t.middle),
                             "tokens": choice["quicksilver"]["tokens"],
                             "forward_passes": choice["quicksilver"]["forward_passes"]})
    finally:
        srv.should_exit = True
    with tqdm(total=len(tasks), desc="tests", file=sys.stderr) as bar:
        outcomes = run_many([t.program(r["completion"]) for t, r in zip(tasks, rows)], workers, bar)
    for r, o in zip(rows, outcomes):
        r["passed"], r["outcome"] = o.passed, o.reason
    ms = np.array([r["ms"] for r in rows])
    return {"set": set_name, "mode": "api", "route": "/v1/completions", "max_tokens": max_tokens, "language": None,
            "tasks": len(rows), "model": model, "pass@1": float(np.mean([r["passed"] for r in rows])),
            "exact_match": float(np.mean([r["exact"] for r in rows])),
            "tokens_per_forward": sum(r["tokens"] for r in rows) / max(1, sum(r["forward_passes"] for r in rows)),
            "p50_ms": float(np.percentile(ms, 50)), "p95_ms": float(np.percentile(ms, 95)),
            "model_file": health["model_file"], "model_sha256": model_sha256(model_dir, health["model_file"]),
            "decoding_revision": DECODING_REVISION, "rows": rows}


def model_sha256(model_dir: Path | None, model_file: str) -> str:
    """The served ONNX file's hash, from its card (as the harness rows record it)."""
    from runtime.session import CARD_FILE, DEFAULT_MODEL_DIR
    card = json.loads((Path(model_dir or DEFAULT_MODEL_DIR) / CARD_FILE).read_text())
    return card["files"].get(model_file, "")


def add_arguments(p) -> None:
    p.add_argument("--model", type=Path, help="model directory (default: the shipped model)")
    p.add_argument("--set", default="single-line", choices=["single-line", "multi-line", "random-span"])
    p.add_argument("--max-tokens", type=int, default=MAX_TOKENS, help="the client's max_tokens")
    p.add_argument("--limit", type=int, help="only this many tasks, spread over the set")
    p.add_argument("--workers", type=int, default=2, help="sandboxed test processes at once")
    p.add_argument("--json", type=Path, help="write the results (with every completion) here")


def run(args) -> None:
    out = evaluate(args.model, args.set, args.max_tokens, args.limit, args.workers)
    out["command"] = (f"quicksilver eval api --set {args.set} --max-tokens {args.max_tokens}"
                      + (f" --limit {args.limit}" if args.limit else "") + (f" --json {args.json}" if args.json else ""))
    if args.json:
        args.json.write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps({k: v for k, v in out.items() if k != "rows"}, indent=1))

"""quicksilver eval infill: HumanEval infilling (single-line, multi-line, random-span) in oracle or unknown length."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

from evals.sandbox import run_many
from evals.tasks import SETS, Task, infill_tasks
from runtime.autoregressive import make_engine
from runtime.engine import REFRESH_EVERY, Engine, Request
from runtime.postprocess import indent_of, heal
from runtime.session import load

UNKNOWN_WINDOW = {"single-line": 32, "multi-line": 128, "random-span": 64}  # slots when the length is unknown
BLOCK = 32   # multi-line and random-span windows decode in blocks of this many slots, left to right (each step
             # runs only the block against the cached rest); a single line is one block


def block_for(set_name: str) -> int | None:
    return None if set_name == "single-line" else BLOCK


def oracle_window(tok, task: Task) -> int:
    """The answer's token count as the healed window will hold it (without the forced cursor-line text)."""
    _, forced, _ = heal(task.prefix, task.suffix)
    first = task.suffix.split("\n", 1)[0]
    w = indent_of(first)
    middle = task.middle + (w[:-1] if w and first.strip() else "")
    return max(1, len(tok.encode(forced + middle)) - len(tok.encode(forced)))


def normalise(code: str) -> list[str]:
    return [" ".join(line.split()) for line in code.splitlines() if line.strip()]


def generate(engine: Engine, task: Task, set_name: str, length: str, eom_bias: float | None = None,
             threshold: float | None = None):
    knobs = {"threshold": threshold} if threshold is not None else {}
    if length == "oracle":
        req = Request(prefix=task.prefix, suffix=task.suffix, max_new_tokens=oracle_window(engine.tok, task),
                      eom_bias=0.0, block=block_for(set_name), **knobs)
    else:
        if eom_bias is not None:
            knobs["eom_bias"] = eom_bias
        req = Request(prefix=task.prefix, suffix=task.suffix, max_new_tokens=UNKNOWN_WINDOW[set_name],
                      block=block_for(set_name),
                      stop=("\n",) if set_name == "single-line" else (), **knobs)
    out = engine.complete(req)
    text = out.text
    if set_name == "single-line":  # one line is asked for: cut at its end
        text = text.split("\n", 1)[0] + "\n"
    return text, out.stats


def pick(tasks: list, limit: int | None) -> list:
    """`limit` tasks spread evenly over the set (rather than the first few problems)."""
    if not limit:
        return tasks
    return tasks[::max(1, len(tasks) // limit)][:limit]


def run_tasks(engine, tasks: list[Task], set_name: str, length: str, workers: int, eom_bias: float | None = None,
              threshold: float | None = None, desc: str = "") -> tuple[dict, list[dict]]:
    """Generate every task's middle with `engine` (diffusion or the autoregressive twin), then run the tests."""
    rows = []
    for task in tqdm(tasks, desc=desc or f"{set_name}/{length}", file=sys.stderr):
        text, stats = generate(engine, task, set_name, length, eom_bias, threshold)
        rows.append({"task_id": task.task_id, "completion": text, "exact": normalise(text) == normalise(task.middle),
                     **{k: stats[k] for k in ("ms", "steps", "forward_passes", "tokens")}})
    with tqdm(total=len(tasks), desc="tests", file=sys.stderr) as bar:
        outcomes = run_many([t.program(r["completion"]) for t, r in zip(tasks, rows)], workers, bar)
    for r, o in zip(rows, outcomes):
        r["passed"], r["outcome"] = o.passed, o.reason
    return summarise(rows, engine, set_name, length, eom_bias, threshold), rows


def summarise(rows: list[dict], engine, set_name: str, length: str, eom_bias: float | None,
              threshold: float | None) -> dict:
    model = engine.model
    ms = np.array([r["ms"] for r in rows])
    tokens, passes = sum(r["tokens"] for r in rows), sum(r["forward_passes"] for r in rows)
    causal = bool(model.card["config"].get("causal"))
    return {
        "set": set_name, "mode": length, "tasks": len(rows),
        "decoder": "autoregressive" if causal else "diffusion",
        "pass@1": float(np.mean([r["passed"] for r in rows])),
        "exact_match": float(np.mean([r["exact"] for r in rows])),
        "tokens_per_forward": tokens / max(1, passes),
        "forwards_per_token": passes / max(1, tokens),
        "tokens_per_s": 1000 * tokens / max(1e-9, ms.sum()),
        "p50_ms": float(np.percentile(ms, 50)), "p95_ms": float(np.percentile(ms, 95)),
        "eom_bias": None if causal else 0.0 if length == "oracle" else (
            eom_bias if eom_bias is not None else Request.eom_bias),
        "threshold": None if causal else threshold if threshold is not None else Request.threshold,
        "block": None if causal else block_for(set_name), "kv_cache": engine.kv_cache,
        "refresh_every": getattr(engine, "refresh_every", None),
        "model": str(model.model_dir), "model_file": model.model_file,
        "model_sha256": model.card["files"].get(model.model_file, ""),
    }


def evaluate(model_dir: Path | None, set_name: str, length: str, limit: int | None, workers: int,
             precision: str = "int8", eom_bias: float | None = None, threshold: float | None = None,
             kv_cache: bool = True, refresh_every: int = REFRESH_EVERY) -> tuple[dict, list[dict]]:
    engine = make_engine(load(model_dir, prefer=precision), kv_cache=kv_cache, refresh_every=refresh_every)
    return run_tasks(engine, pick(infill_tasks(set_name), limit), set_name, length, workers, eom_bias, threshold)


def add_arguments(p) -> None:
    p.add_argument("--model", type=Path, help="model directory (default: the shipped model)")
    p.add_argument("--set", choices=SETS, default="single-line", help="infilling set")
    p.add_argument("--length", choices=["oracle", "unknown"], default="unknown",
                   help="oracle: the window is exactly the answer's length; unknown: a fixed window ended by <|eom|>")
    p.add_argument("--limit", type=int, help="evaluate this many tasks, spread evenly over the set")
    p.add_argument("--workers", type=int, default=os.cpu_count(), help="parallel test processes")
    p.add_argument("--precision", choices=["int8", "fp32"], default="int8", help="which ONNX file to prefer")
    p.add_argument("--threshold", type=float, help="override the engine's confidence threshold for committing slots")
    p.add_argument("--eom-bias", type=float, help="unknown length: override the engine's <|eom|> logit bias")
    p.add_argument("--no-kv-cache", dest="kv_cache", action="store_false",
                   help="recompute the whole sequence at every step (no context key/value cache)")
    p.add_argument("--refresh-every", type=int, default=REFRESH_EVERY,
                   help="with the cache: recompute the whole sequence every N steps (0: only the first)")
    p.add_argument("--json", type=Path, help="write the summary here (and the per-task rows beside it)")


def write(path: Path | None, summary, rows: list[dict]) -> None:
    """The summary as JSON at `path`, the per-task rows beside it (PATH with .tasks.jsonl)."""
    print(json.dumps(summary, indent=1))
    if path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(summary, indent=1) + "\n")
        path.with_suffix(".tasks.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def run(args) -> None:
    summary, rows = evaluate(args.model, args.set, args.length, args.limit, args.workers, args.precision, args.eom_bias,
                             args.threshold, args.kv_cache, args.refresh_every)
    write(args.json, summary, rows)

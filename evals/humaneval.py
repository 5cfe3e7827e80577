"""quicksilver eval humaneval: HumanEval completion (the function body from its signature and docstring).

pass@1, and pass@k with the unbiased estimator when several samples per problem are drawn (temperature > 0).
Diffusion decodes the body left to right in blocks; the autoregressive twin token by token.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

from evals.infill import pick, write
from evals.metrics import pass_at_k
from evals.sandbox import run_many
from evals.tasks import load_problems
from runtime.autoregressive import make_engine
from runtime.request import Request
from runtime import DECODING_REVISION
from runtime.session import load

STOPS = ("\ndef ", "\nclass ", "\nif __name__", "\nprint(", "\n#", "\nassert ")
MAX_TOKENS = 192
BLOCK = 32


def program(problem: dict, completion: str) -> str:
    return f"{problem['prompt']}{completion}\n\n{problem['test']}\n\ncheck({problem['entry_point']})\n"


def evaluate(model_dir: Path | None, limit: int | None, samples: int, temperature: float, workers: int,
             max_tokens: int = MAX_TOKENS, block: int = BLOCK, threshold: float | None = None,
             precision: str = "int8", syntax: bool = True) -> tuple[dict, list[dict]]:
    if samples > 1 and temperature == 0:
        raise SystemExit("several samples need --temperature > 0 (at 0 every sample is the same)")
    engine = make_engine(load(model_dir, prefer=precision))
    problems = pick(load_problems(), limit)
    rows = []
    knobs = {"threshold": threshold} if threshold is not None else {}
    for p in tqdm(problems, desc="humaneval", file=sys.stderr):
        for s in range(samples):
            out = engine.complete(Request(prefix=p["prompt"], mode="completion", max_new_tokens=max_tokens, window=max_tokens,
                                          block=block, stop=STOPS, temperature=temperature, seed=s,
                                          language="python" if syntax else None, **knobs))
            rows.append({"task_id": p["task_id"], "sample": s, "completion": out.text,
                         **{k: out.stats[k] for k in ("ms", "steps", "forward_passes", "tokens", "stop_reason")}})
    by_id = {p["task_id"]: p for p in problems}
    with tqdm(total=len(rows), desc="tests", file=sys.stderr) as bar:
        outcomes = run_many([program(by_id[r["task_id"]], r["completion"]) for r in rows], workers, bar)
    for r, o in zip(rows, outcomes):
        r["passed"], r["outcome"] = o.passed, o.reason
    passed = {tid: sum(r["passed"] for r in rows if r["task_id"] == tid) for tid in by_id}
    ms = np.array([r["ms"] for r in rows])
    tokens, passes = sum(r["tokens"] for r in rows), sum(r["forward_passes"] for r in rows)
    model = engine.model
    causal = bool(model.card["config"].get("causal"))
    summary = {
        "set": "humaneval", "mode": "completion", "tasks": len(problems), "samples": samples,
        "temperature": temperature, "decoder": "autoregressive" if causal else "diffusion",
        **{f"pass@{k}": float(np.mean([pass_at_k(samples, c, k) for c in passed.values()]))
           for k in (1, 10, 100) if k <= samples},
        "tokens_per_forward": tokens / max(1, passes), "forwards_per_token": passes / max(1, tokens),
        "tokens_per_s": 1000 * tokens / max(1e-9, ms.sum()),
        "p50_ms": float(np.percentile(ms, 50)), "p95_ms": float(np.percentile(ms, 95)),
        "max_tokens": max_tokens, "block": None if causal else block, "syntax": syntax,
        "threshold": None if causal else threshold if threshold is not None else Request.threshold,
        "model": str(model.model_dir), "model_file": model.model_file,
        "model_sha256": model.card["files"].get(model.model_file, ""), "decoding_revision": DECODING_REVISION,
    }
    return summary, rows


def add_arguments(p) -> None:
    p.add_argument("--model", type=Path, help="model directory: diffusion (default: the shipped model) or the twin")
    p.add_argument("--limit", type=int, help="evaluate this many problems, spread evenly over the 164")
    p.add_argument("--samples", type=int, default=1, help="samples per problem (pass@k for k <= samples)")
    p.add_argument("--temperature", type=float, default=0.0, help="0: greedy (one sample is enough)")
    p.add_argument("--max-tokens", type=int, default=MAX_TOKENS, help="longest body, in tokens")
    p.add_argument("--block", type=int, default=BLOCK, help="diffusion: slots decoded together, left to right")
    p.add_argument("--threshold", type=float, help="diffusion: override the confidence threshold")
    p.add_argument("--no-syntax", dest="syntax", action="store_false",
                   help="decode without the Python syntax guidance an editor's request gets (the language unset)")
    p.add_argument("--workers", type=int, default=os.cpu_count(), help="parallel test processes")
    p.add_argument("--precision", choices=["int8", "fp32"], default="int8", help="which ONNX file to prefer")
    p.add_argument("--json", type=Path, help="write the summary here (and the per-sample rows beside it)")


def run(args) -> None:
    summary, rows = evaluate(args.model, args.limit, args.samples, args.temperature, args.workers, args.max_tokens,
                             args.block, args.threshold, args.precision, args.syntax)
    write(args.json, summary, rows)

"""quicksilver eval parallel: tokens per forward pass where editors ask, one model against another, in one run.

Held-out editor cursors (evals/editor.py, seed 1: the reported seed) asked as every editor path asks
(runtime.engine.editor_request), of each model in turn, cursor by cursor (a shared, noisy machine sees both
alike). Per model: tokens per pass, passes per answer, the first line exactly right (of all cursors; of those
shown under the editors' default abstention), and latency; between them, how often the two answers are the same
text. What a distilled model (`quicksilver distill`) must show: more tokens per pass at the same answers.
With --threshold (repeatable) every model is also asked at each commit threshold: the trade between tokens per
pass and answers, per model, in the same run. With --oracle, the ceiling of a commit rule (`oracle`).
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from evals.editor import cursors, heldout_files, judge

REPORT_SEED, PER_KIND = 1, 40


def ask(engine, c: dict, threshold: float | None = None) -> dict:
    from runtime.request import editor_min_confidence, editor_request, withheld
    knobs = {"threshold": threshold} if threshold is not None else {}
    t0 = time.perf_counter()
    out = engine.complete(editor_request(c["prefix"], c["suffix"], **knobs))
    ms = 1000 * (time.perf_counter() - t0)
    verdict = judge(c, out.text)
    return {"text": out.text, "passes": out.stats["forward_passes"], "tokens": out.stats["tokens"], "ms": ms,
            "exact": verdict["exact"], "degenerate": verdict["degenerate"],
            "shown": verdict["shown"] and not withheld(out, editor_min_confidence(out))}


def summary(rows: list[dict]) -> dict:
    shown = [r for r in rows if r["shown"]]
    return {"tokens_per_pass": sum(r["tokens"] for r in rows) / max(1, sum(r["passes"] for r in rows)),
            "passes_median": float(np.median([r["passes"] for r in rows])),
            "passes_mean": float(np.mean([r["passes"] for r in rows])),
            "exact_rate": float(np.mean([r["exact"] for r in rows])),
            "shown_rate": len(shown) / max(1, len(rows)),
            "shown_precision": sum(r["exact"] for r in shown) / max(1, len(shown)),
            "degenerate_rate": sum(r["degenerate"] for r in shown) / max(1, len(shown)),
            "p50_ms": float(np.median([r["ms"] for r in rows])),
            "p95_ms": float(np.percentile([r["ms"] for r in rows], 95))}


def evaluate(models: list[Path], per_kind: int = PER_KIND, seed: int = REPORT_SEED,
             thresholds: list[float] | None = None) -> dict:
    from runtime.engine import Engine
    from runtime.session import load
    engines = [Engine(load(m)) for m in models]
    configs = [(m, e, t) for m, e in zip(models, engines) for t in (thresholds or [None])]
    points = cursors(heldout_files(), per_kind, seed)
    rows: list[list[dict]] = [[] for _ in configs]
    for c in points:
        for (_, e, t), out in zip(configs, rows):
            e.clear_cache()   # every answer from a cold context: the models are compared, not the caches
            out.append(ask(e, c, t))
    result = {"cursors": len(points), "seed": seed,
              "models": [{"model": str(m), "model_sha256": e.model.card["files"].get(e.model.model_file, ""),
                          **({"threshold": t} if t is not None else {}), **summary(r)}
                         for (m, e, t), r in zip(configs, rows)]}
    if len(configs) == 2:
        result["same_text"] = float(np.mean([a["text"] == b["text"] for a, b in zip(*rows)]))
        by_kind = {}
        for kind in sorted({c["kind"] for c in points}):
            pick = [i for i, c in enumerate(points) if c["kind"] == kind]
            by_kind[kind] = [summary([r[i] for i in pick])["tokens_per_pass"] for r in rows]
        result["tokens_per_pass_by_kind"] = by_kind
    return result


def decode(engine, req, commit_with=None):
    """One request decoded cold, to the end; returns its Denoiser (`commit_with`: SamplerOptions.commit_with)."""
    engine.clear_cache()
    d = engine.denoiser(req)
    d.opts.commit_with = commit_with
    while not d.done:
        d.advance(engine.forward_batch([d])[0])
    return d


def oracle(model: Path | None, per_kind: int = PER_KIND, seed: int = REPORT_SEED) -> dict:
    """The ceiling of any commit rule that keeps the shipped decoding's answers (Learn2PD's oracle): each cursor is
    decoded as shipped, then again committing, at every step, each predicted slot whose argmax already is the token
    the shipped decoding ended with there (the shipped rule where none is). Counted over the cursors whose second
    answer is the first's (committing in another order can change what the model predicts next)."""
    from runtime.engine import Engine
    from runtime.request import editor_request
    from runtime.session import load
    engine = Engine(load(model))
    rows = []
    for c in cursors(heldout_files(), per_kind, seed):
        req = lambda: editor_request(c["prefix"], c["suffix"])
        shipped = decode(engine, req())
        final = shipped.ids[shipped.start:shipped.end].copy()
        best = decode(engine, req(), lambda step: known if (known := step.tokens == final[step.slots]).any()
                      else step.commit)
        rows.append({"kind": c["kind"], "block": not req().single_line, "tokens": shipped.stats.tokens,
                     "passes": shipped.stats.forward_passes, "oracle_passes": best.stats.forward_passes,
                     "same": bool((best.ids[best.start:best.end] == final).all())})
    out = {"cursors": len(rows), "seed": seed, "same_answer": float(np.mean([r["same"] for r in rows])),
           "model_sha256": engine.model.card["files"].get(engine.model.model_file, "")}
    for shape, these in (("line", [r for r in rows if r["same"] and not r["block"]]),
                         ("block", [r for r in rows if r["same"] and r["block"]])):
        if these:
            tokens = sum(r["tokens"] for r in these)
            out[shape] = {"cursors": len(these), "tokens_per_pass": tokens / max(1, sum(r["passes"] for r in these)),
                          "oracle_tokens_per_pass": tokens / max(1, sum(r["oracle_passes"] for r in these)),
                          "passes_median": float(np.median([r["passes"] for r in these])),
                          "oracle_passes_median": float(np.median([r["oracle_passes"] for r in these]))}
    return out


def add_arguments(p) -> None:
    p.add_argument("--model", type=Path, action="append", required=True,
                   help="model directory (give two to compare them in one run)")
    p.add_argument("--per-kind", type=int, default=PER_KIND, help="cursors of each kind")
    p.add_argument("--seed", type=int, default=REPORT_SEED, help="cursor seed (0 chooses thresholds; 1 reports)")
    p.add_argument("--threshold", type=float, action="append",
                   help="commit threshold to ask every model at (repeatable; default: the requests' own)")
    p.add_argument("--oracle", action="store_true",
                   help="the ceiling of any commit rule that keeps the model's answers (of the first --model)")
    p.add_argument("--json", type=Path, help="write the result here")


def run(args) -> None:
    if args.oracle:
        out = {"oracle": oracle(args.model[0], args.per_kind, args.seed)}
    else:
        out = evaluate(args.model, args.per_kind, args.seed, args.threshold)
    out["command"] = "quicksilver eval parallel " + " ".join(f"--model {m}" for m in args.model) + \
        "".join(f" --threshold {t:g}" for t in args.threshold or []) + (" --oracle" if args.oracle else "") + \
        f" --per-kind {args.per_kind} --seed {args.seed}"
    text = json.dumps(out, indent=1)
    if args.json:
        args.json.write_text(text + "\n")
    print(text)

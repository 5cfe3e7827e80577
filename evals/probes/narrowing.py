"""Probe behind decoding revision 7's narrowing (docs/speed.md): the shipped model with the typed pieces run in
the first pass only (`Engine(narrow_given=True)`) against in every pass, in process, cursor by cursor in turn.

    python -m evals.probes.narrowing typing 8      # the typing replay's keystrokes (8 lines)
    python -m evals.probes.narrowing editor 0,2    # editor cursors of these seeds (40 per kind), asked cold

Prints latency, passes, tokens per pass, how often the two give the same text, and how often / how closely the
text is the file's (the rest of the typed line; the editor eval's exact first line). Held-out files only.
"""
from __future__ import annotations

import difflib
import sys
import time

import numpy as np


def engines(model=None):
    from runtime.engine import Engine
    from runtime.session import load
    m = load(model)
    return {"every pass": Engine(m, narrow_given=False), "first pass only": Engine(m)}


def typing(lines: int) -> None:
    from evals.bench import typing_lines
    from server.routes.completions import CompletionBody, to_requests
    variants = engines()
    rows = {k: [] for k in variants}
    for ln in typing_lines(lines):
        for k in range(len(ln["line"]) + 1):
            truth = ln["line"][k:].strip()
            for name, e in variants.items():
                req = to_requests(CompletionBody(prompt=ln["before"] + ln["line"][:k], suffix=ln["after"],
                                                 max_tokens=32, stop="\n"))[0]
                t0 = time.perf_counter()
                c = e.complete(req)
                text = c.text.strip()
                rows[name].append({"ms": 1000 * (time.perf_counter() - t0), "passes": c.stats["forward_passes"],
                                   "tokens": c.stats["tokens"], "text": c.text, "right": bool(text) and text == truth,
                                   "similarity": difflib.SequenceMatcher(None, text, truth).ratio()})
    report(rows)


def editor(seeds: list[int]) -> None:
    from evals.editor import cursors, heldout_files, judge
    from evals.parallel import ask
    variants = engines()
    for seed in seeds:
        rows = {k: [] for k in variants}
        for c in cursors(heldout_files(), 40, seed):
            for name, e in variants.items():
                e.clear_cache()
                r = ask(e, c)
                rows[name].append({**r, "right": r["exact"], "similarity": 0.0})
        print(f"seed {seed}:")
        report(rows)


def report(rows: dict) -> None:
    first = next(iter(rows.values()))
    for name, r in rows.items():
        col = lambda k: np.array([x[k] for x in r], float)
        same = np.mean([a["text"] == b["text"] for a, b in zip(r, first)])
        print(f"  {name:>15}: {len(r)} requests, p50 {np.median(col('ms')):.1f} ms, passes {np.median(col('passes')):.0f},"
              f" {col('tokens').sum() / col('passes').sum():.2f} tokens/pass, right {col('right').mean():.3f}, similarity"
              f" {col('similarity').mean():.3f}, the same text as '{next(iter(rows))}' {same:.3f}")


if __name__ == "__main__":
    kind, arg = sys.argv[1], sys.argv[2]
    typing(int(arg)) if kind == "typing" else editor([int(s) for s in arg.split(",")])

"""Probe behind `runtime.answers` (typing through a kept answer): on held-out lines typed character by character
(the typing replay's way: the rest of the line is gone, a single-line request after every keystroke, as
/v1/completions builds it), one engine answers every keystroke by decoding and another types through the answers
it keeps, keystroke by keystroke in turn.

    python -m evals.probes.through 40 2                       # 40 held-out lines of seed 2 (chosen on); seed 1
                                                              # checks; the typing replay reports seed 0
    python -m evals.probes.through 40 2 --bars 0,0.2,0.3,0.5  # also engines keeping answers at these confidences
    python -m evals.probes.through 40 2 --editor              # asked as editors ask (runtime.engine.editor_request):
                                                              # a block at the blank line before the first keystroke

It prints, per engine: keystrokes, how many were answered from a kept answer, how many answers' first lines were the
rest of the line, how many an editor shows (confidence at its threshold) and how many of those were right, and the in-process
latency p50 / p95.
"""
from __future__ import annotations

import argparse
import time


def main(lines: int, seed: int, bars: list[float], editor: bool = False) -> None:
    import numpy as np

    from evals.bench import typing_lines
    from runtime.answers import KeptAnswers
    from runtime.engine import Engine, editor_min_confidence, editor_request
    from runtime.session import load
    from server.routes.completions import CompletionBody, to_requests

    model = load(None)
    engines = {"decoded every keystroke": Engine(model, type_through=False), "typed through": Engine(model)}
    for bar in bars:
        engines[f"typed through, answers kept at confidence >= {bar:g}"] = engine = Engine(model)
        engine.answers = KeptAnswers(engine.count_tokens, bar=bar)
    rows = {name: [] for name in engines}
    for ln in typing_lines(lines, seed):
        for k in range(len(ln["line"]) + 1):
            for name, engine in engines.items():
                prefix = ln["before"] + ln["line"][:k]
                req = editor_request(prefix, ln["after"]) if editor else to_requests(CompletionBody(
                    prompt=prefix, suffix=ln["after"], max_tokens=32, stop="\n"))[0]
                t0 = time.perf_counter()
                c = engine.complete(req)
                first = c.text.split("\n", 1)[0].strip()
                right = bool(first) and first == ln["line"][k:].strip()
                rows[name].append({"ms": 1000 * (time.perf_counter() - t0), "right": right,
                                   "through": c.stats["typed_through"],
                                   "shown": bool(c.text.strip()) and c.stats["confidence"] >= editor_min_confidence(c)})
    for name, rs in rows.items():
        ms, shown = np.array([r["ms"] for r in rs]), [r for r in rs if r["shown"]]
        print(f"{name}: {len(rs)} keystrokes, {sum(r['through'] for r in rs)} typed through; the rest of the line "
              f"{sum(r['right'] for r in rs)}; shown {len(shown)}, right {sum(r['right'] for r in shown)}; "
              f"p50 {np.percentile(ms, 50):.0f} ms, p95 {np.percentile(ms, 95):.0f} ms")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("lines", type=int)
    p.add_argument("seed", type=int, nargs="?", default=2)
    p.add_argument("--bars", type=lambda s: [float(x) for x in s.split(",")], default=[])
    p.add_argument("--editor", action="store_true", help="ask as the editors ask (a block at a blank line)")
    a = p.parse_args()
    main(a.lines, a.seed, a.bars, a.editor)

"""Probe behind `runtime.postprocess.invents_a_name`: how often the shipped model glues letters onto a name the
user finished typing (`item.price` + "rs"), and what cutting those answers costs, on held-out lines typed
character by character (the typing replay's way: the rest of the line is gone, the cursor at its end).

    python -m evals.probes.names 40 1      # 40 held-out lines of seed 1 (the typing replay uses seed 0)

For every keystroke that leaves the cursor right after a name character, the engine (without the cut) answers a
single-line request; the probe prints how many answers the rule cuts, and of those how many were the rest of the
line or a correct start of it (what the cut loses), against the same counts for the answers it keeps.
"""
from __future__ import annotations

import sys


def main(lines: int, seed: int) -> None:
    from evals.bench import typing_lines
    from runtime import postprocess
    from runtime.engine import EDITOR_MIN_CONFIDENCE, Engine
    from runtime.session import load
    from server.routes.completions import CompletionBody, to_requests

    rule = postprocess.invents_a_name
    postprocess.invents_a_name = lambda *a: False   # see every answer uncut
    e = Engine(load(None))
    rows = []
    for ln in typing_lines(lines, seed):
        for k in range(1, len(ln["line"]) + 1):
            if not (ln["line"][k - 1].isalnum() or ln["line"][k - 1] == "_"):
                continue
            prefix, truth = ln["before"] + ln["line"][:k], ln["line"][k:]
            c = e.complete(to_requests(CompletionBody(prompt=prefix, suffix=ln["after"], max_tokens=32,
                                                      stop="\n"))[0])
            if not c.text.strip():
                continue
            rows.append({"cut": rule(c.text, prefix, ln["after"]), "right": c.text.strip() == truth.strip(),
                         "start": truth.startswith(c.text.rstrip()),
                         "shown": c.stats["confidence"] >= EDITOR_MIN_CONFIDENCE})
    for name, keep in (("every answer", lambda r: True), (f"shown (confidence >= {EDITOR_MIN_CONFIDENCE})",
                                                          lambda r: r["shown"])):
        rs = [r for r in rows if keep(r)]
        cut = [r for r in rs if r["cut"]]
        kept = [r for r in rs if not r["cut"]]
        print(f"{name}: {len(rs)} non-empty answers after a name character")
        for label, group in (("cut", cut), ("kept", kept)):
            print(f"  {label:5s} {len(group):4d}: the rest of the line {sum(r['right'] for r in group):3d}, "
                  f"a correct start of it {sum(r['start'] for r in group):3d}")


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 1)

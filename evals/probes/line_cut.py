"""Probe behind decoding revision 9's cut inside a line (`runtime.syntax.keep_valid`): held-out lines typed
character by character (the typing replay's lines), a request asked as editors ask (`runtime.engine.editor_request`)
after every keystroke, one engine whose post-processing keeps whole lines only and one that also cuts a one-line
completion between tokens, keystroke by keystroke in turn.

    python -m evals.probes.line_cut 20 2      # 20 held-out lines of seed 2 (the typing replay reports seed 0)

It prints, per rule: keystrokes, non-empty answers, answers whose first line is the rest of the line, and of the
answers an editor shows (confidence at its threshold) how many and how many right.
"""
from __future__ import annotations

import sys


def main(lines: int, seed: int) -> None:
    import runtime.showing as showing
    from evals.bench import typing_lines
    from runtime.engine import Engine, editor_min_confidence, editor_request
    from runtime.session import load
    from runtime.syntax import keep_valid

    model = load(None)
    rules = {"whole lines": lambda *a: keep_valid(*a, cut_line=False), "cut inside the line": keep_valid}
    engines = {name: Engine(model, type_through=False) for name in rules}
    rows = {name: [] for name in rules}
    try:
        for ln in typing_lines(lines, seed):
            for k in range(1, len(ln["line"]) + 1):
                for name, engine in engines.items():
                    showing.keep_valid = rules[name]
                    c = engine.complete(editor_request(ln["before"] + ln["line"][:k], ln["after"]))
                    first = c.text.split("\n", 1)[0].strip()
                    right = bool(first) and first == ln["line"][k:].strip()
                    shown = bool(c.text.strip()) and c.stats["confidence"] >= editor_min_confidence(c)
                    rows[name].append((bool(c.text.strip()), right, shown))
    finally:
        showing.keep_valid = keep_valid
    for name, rs in rows.items():
        print(f"{name}: {len(rs)} keystrokes, {sum(r[0] for r in rs)} answered, {sum(r[1] for r in rs)} the rest of "
              f"the line; shown {sum(r[2] for r in rs)}, right {sum(r[1] and r[2] for r in rs)}")


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 2)

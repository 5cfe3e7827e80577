"""A refactor of the engine changes no answer: requests of every shape (API completions and infills, editor lines
and blocks, an oracle window, stop sequences, sampling with a seed, typing through a kept answer, repairs and
rewrites) on cursors of held-out files, against the text, tokens, passes, stop reason and confidence recorded at
the same decoding revision (tests/data/equivalence.json).

    python -m tests.test_equivalence --write     # record them anew: only when DECODING_REVISION changes, or
                                                 # the model or its calibrator is refitted (the record names them)
"""
from __future__ import annotations

import json
import sys
import sysconfig
from pathlib import Path

import pytest

from tests.conftest import ROOT, SHIPPED

RECORD = ROOT / "tests" / "data" / "equivalence.json"
PER_KIND, SEED = 8, 11   # cursors of each editor kind; a seed no eval reports


def requests() -> list:
    from evals.editor import cursors, heldout_files
    from runtime.request import Request, editor_request
    from server.routes.completions import CompletionBody, to_requests
    out = []
    stdlib = Path(sysconfig.get_paths()["stdlib"])   # not site-packages: a clean install may get newer packages
    for i, c in enumerate(cursors([p for p in heldout_files() if p.is_relative_to(stdlib)], PER_KIND, SEED)):
        p, s = c["prefix"][-3000:], c["suffix"][:3000]
        out += [to_requests(CompletionBody(prompt=p, suffix=s, max_tokens=32, stop="\n"))[0],
                to_requests(CompletionBody(prompt=p, suffix=s, max_tokens=64))[0],
                to_requests(CompletionBody(prompt=p, max_tokens=24))[0],
                editor_request(p, s), editor_request(p, s, single_line=False),
                Request(prefix=p, suffix=s, window=len(c["expected"]) // 4 + 1, max_new_tokens=64),
                Request(prefix=p, suffix=s, temperature=0.8, seed=i, max_new_tokens=16, stop=("\n",)),
                editor_request(p + c["expected"].strip()[:3], s)]   # typed on: may be typed through
        lines = c["prefix"].split("\n")
        if len(lines) > 4:   # the cursor's line and the one above, as a block to repair and to rewrite
            block = "\n".join(lines[-3:-1]) + "\n"
            before = "\n".join(lines[:-3]) + "\n"
            for edit in ("repair", "all"):
                out.append(Request(prefix=before[-3000:], suffix=lines[-1] + c["suffix"][:3000], mode="edit",
                                   existing=block, edit=edit, language="python"))
    return out


def answers() -> list[dict]:
    import runtime.names
    from runtime.engine import Engine
    from runtime.session import load
    engine = Engine(load(SHIPPED))
    rows, budget = [], runtime.names.BUDGET_S
    runtime.names.BUDGET_S = 600   # names analysis always finishes: a slow first analysis is not another answer
    try:
        done = [(req, engine.complete(req)) for req in requests()]
    finally:
        runtime.names.BUDGET_S = budget
    for _, c in done:
        rows.append({"text": c.text, "tokens": c.stats["tokens"], "passes": c.stats["forward_passes"],
                     "stop": c.stats["stop_reason"], "confidence": round(c.stats["confidence"], 5),
                     "through": bool(c.stats.get("typed_through")), "refused": c.stats.get("refused")})
    return rows


def model_files() -> dict:
    """The shipped model's files as its card hashes them (the calibrator among them), shortened."""
    card = json.loads((SHIPPED / "card.json").read_text())
    return {name: digest[:12] for name, digest in sorted(card["files"].items())}


def test_answers_are_the_recorded_ones():
    from runtime import DECODING_REVISION
    record = json.loads(RECORD.read_text())
    if (record["revision"], record.get("model")) != (DECODING_REVISION, model_files()):
        pytest.fail(f"the record was made at decoding revision {record['revision']} with model files "
                    f"{record.get('model')}; the engine is at {DECODING_REVISION} with {model_files()}: record it "
                    "anew (python -m tests.test_equivalence --write)")
    now = answers()
    assert len(now) == len(record["answers"]) >= 200
    differ = [(i, a, b) for i, (a, b) in enumerate(zip(record["answers"], now)) if a != b]
    assert not differ, differ[:5]


if __name__ == "__main__" and "--write" in sys.argv:
    from runtime import DECODING_REVISION
    rows = answers()
    RECORD.write_text(json.dumps({"revision": DECODING_REVISION, "model": model_files(), "answers": rows},
                                 indent=0) + "\n")
    print(f"{len(rows)} answers recorded at decoding revision {DECODING_REVISION}")

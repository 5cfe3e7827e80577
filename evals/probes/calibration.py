"""Probe behind the calibrator's fit (`quicksilver eval calibrate`): which features, and which requests to fit on.

Held-out editor cursors of seeds the editor eval does not report (2 and up), each asked as /v1/completions asks and
as the editors ask (`evals.calibrate.ASKED`), on the shipped model; then, leaving one seed out at a time, each
variant is fitted on the other seeds and scored on the one left out. Per way of asking it prints the AUC, the
log-loss, and the precision of the answers an editor would show at the threshold rule's coverage (the best-scored
answers, as many as 25 % of the cursors: how `EDITOR_MIN_CONFIDENCE` is chosen).

    python -m evals.probes.calibration 2,3,4,5,6,7,8,9 40     # seeds, cursors per kind

The decoded answers are kept in runs/calibration-rows.json (delete it after a decoding change).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

ROWS = Path("runs/calibration-rows.json")
COVERAGE = 0.25


def line_cut(text: str, raw: str) -> float:
    """1 when post-processing ended the shown text inside a line the model wrote on (a syntax cut of an overfilled
    line), not at a line's end."""
    t = text.rstrip("\n")
    return float(bool(t) and raw.startswith(t) and len(raw.rstrip()) > len(t) and raw[len(t)] != "\n")


def variants() -> dict[str, tuple[tuple[str, ...], tuple[str, ...]]]:
    from runtime.confidence import FEATURES
    base = tuple(FEATURES)
    return {"shipped features, fit on api": (base, ("api",)),
            "shipped features, fit on both": (base, ("api", "editor")),
            "+ line_cut, fit on both": (base + ("line_cut",), ("api", "editor")),
            "+ line_cut, fit on editor": (base + ("line_cut",), ("editor",)),
            "least probability only, fit on both": (("min_logp",), ("api", "editor")),
            "probabilities + ended + cut, fit on both": (("min_logp", "mean_logp", "first_logp", "ended", "cut",
                                                          "line_cut"), ("api", "editor"))}


def rows_for(seeds: list[int], per_kind: int) -> list[dict]:
    from evals.calibrate import EVAL_PER_KIND, EVAL_SEEDS, collect
    from evals.editor import cursors, heldout_files
    from runtime.engine import Engine
    from runtime.session import load
    cached = json.loads(ROWS.read_text()) if ROWS.exists() else {}
    if cached.get("seeds") == seeds and cached.get("per_kind") == per_kind:
        return cached["rows"]
    engine = Engine(load(None), type_through=False)
    engine.calibrator = None
    files = heldout_files()
    skip = {(c["file"], c["line"]) for s in EVAL_SEEDS for c in cursors(files, EVAL_PER_KIND, s)}
    rows = collect(engine, seeds, per_kind, skip, asked=("api", "editor"))
    counts = {s: sum(1 for c in cursors(files, per_kind, s) if (c["file"], c["line"]) not in skip) for s in seeds}
    ROWS.parent.mkdir(exist_ok=True)
    ROWS.write_text(json.dumps({"seeds": seeds, "per_kind": per_kind, "cursors": counts, "rows": rows}))
    return rows


def main(seeds: list[int], per_kind: int) -> None:
    from evals.calibrate import auc, fit
    from runtime.confidence import Calibrator
    rows = rows_for(seeds, per_kind)
    cursors = json.loads(ROWS.read_text())["cursors"]
    for r in rows:
        r["features"]["line_cut"] = line_cut(r["text"], r["raw"])
    shipped = Calibrator.load(Path("model/default"), json.loads(Path("model/default/card.json").read_text())
                              ["files"]["model.int8.onnx"])
    scorers = {"shipped calibrator (no refit)": lambda train: shipped}
    for name, (names, asked) in variants().items():
        def refit(train, names=names, asked=asked):
            w, b, _ = fit([r for r in train if r["asked"] in asked], names)
            return Calibrator(w, b)
        scorers[name] = refit
    print(f"{len(rows)} answers at {sum(cursors.values())} cursors per way of asking, seeds {seeds}")
    for name, make in scorers.items():
        out = {}
        for how in ("api", "editor"):
            scores, labels, shown, right = [], [], 0, 0
            for s in seeds:
                cal = make([r for r in rows if r["seed"] != s])
                test = [r for r in rows if r["seed"] == s and r["asked"] == how]
                sc = [cal(r["features"]) for r in test]
                scores += sc
                labels += [r["exact"] for r in test]
                k = round(COVERAGE * cursors[str(s)])   # (JSON keys are strings)
                order = np.argsort(sc)[::-1][:k]
                shown += len(order)
                right += sum(test[i]["exact"] for i in order)
            p = np.clip(scores, 1e-6, 1 - 1e-6)
            y = np.asarray(labels, float)
            logloss = float(-(y * np.log(p) + (1 - y) * np.log(1 - p)).mean())
            out[how] = f"AUC {auc(scores, labels):.3f}, log-loss {logloss:.3f}, precision at 25 % {right}/{shown}"
        print(f"{name:45s} api: {out['api']}; editor: {out['editor']}")


if __name__ == "__main__":
    main([int(s) for s in sys.argv[1].split(",")], int(sys.argv[2]) if len(sys.argv) > 2 else 40)

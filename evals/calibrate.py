"""quicksilver eval calibrate: fit the confidence calibrator (runtime/confidence.py) of a model.

Cursors of the editor eval's kinds are drawn from its held-out files with seeds the editor eval does not report
(seed 0 chooses the editors' threshold, seed 1 is the reported run; the calibrator is fitted on 2–9 by default,
leaving out any cursor at a line those two seeds ask about), each asked as /v1/completions asks (an infill with
max_tokens 64, no language) and as the editors ask (a line or a block by the cursor, Python's rules), and labelled
with whether the first line shown is the file's line. A logistic regression of that label on the decoding's
features (torch's L-BFGS, a little L2) is written beside the model as calibrator.json, with the model file's hash,
so the engine uses it only for that model.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from evals.editor import cursors, heldout_files, judge
from runtime.confidence import CALIBRATOR_FILE, FEATURES, Calibrator, features
from runtime.session import list_in_card
from runtime.engine import Engine
from runtime.request import Request, editor_request
from runtime.session import load

SEEDS = (2, 3, 4, 5, 6, 7, 8, 9)   # leaving one out at a time, 7 seeds fitted as both ways of asking beat 5 as
                                   # the API asks (docs/history.md, "Probes behind single rules")
L2 = 1e-2


EVAL_SEEDS, EVAL_PER_KIND = (0, 1), 40   # the editor eval's cursors: never fitted on


# How a cursor is asked: as /v1/completions asks (an infill, max_tokens 64, no language), and as the editors ask
# (/infill and the language server: runtime.engine.editor_request, a line or a block by the cursor, Python).
ASKED = {"api": lambda c: Request(prefix=c["prefix"], suffix=c["suffix"], mode="infill", max_new_tokens=64),
         "editor": lambda c: editor_request(c["prefix"], c["suffix"])}


def collect(engine: Engine, seeds, per_kind: int, skip: set | None = None, asked=("api",)) -> list[dict]:
    """(features, exact) for every shown answer at these cursors, asked each way in `asked`, leaving out the
    (file, line)s in `skip`."""
    rows, files = [], heldout_files()
    for seed, c, how in ((s, c, how) for s in seeds for c in cursors(files, per_kind, s) for how in asked):
        if skip and (c["file"], c["line"]) in skip:
            continue
        req = ASKED[how](c)
        d = engine.denoiser(req)
        while not d.done:
            d.advance(engine.forward_batch([d])[0])
        out = engine.finish(req, d)
        if out.text.strip():
            rows.append({"features": features(d.generated_probs, out.text, out.raw, req.prefix, req.suffix,
                                              out.stats["stop_reason"], bool(d.opts.names)),
                         "exact": judge(c, out.text)["exact"], "seed": seed, "kind": c["kind"], "asked": how,
                         "text": out.text, "raw": out.raw})
    return rows


def fit(rows: list[dict], names=FEATURES, label: str = "exact") -> tuple[dict[str, float], float, float]:
    """Logistic regression weights (on the raw features `names`), bias, and the training log-loss."""
    import torch
    X = torch.tensor([[r["features"][k] for k in names] for r in rows], dtype=torch.float64)
    y = torch.tensor([float(r[label]) for r in rows], dtype=torch.float64)
    mu, sd = X.mean(0), X.std(0).clamp_min(1e-6)
    Z = (X - mu) / sd
    w = torch.zeros(len(names), dtype=torch.float64, requires_grad=True)
    b = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=500, line_search_fn="strong_wolfe")

    def loss():
        opt.zero_grad()
        value = torch.nn.functional.binary_cross_entropy_with_logits(Z @ w + b, y) + L2 * (w ** 2).sum()
        value.backward()
        return value
    opt.step(loss)
    with torch.no_grad():
        raw_w = w / sd
        raw_b = b - (w * mu / sd).sum()
        logloss = float(torch.nn.functional.binary_cross_entropy_with_logits(Z @ w + b, y))
    return dict(zip(names, raw_w.tolist())), float(raw_b), logloss


def auc(scores: list[float], labels: list[bool]) -> float:
    """The chance that a right answer scores above a wrong one."""
    s, y = np.asarray(scores), np.asarray(labels, bool)
    pos, neg = s[y], s[~y]
    if not len(pos) or not len(neg):
        return float("nan")
    return float(((pos[:, None] > neg[None]).mean() + 0.5 * (pos[:, None] == neg[None]).mean()))


def add_arguments(p) -> None:
    p.add_argument("--model", type=Path, help="model directory (default: the shipped model); the calibrator is "
                                              "written into it")
    p.add_argument("--seeds", default=",".join(map(str, SEEDS)), help="cursor seeds to fit on (not 0 or 1)")
    p.add_argument("--per-kind", type=int, default=40, help="cursors of each kind per seed")
    p.add_argument("--check-seed", type=int, default=0, help="cursors to compare the calibrator on (not fitted)")
    p.add_argument("--asked", default=",".join(ASKED), help=f"how each cursor is asked, of {', '.join(ASKED)} "
                                                            "(both: the editors' path and the API's)")


def run(args) -> None:
    from runtime import DECODING_REVISION
    seeds = [int(s) for s in args.seeds.split(",")]
    if {0, 1} & set(seeds):
        raise SystemExit("seeds 0 and 1 are the editor eval's (threshold and report): fit on others")
    if args.check_seed in seeds:
        raise SystemExit(f"the check seed {args.check_seed} is one of the seeds fitted on")
    model = load(args.model)
    engine = Engine(model, type_through=False)   # every cursor decoded
    engine.calibrator = None   # the features do not depend on it; the comparison below must not either
    files = heldout_files()   # another seed may draw a line the editor eval asks about: left out
    skip = {(c["file"], c["line"]) for s in EVAL_SEEDS for c in cursors(files, EVAL_PER_KIND, s)}
    asked = tuple(args.asked.split(","))
    if unknown := set(asked) - set(ASKED):
        raise SystemExit(f"--asked: unknown {sorted(unknown)}; choose of {', '.join(ASKED)}")
    rows = collect(engine, seeds, args.per_kind, skip, asked)
    weights, bias, logloss = fit(rows)
    sha = model.card["files"][model.model_file]
    cal = Calibrator(weights, bias, {
        "model_file": model.model_file, "model_sha256": sha, "seeds": seeds, "per_kind": args.per_kind,
        "answers": len(rows), "right": sum(r["exact"] for r in rows), "train_logloss": logloss,
        "left_out": "cursors at a (file, line) of the editor eval's seeds 0 and 1 (per kind 40)",
        "decoding_revision": DECODING_REVISION,
        "asked": list(asked),
        "command": f"quicksilver eval calibrate --seeds {args.seeds} --per-kind {args.per_kind} --asked {args.asked}"
                   + (f" --model {args.model}" if args.model else "")})
    check = collect(engine, [args.check_seed], args.per_kind, asked=asked)
    cal.info["check"] = {"seed": args.check_seed}
    for how in asked:
        these = [r for r in check if r["asked"] == how]
        labels = [r["exact"] for r in these]
        cal.info["check"][how] = {"answers": len(these),
                                  "auc_calibrated": auc([cal(r["features"]) for r in these], labels),
                                  "auc_least_probability": auc([r["features"]["min_logp"] for r in these], labels)}
    cal.save(model.model_dir / CALIBRATOR_FILE)
    list_in_card(model.model_dir, CALIBRATOR_FILE)
    print(json.dumps({k: v for k, v in cal.info.items()}, indent=1))
    print("weights:", {k: round(v, 3) for k, v in weights.items()}, "bias", round(bias, 3))

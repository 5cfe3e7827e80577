"""quicksilver eval commit-rule: a learned commit rule (Learn2PD's idea) on top of the shipped one, measured.

Held-out editor cursors of `--train-seeds` are decoded as shipped; every step's predicted slots (end markers
left to the shipped rule) become rows labelled by whether the slot's argmax already is the token the decoding
ended with there, with features the sampler has at hand (the slot's confidence, the margin over the runner-up,
its distance from the leftmost masked slot, whether the slot before it is filled, how many slots are masked, the
step). A logistic regression fitted on them (evals/calibrate.py `fit`) then also commits, at each step, every
slot it rates final at probability >= tau. On the cursors of `--seeds` (never the training ones, never
HumanEval), each tau's exactly-right share and tokens per pass against the shipped decoding, cursor by cursor
in turn. `eval parallel --oracle` gives the ceiling any such rule has.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from evals.editor import cursors, heldout_files, judge

FEATURES = ("log_conf", "log_margin", "log_distance", "left_filled", "log_masked", "log_step")
TRAIN_SEEDS, SEEDS, TAUS, PER_KIND = (4, 5, 6), (0, 2, 3), (0.9, 0.8, 0.7), 40


def step_features(step) -> np.ndarray:
    """(slots, FEATURES) for a sampler Step."""
    z = step.logits - step.logits.max(-1, keepdims=True)
    p = np.exp(z) / np.exp(z).sum(-1, keepdims=True)
    top2 = np.partition(p, -2, axis=-1)[:, -2:]
    n = len(step.slots)
    left = np.array([s == 0 or not step.masked[s - 1] for s in step.slots], float)
    first = np.flatnonzero(step.masked)[0]
    return np.stack([np.log(np.clip(step.conf, 1e-9, 1)), np.log(np.clip(top2[:, 1] - top2[:, 0], 1e-9, 1)),
                     np.log1p(step.slots - first), left, np.full(n, np.log(n)),
                     np.full(n, np.log1p(step.number - 1))], 1)


def collect(engine, seeds, per_kind: int) -> list[dict]:
    from evals.parallel import decode
    from runtime.request import editor_request
    rows = []
    for seed in seeds:
        for c in cursors(heldout_files(), per_kind, seed):
            steps = []

            def record(step):
                steps.append((step_features(step), step.slots, step.tokens, step.is_end))
                return step.commit
            d = decode(engine, editor_request(c["prefix"], c["suffix"]), record)
            final = d.ids[d.start:d.end]
            for f, slots, tokens, is_end in steps:
                rows += [{"features": dict(zip(FEATURES, row)), "final": bool(ok)}
                         for row, ok in zip(f[~is_end], (tokens == final[slots])[~is_end])]
    return rows


def learned(weights: dict, bias: float, tau: float):
    w = np.array([weights[k] for k in FEATURES])

    def rule(step):
        p = 1 / (1 + np.exp(-(step_features(step) @ w + bias)))
        return step.commit | ((p >= tau) & ~step.is_end)
    return rule


def evaluate(model: Path | None = None, train_seeds=TRAIN_SEEDS, seeds=SEEDS, taus=TAUS,
             per_kind: int = PER_KIND) -> dict:
    from evals.calibrate import fit
    from evals.parallel import decode
    from runtime.engine import Engine
    from runtime.request import editor_request
    from runtime.session import load
    engine = Engine(load(model))
    rows = collect(engine, train_seeds, per_kind)
    weights, bias, logloss = fit(rows, FEATURES, "final")
    rules = {"shipped": None, **{f"{t:g}": learned(weights, bias, t) for t in taus}}
    out = {"train_seeds": list(train_seeds), "rows": len(rows), "final_share": float(np.mean([r["final"] for r in rows])),
           "weights": weights, "bias": bias, "train_logloss": logloss,
           "model_sha256": engine.model.card["files"].get(engine.model.model_file, ""), "seeds": {}}
    for seed in seeds:
        got = {name: [] for name in rules}
        for c in cursors(heldout_files(), per_kind, seed):
            for name, rule in rules.items():
                req = editor_request(c["prefix"], c["suffix"])
                d = decode(engine, req, rule)
                comp = engine.finish(req, d)
                got[name].append((judge(c, comp.text)["exact"], d.stats.tokens, d.stats.forward_passes, comp.text))
        out["seeds"][str(seed)] = {name: {
            "exact_rate": float(np.mean([g[0] for g in r])),
            "tokens_per_pass": sum(g[1] for g in r) / max(1, sum(g[2] for g in r)),
            "same_text_as_shipped": float(np.mean([g[3] == s[3] for g, s in zip(r, got["shipped"])]))}
            for name, r in got.items()}
    return out


def add_arguments(p) -> None:
    ints = lambda s: [int(x) for x in s.split(",")]
    p.add_argument("--model", type=Path, help="model directory (default: the shipped model)")
    p.add_argument("--train-seeds", type=ints, default=list(TRAIN_SEEDS), help="cursor seeds to fit on")
    p.add_argument("--seeds", type=ints, default=list(SEEDS), help="cursor seeds to judge on")
    p.add_argument("--tau", type=float, action="append", help=f"learned rule thresholds (default {TAUS})")
    p.add_argument("--per-kind", type=int, default=PER_KIND)
    p.add_argument("--json", type=Path)


def run(args) -> None:
    out = evaluate(args.model, args.train_seeds, args.seeds, args.tau or TAUS, args.per_kind)
    out["command"] = ("quicksilver eval commit-rule" + (f" --model {args.model}" if args.model else "")
                      + f" --train-seeds {','.join(map(str, args.train_seeds))} --seeds {','.join(map(str, args.seeds))}"
                      + "".join(f" --tau {t:g}" for t in args.tau or []) + f" --per-kind {args.per_kind}"
                      + (f" --json {args.json}" if args.json else ""))
    for seed, res in out["seeds"].items():
        for name, m in res.items():
            print(f"seed {seed} {name:>7}: exactly right {m['exact_rate']:.1%}, {m['tokens_per_pass']:.2f} tokens/pass, "
                  f"the shipped text at {m['same_text_as_shipped']:.0%}")
    if args.json:
        args.json.write_text(json.dumps(out, indent=1) + "\n")

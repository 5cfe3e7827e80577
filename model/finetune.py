"""quicksilver finetune REPO_DIR: adapt a model to a code base, sized by the code base, stopped early on its held-out
files, and kept only when it is better there than the model it started from (otherwise the start is written out,
and the report says so)."""
from __future__ import annotations

import argparse
import json
import math
import shutil
import tempfile
import time
from pathlib import Path

from evals.heldout import evaluate as heldout_eval
from model.checkpoint import checkpoint_from_model_dir
from model.corpus import build_corpus, humaneval_path
from model.export import export
from model.train import add_arguments as train_arguments
from model.train import train
from model.tokenizer import TOKENIZER_FILE
from runtime.session import DEFAULT_MODEL_DIR

REPORT_TASKS = 50
PASSES = 2.0       # the default budget: passes over the repository's training tokens (a few thousand tokens trained
                   # on for hundreds of steps overfit: the budget follows the repository, not the clock)
ROUNDS = 4         # held-out checks during the run; training stops at the first that is not better than the last


def add_arguments(p) -> None:
    p.add_argument("repo", type=Path, help="the code base to adapt to (its *.py files)")
    p.add_argument("--model", type=Path, default=DEFAULT_MODEL_DIR, help="model directory to start from")
    p.add_argument("--out", type=Path, required=True, help="model directory to write")
    p.add_argument("--passes", type=float, default=PASSES, help="training budget in passes over the repository")
    p.add_argument("--minutes", type=float, help="a wall-clock cap on training as well (default: none)")
    p.add_argument("--lr", type=float, default=2e-4, help="peak learning rate")
    p.add_argument("--batch", type=int, default=8, help="sequences per step")
    p.add_argument("--seq", type=int, default=256, help="sequence length")
    p.add_argument("--work", type=Path, help="scratch folder (default: a temporary one)")


def held_out_loss(heldout: dict) -> float:
    """Masked cross-entropy on the repository's held-out files, averaged over the mask rates."""
    return sum(heldout.values()) / len(heldout)


def finetune(args) -> dict:
    work = args.work or Path(tempfile.mkdtemp(prefix="qs-finetune-"))
    corpus = work / "corpus"
    meta = build_corpus(corpus, [args.repo.resolve()], args.model / TOKENIZER_FILE, 0, int(1e9), 2, humaneval_path())
    if meta["files"]["heldout"] == 0:
        raise SystemExit(f"{args.repo} has too little Python ({meta['files']['train']} usable files) to finetune on")
    start = checkpoint_from_model_dir(args.model, work / "start")
    shutil.copy(corpus / TOKENIZER_FILE, start / TOKENIZER_FILE)
    parser = argparse.ArgumentParser()
    train_arguments(parser)
    steps = max(ROUNDS, math.ceil(args.passes * meta["tokens"]["train"] / (args.batch * args.seq)))
    common = ["--corpus", str(corpus), "--lr", str(args.lr), "--batch", str(args.batch), "--seq", str(args.seq)]
    first = held_out_loss(train(parser.parse_args(common + ["--out", str(work / "ckpt"), "--init-from", str(start),
                                                            "--eval-only"]))["heldout"])
    best, history, t0 = first, [{"step": 0, "heldout_loss": first}], time.time()
    for r in range(1, ROUNDS + 1):
        left = args.minutes * 60 - (time.time() - t0) if args.minutes else math.inf
        if left <= 0:
            break
        state = train(parser.parse_args(common + [
            "--out", str(work / "ckpt"), "--init-from", str(start), "--steps", str(steps), "--warmup", "20",
            "--until", str(math.ceil(steps * r / ROUNDS)), "--ckpt-minutes", "1e9"]
            + (["--minutes", str(left / 60)] if args.minutes else [])))
        loss = held_out_loss(state["heldout"])
        history.append({"step": state["step"], "heldout_loss": loss})
        if loss >= best:   # no better on the held-out files than the last check: stop
            break
        best = loss
        shutil.rmtree(work / "best", ignore_errors=True)
        shutil.copytree(work / "ckpt", work / "best")
    before = heldout_eval(args.model, corpus, REPORT_TASKS, 0, 0.0, 0.9, "int8")
    after, kept, why = before, False, "no step improved the held-out files' loss"
    if best < first:
        export(work / "best", args.out, "int8", {"finetuned_on": str(args.repo.resolve())})
        after = heldout_eval(args.out, corpus, REPORT_TASKS, 0, 0.0, 0.9, "int8")
        kept = after["exact_match"] >= before["exact_match"]
        why = "better held-out loss, held-out lines no worse" if kept else \
            "the held-out loss fell but fewer held-out lines came out exact"
    if not kept:   # never a model worse than the start: the start is what is written out
        shutil.rmtree(args.out, ignore_errors=True)
        shutil.copytree(args.model, args.out)
        after = before
    report = {"repo": str(args.repo), "files": meta["files"], "tokens": meta["tokens"], "steps_planned": steps,
              "passes": args.passes, "history": history, "heldout_loss_before": first, "heldout_loss_best": best,
              "kept": kept, "why": why,
              "heldout_line_exact_before": before["exact_match"], "heldout_line_exact_after": after["exact_match"],
              "tasks": before["tasks"], "out": str(args.out)}
    (args.out / "finetune.json").write_text(json.dumps(report, indent=1))
    return report


def run(args) -> None:
    report = finetune(args)
    print(json.dumps(report, indent=1))
    if not report["kept"]:
        print(f"The fine-tuned model was not better on {args.repo}'s held-out files ({report['why']}): "
              f"{args.out} holds the model it started from.")

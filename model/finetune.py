"""quicksilver finetune REPO_DIR: adapt a model to a code base (its own held-out files), report infill before/after."""
from __future__ import annotations

import argparse
import json
import shutil
import tempfile
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


def add_arguments(p) -> None:
    p.add_argument("repo", type=Path, help="the code base to adapt to (its *.py files)")
    p.add_argument("--model", type=Path, default=DEFAULT_MODEL_DIR, help="model directory to start from")
    p.add_argument("--out", type=Path, required=True, help="model directory to write")
    p.add_argument("--minutes", type=float, default=10, help="training budget")
    p.add_argument("--lr", type=float, default=2e-4, help="peak learning rate")
    p.add_argument("--batch", type=int, default=8, help="sequences per step")
    p.add_argument("--seq", type=int, default=256, help="sequence length")
    p.add_argument("--work", type=Path, help="scratch folder (default: a temporary one)")


def finetune(args) -> dict:
    work = args.work or Path(tempfile.mkdtemp(prefix="qs-finetune-"))
    corpus = work / "corpus"
    meta = build_corpus(corpus, [args.repo.resolve()], args.model / TOKENIZER_FILE, 0, int(1e9), 2, humaneval_path())
    if meta["files"]["heldout"] == 0:
        raise SystemExit(f"{args.repo} has too little Python ({meta['files']['train']} usable files) to finetune on")
    start = checkpoint_from_model_dir(args.model, work / "start")
    shutil.copy(corpus / TOKENIZER_FILE, start / TOKENIZER_FILE)
    before = heldout_eval(args.model, corpus, REPORT_TASKS, 0, 0.0, 0.9, "int8")
    parser = argparse.ArgumentParser()
    train_arguments(parser)
    targs = parser.parse_args(["--corpus", str(corpus), "--out", str(work / "ckpt"), "--init-from", str(start),
                               "--minutes", str(args.minutes), "--lr", str(args.lr), "--batch", str(args.batch),
                               "--seq", str(args.seq), "--warmup", "20"])
    train(targs)
    export(work / "ckpt", args.out, "int8", {"finetuned_on": str(args.repo.resolve())})
    after = heldout_eval(args.out, corpus, REPORT_TASKS, 0, 0.0, 0.9, "int8")
    report = {"repo": str(args.repo), "files": meta["files"], "tokens": meta["tokens"],
              "heldout_line_exact_before": before["exact_match"], "heldout_line_exact_after": after["exact_match"],
              "tasks": before["tasks"], "out": str(args.out)}
    (args.out / "finetune.json").write_text(json.dumps(report, indent=1))
    return report


def run(args) -> None:
    print(json.dumps(finetune(args), indent=1))

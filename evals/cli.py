"""quicksilver eval: the evaluation subcommands."""
from __future__ import annotations

import importlib

EVALS = {
    "humaneval": ("evals.humaneval", "HumanEval completion: pass@1 and pass@k"),
    "infill": ("evals.infill", "HumanEval infilling: single-line, multi-line, random-span"),
    "compare": ("evals.studies.compare", "diffusion against the autoregressive twin on the same tasks, with a plot"),
    "typing": ("evals.typing", "replay an editing session against the language server: keystroke to ghost text"),
    "report": ("evals.report", "evals/results/*.json → REPORT.md and the learning-curve plot"),
    "load": ("evals.loadtest", "bounded load test of the real server on loopback"),
    "api": ("evals.api", "HumanEval infilling through /v1/completions as an OpenAI client asks (max_tokens, no language)"),
    "editor": ("evals.editor", "what editors receive: held-out cursors asked through the server as clients ask"),
    "calibrate": ("evals.calibrate", "fit the confidence calibrator on held-out editor cursors (written beside the model)"),
    "imported": ("evals.imported", "an imported diffusion coder's import time, size and speed at a real model's shape (random weights)"),
    "parallel": ("evals.parallel", "tokens per pass on held-out editor cursors, one model against another"),
    "heldout": ("evals.heldout", "line infills from the corpus's held-out files (sampler knobs, unknown length)"),
    "repo": ("evals.repo", "cross-file cursors in held-out packages, asked with llama.vim's chunks and without"),
    "names": ("evals.names", "member-access cursors in held-out packages: invented names with the analysis on and off"),
    "nextedits": ("evals.nextedits", "rename propagation on held-out code: the next edit after a rename typed at a binding"),
    "replicas": ("evals.replicas", "the typing replay through one process and two Ray Serve replicas (affinity, round-robin)"),
    "edits": ("evals.edits", "planted bugs repaired through a websocket session as clients ask: fixed, harmed, refused"),
}


def add_arguments(p) -> None:
    sub = p.add_subparsers(dest="eval", required=True)
    for name, (module, help_text) in EVALS.items():
        q = sub.add_parser(name, help=help_text, description=help_text)
        q.set_defaults(eval_module=module)
        importlib.import_module(module).add_arguments(q)


def run(args) -> None:
    importlib.import_module(args.eval_module).run(args)

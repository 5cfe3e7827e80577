"""The `quicksilver` command: one argparse tree; a subcommand's module is imported only when that subcommand runs,
so `quicksilver serve` and `quicksilver lsp` start on a serving-only install (no torch, no training extras)."""
from __future__ import annotations

import argparse
import importlib
import sys

# subcommand → (module with add_arguments(parser) and run(args), help)
COMMANDS = {
    "corpus": ("model.corpus", "build the training corpus and tokenizer from this machine's Python source"),
    "repo-corpus": ("model.repo_corpus", "build training rows with cross-file context (other files of a package)"),
    "train": ("model.train", "train the diffusion model (or its autoregressive twin)"),
    "finetune": ("model.finetune", "adapt a model to your own code base"),
    "distill": ("model.distill", "certainty-forcing self-distillation: more tokens per pass"),
    "export": ("model.export", "export a checkpoint to ONNX with its card"),
    "import": ("model.importer", "import an open-weight diffusion coder (a Hugging Face checkpoint directory)"),
    "complete": ("runtime.complete", "print the model's completion or infill at a cursor"),
    "serve": ("server.serve", "serve completions over HTTP (OpenAI-compatible and llama.cpp /infill)"),
    "lsp": ("lsp.server", "language server for editors (stdio, or --tcp)"),
    "eval": ("evals.cli", "measure quality and speed on HumanEval sets"),
    "bench": ("evals.bench", "engine latency and throughput benchmark"),
}
TRAINING_EXTRA = "pip install -e '.[train]'"   # what a serving-only install lacks for the training commands


def chosen(argv: list[str]) -> str | None:
    """The subcommand named on the command line (the first word that is one), if any."""
    return next((a for a in argv if a in COMMANDS), None)


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The parser; only the chosen subcommand's module is imported to add its options (all of them without argv)."""
    parser = argparse.ArgumentParser(prog="quicksilver", description="A code diffusion language model assistant.")
    sub = parser.add_subparsers(dest="command", required=True)
    name = chosen(argv) if argv is not None else None
    for command, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(command, help=help_text, description=help_text)
        p.set_defaults(module=module)
        if argv is None or command == name:
            _module(module).add_arguments(p)
    return parser


def _module(name: str):
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as e:
        sys.exit(f"quicksilver: this command needs {e.name!r}, which this install lacks (serving-only installs "
                 f"have no training extras: {TRAINING_EXTRA})")


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(argv).parse_args(argv)
    _module(args.module).run(args)


if __name__ == "__main__":
    main(sys.argv[1:])

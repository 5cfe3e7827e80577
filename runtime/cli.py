"""The `quicksilver` command: one argparse tree whose subcommands each part of the product adds."""
from __future__ import annotations

import argparse
import importlib
import sys

# subcommand → (module with add_arguments(parser) and run(args), help)
COMMANDS = {
    "corpus": ("model.corpus", "build the training corpus and tokenizer from this machine's Python source"),
    "train": ("model.train", "train the diffusion model (or its autoregressive twin)"),
    "finetune": ("model.finetune", "adapt a model to your own code base"),
    "export": ("model.export", "export a checkpoint to ONNX with its card"),
    "complete": ("runtime.complete", "print the model's completion or infill at a cursor"),
    "serve": ("server.serve", "serve completions over HTTP (OpenAI-compatible and llama.cpp /infill)"),
    "lsp": ("lsp.server", "language server for editors (stdio, or --tcp)"),
    "eval": ("evals.cli", "measure quality and speed on HumanEval sets"),
    "bench": ("evals.bench", "engine latency and throughput benchmark"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="quicksilver", description="A code diffusion language model assistant.")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(module=module)
        importlib.import_module(module).add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    importlib.import_module(args.module).run(args)


if __name__ == "__main__":
    main(sys.argv[1:])

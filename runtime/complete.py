"""quicksilver complete: print the model's completion or infill at a cursor in a file, or for a prefix/suffix."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from runtime.engine import Engine

from runtime.request import DEFAULT_MAX_NEW_TOKENS, THRESHOLD, Request
from runtime.session import ModelError, load


def add_arguments(p) -> None:
    p.add_argument("--model", type=Path, help="model directory (default: the shipped model/default)")
    p.add_argument("--file", type=Path, help="source file; the cursor is --line/--col")
    p.add_argument("--line", type=int, help="cursor line, 1-based as editors show it")
    p.add_argument("--col", type=int, default=1, help="cursor column, 1-based (characters)")
    p.add_argument("--prefix", help="text before the cursor (default: stdin when no --file)")
    p.add_argument("--suffix", default="", help="text after the cursor")
    p.add_argument("--mode", choices=["infill", "completion"], default="infill", help="fill between, or continue")
    p.add_argument("--max-tokens", type=int, default=DEFAULT_MAX_NEW_TOKENS, help="window size in tokens")
    p.add_argument("--temperature", type=float, default=0.0, help="0 is greedy and deterministic")
    p.add_argument("--threshold", type=float, default=THRESHOLD, help="commit slots at least this confident per step")
    p.add_argument("--block", type=int, help="decode the window in blocks of this many tokens")
    p.add_argument("--single-line", action="store_true", help="stop at the end of the line")
    p.add_argument("--stats", action="store_true", help="print steps, forward passes and time to stderr")
    p.add_argument("--precision", choices=["int8", "fp32"], default="int8", help="which ONNX file to prefer")


def cursor_split(text: str, line: int, col: int) -> tuple[str, str]:
    lines = text.splitlines(keepends=True)
    if not 1 <= line <= len(lines) + 1:
        raise SystemExit(f"--line {line} is outside the file (1..{len(lines) + 1})")
    offset = sum(len(l) for l in lines[: line - 1]) + col - 1
    return text[:offset], text[offset:]


def run(args) -> None:
    if args.file:
        if args.line is None:
            raise SystemExit("--file needs --line (and optionally --col)")
        prefix, suffix = cursor_split(args.file.read_text(), args.line, args.col)
    else:
        prefix, suffix = (args.prefix if args.prefix is not None else sys.stdin.read()), args.suffix
    try:
        engine = Engine(load(args.model, prefer=args.precision))
    except ModelError as e:
        raise SystemExit(f"error: {e}")
    req = Request(prefix=prefix, suffix=suffix, mode=args.mode, max_new_tokens=args.max_tokens,
                  temperature=args.temperature, threshold=args.threshold, block=args.block,
                  single_line=args.single_line)
    result = engine.complete(req)
    print(result.text)
    if args.stats:
        print(json.dumps(result.stats), file=sys.stderr)

"""quicksilver eval heldout: line infills cut from the corpus's held-out files, in the tokenization the model trained on.

A quick, HumanEval-independent check of infilling and of the sampler's knobs: the middle is one line of a
held-out file (token-aligned, as in training); the window is the middle's length plus --extra-slots, or a fixed
--window of slots whatever the middle's length (as an editor asks: the length is unknown; a middle longer than
the window cannot match).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from model.corpus import load_shard
from runtime.sampler import THRESHOLD, Denoiser, SamplerOptions, denoise
from runtime.session import load
from runtime.vocab import SpecialIds

ROW_TOKENS = 256
SEED = 0


def evaluate(model_dir, corpus: Path, limit: int, extra_slots: int, eom_bias: float, threshold: float,
             precision: str, window: int | None = None) -> dict:
    model = load(model_dir, prefer=precision)
    tok = model.tokenizer
    special = SpecialIds.from_tokenizer(tok)
    held = load_shard(corpus, "heldout")
    newline = np.array(["\n" in s for s in tok.token_bytes()])
    rng = np.random.default_rng(SEED)
    exact, tried, passes, tokens = 0, 0, 0, 0
    n = min(ROW_TOKENS, len(held) - 1)
    for _ in range(limit * 20 if n >= 32 else 0):  # a small held-out set may hold fewer lines than asked for
        if tried == limit:
            break
        s = int(rng.integers(0, len(held) - n))
        row = np.asarray(held[s:s + n], dtype=np.int64)
        starts = np.flatnonzero(newline[row[:-1]]) + 1
        starts = starts[(starts > n // 2) & (starts < n - 8)]
        if len(starts) < 2 or tok.eos_id in row[:starts[1]]:
            continue
        a, b = int(starts[0]), int(starts[1])
        opts = SamplerOptions(window=window or b - a + extra_slots, threshold=threshold, eom_bias=eom_bias)
        d = Denoiser(row[:a].tolist(), None, row[b:].tolist(), opts, special, tok.decode)
        for _ in denoise(model.forward, d):
            pass
        exact += d.result().token_ids == row[a:b].tolist()
        passes += d.stats.forward_passes
        tokens += d.stats.tokens
        tried += 1
    mode = f"{window} slots" if window else "oracle" if extra_slots == 0 else f"+{extra_slots} slots"
    return {"set": "heldout-line", "mode": mode,
            "tasks": tried, "exact_match": exact / max(1, tried), "eom_bias": eom_bias, "threshold": threshold,
            "tokens_per_forward": tokens / max(1, passes), "model_file": model.model_file,
            "model_sha256": model.card["files"].get(model.model_file, "")}


def add_arguments(p) -> None:
    p.add_argument("--model", type=Path, help="model directory (default: the shipped model)")
    p.add_argument("--corpus", type=Path, default=Path("data/corpus"), help="corpus folder with heldout.bin")
    p.add_argument("--limit", type=int, default=100, help="number of line infills")
    p.add_argument("--extra-slots", type=int, default=0, help="window slots beyond the answer (0: oracle length)")
    p.add_argument("--window", type=int, help="a fixed window of this many slots (unknown length; overrides --extra-slots)")
    p.add_argument("--eom-bias", type=float, default=0.0, help="added to the <|eom|> logit")
    p.add_argument("--threshold", type=float, default=THRESHOLD, help="confidence threshold for committing")
    p.add_argument("--precision", choices=["int8", "fp32"], default="int8", help="which ONNX file to prefer")


def run(args) -> None:
    print(json.dumps(evaluate(args.model, args.corpus, args.limit, args.extra_slots, args.eom_bias,
                              args.threshold, args.precision, args.window)))

"""What a decoding reports: a `Frame` after every step (the window's text so far, for streaming), and at the end a
`Result` with its `Stats` (steps, passes, tokens, why it stopped, how sure it was, where the time went). The
sampler (runtime/sampler.py) fills them; the engine, the scheduler and the front ends read them."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

PLACEHOLDER = "\u2591"       # shown for a masked slot in partial frames


@dataclass
class Frame:
    step: int
    text: str                 # window text so far, PLACEHOLDER for each masked slot
    committed: int
    masked: int


@dataclass
class Stats:
    steps: int = 0
    forward_passes: int = 0
    tokens: int = 0
    tokens_per_forward: float = 0.0
    ms: float = 0.0
    stop_reason: str = ""
    confidence: float = 0.0   # the least probability among the generated tokens (and the end) when committed
    tokenize_ms: float = 0.0  # where the time went: tokenizing and windowing (the engine's), forward passes
    pass_ms: float = 0.0      # (a batched pass counts for each request in it), this sampler's own work per step,
    sample_ms: float = 0.0    # and post-processing the result
    post_ms: float = 0.0
    context_reused: bool = False   # the first pass used a context kept from an earlier request (the same, or the
                                   # last keystroke's: engine)
    extra_tokens: int = 0          # tokens of other files placed before this one (Request.extra)
    extra_chunks: int = 0          # how many of Request.extra's chunks those tokens hold (whole or cut)
    drafted: int = 0               # slots committed early because they agreed with a draft from the context
    names: str = ""                # the names that exist at the cursor kept to: how many, or why none (names.py)
    names_ms: float = 0.0          # the time that analysis took (part of tokenize_ms; up to names.BUDGET_S)
    context_tokens: int = 0        # tokens the model read around the window (the file's and other files'): the
                                   # routes report them (usage.prompt_tokens, tokens_evaluated) without tokenizing
    truncated: bool = False        # the file did not fit whole: its farthest lines were left out
    stop_word: str = ""            # the stop sequence the result was cut at ('' if none)
    typed_through: bool = False    # answered from an earlier answer the user typed a start of (runtime/answers.py)


@dataclass
class Result:
    text: str
    token_ids: list[int]
    stats: Stats = field(default_factory=Stats)


@dataclass
class Completion:
    id: str
    text: str
    raw: str
    stats: dict


def frame_text(window, masked, ends: set, decode: Callable[[list[int]], str]) -> str:
    """A window's text so far: committed tokens decoded in runs, PLACEHOLDER for each masked slot, end markers
    and the padding after them left out."""
    pieces, run = [], []
    for t, m in zip(window.tolist(), masked.tolist()):
        if m:
            if run:
                pieces.append(decode(run))
                run = []
            pieces.append(PLACEHOLDER)
        elif t not in ends:
            run.append(t)
    pieces.append(decode(run))
    return "".join(pieces)


@dataclass
class Step:
    """What a step predicted, for a `commit_with` rule (runtime/sampler.py): the candidate slots (window indices), their argmax (or
    sampled) tokens, confidences, which are end markers, their (constrained) logits, `commit_rule`'s choice, the
    window's masked slots before the step, and the step's number (1: the first)."""
    slots: np.ndarray
    tokens: np.ndarray
    conf: np.ndarray
    is_end: np.ndarray
    logits: np.ndarray
    commit: np.ndarray
    masked: np.ndarray
    number: int

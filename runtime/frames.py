"""What a decoding reports: a `Frame` after every step (the window's text so far, for streaming), and at the end a
`Result` with its `Stats` (steps, passes, tokens, why it stopped, how sure it was, where the time went). The
sampler (runtime/sampler.py) fills them; the engine, the scheduler and the front ends read them."""
from __future__ import annotations

from dataclasses import dataclass, field


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
    grown: int = 0                 # slots the window grew by (SamplerOptions.grow)
    stop_word: str = ""            # the stop sequence the result was cut at ('' if none)
    typed_through: bool = False    # answered from an earlier answer the user typed a start of (runtime/answers.py)


@dataclass
class Result:
    text: str
    token_ids: list[int]
    stats: Stats = field(default_factory=Stats)

"""A model's repair of a block (a session's `repair`, the language server's *Repair* action) where analysis cannot
fix it alone (runtime/fixes.py `name_fix`): which of the block's tokens the model re-fills, and when what it writes
is offered. The Denoiser (runtime/sampler.py) runs it: scoring passes read the model's probability of each token
that is there (each pass masks every STRIPES-th one), then one span is re-masked and re-filled as the middle
of an infill — the block before it joins the prefix, the block after it the suffix, as the model was trained — so
a repair may grow or shrink. Analysis (runtime/fixes.py `repair_plan`) narrows where to look:

- only code is re-filled, never a string, a comment, indentation or the name a definition gives;
- where a function ends with a statement that does nothing (`data`), or with any expression although it returns a
  value elsewhere, a `return` seems missing: one slot before it is filled, with no scoring pass.

Otherwise the least likely code token is re-filled. (Where a wrong variable leaves a local unread, re-filling only
the reads of other locals, where the model prefers the unread name, fixed none of 12 such bugs: the model's
scoring finds the wrong name as likely as the right one there.) Each choice below was made on planted bugs of
`quicksilver eval edits --seed 2` and `--seed 3` (the reported seeds are 0 and 1). Repairs read Python only
(runtime/fixes.py `repairable`).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from runtime.vocab import SpecialIds

STRIPES = 2             # scoring passes: each masks every other token of the block (3 fixed and harmed the same,
                        # 1.15× slower)
SPAN = 1                # the most tokens of the block one repair re-fills (3 harmed more)
UNLIKELY = 0.1          # the least likely token is re-filled only if its probability is below this
SLACK = 2               # slots more than the span had (a repair may insert)
ACCEPT = 0.9            # what the model writes is offered only if its least likely token has this probability
                        # (the lowest at which the model harmed at most 1 % of the choosing cases)
INSERT = 1              # slots where a `return` seems missing


@dataclass(frozen=True)
class Plan:
    """What analysis says of a block before the model is asked (runtime/fixes.py `repair_plan`)."""
    code: np.ndarray | None = None       # which of the block's tokens are code; None: every one may be re-filled
    insert_at: int | None = None         # the token before which a `return` seems missing: no scoring


def span_to_refill(win: np.ndarray, scores: np.ndarray, plan: Plan, special: SpecialIds) -> tuple[tuple[int, int],
                                                                                                  int] | None:
    """After the scoring passes over the window (the block, then end-marker padding), which read each token's
    probability: (the span to re-fill, its slack) — the least likely code token — or None where none is unlikely
    enough."""
    n = block_length(win, special)
    may = np.arange(len(win)) < n
    if plan.code is not None and len(plan.code) == n:
        may[:n] &= plan.code
    return None if (span := repair_span(scores, may, UNLIKELY)) is None else (span, SLACK)


def offered(confidence: float) -> bool:
    """Whether the model's fill of the span is offered: where its least likely token is sure enough."""
    return confidence >= ACCEPT


def block_length(win: np.ndarray, special: SpecialIds) -> int:
    """The block's tokens in a window: those before its end-marker padding."""
    return int(ends.argmax()) if (ends := np.isin(win, special.ends)).any() else len(win)


def stripe_of(n: int, stripe: int, stripes: int = STRIPES) -> np.ndarray:
    """The slots of a window of n that scoring pass `stripe` of `stripes` scores (and masks); with 0 stripes, a
    model that judges present tokens scores them all in one pass."""
    return np.ones(n, bool) if stripes == 0 else np.arange(n) % stripes == stripe


def striped(ids: np.ndarray, start: int, end: int, stripe: int, mask: int, stripes: int = STRIPES) -> np.ndarray:
    """The sequence for scoring pass `stripe`: the window's `stripe_of` slots masked (none with 0 stripes)."""
    out = ids.copy()
    if stripes:
        out[start:end][stripe_of(end - start, stripe, stripes)] = mask
    return out


def repair_span(scores: np.ndarray, may: np.ndarray, threshold: float,
                most: int = SPAN) -> tuple[int, int] | None:
    """[lo, hi): the block's least likely token among those it `may` re-fill, if below `threshold`, and the
    unlikely ones next to it (the less likely first), at most `most` in all; None where none is unlikely."""
    low = may & (scores < threshold)
    if not low.any():
        return None
    lo = int(np.where(low, scores, np.inf).argmin())
    hi = lo + 1
    while hi - lo < most:
        left = scores[lo - 1] if lo > 0 and low[lo - 1] else np.inf
        right = scores[hi] if hi < len(scores) and low[hi] else np.inf
        if min(left, right) == np.inf:
            break
        lo, hi = (lo - 1, hi) if left <= right else (lo, hi + 1)
    return lo, hi


def repair_refill(ids: np.ndarray, start: int, end: int, span: tuple[int, int], special: SpecialIds,
                  slack: int) -> tuple[np.ndarray, tuple]:
    """The sequence with the block's span [lo, hi) (of the window [start, end): the block, then padding) re-masked
    with `slack` slots more, the block before it joining the prefix and the block after it the suffix — an infill
    as the model was trained on, so the span may grow or shrink (an empty span: an insertion) — and (the block
    before it, the span, the block after it) as token lists."""
    win, (lo, hi) = ids[start:end], span
    n = block_length(win, special)
    refill = np.concatenate([ids[:start + lo], np.full(hi - lo + slack, special.mask, np.int64), win[hi:n], ids[end:]])
    return refill, (win[:lo].tolist(), win[lo:hi].tolist(), win[hi:n].tolist())


def token_probs(logits: np.ndarray, tokens: np.ndarray) -> np.ndarray:
    """(N, V) logits, N tokens → each token's probability."""
    x = logits - logits.max(-1, keepdims=True)
    logp = x - np.log(np.exp(x).sum(-1, keepdims=True))
    return np.exp(np.take_along_axis(logp, tokens[:, None], -1)[:, 0])

"""Drafts from the context: when the tokens before the cursor occurred earlier in what the model reads (another
file's chunk, the file itself), the tokens that followed them there are a guess at what comes next (prompt lookup
decoding, Saxena 2023; LLMA, Yang et al. 2023). The sampler commits, in the same pass, every leading slot whose
own prediction agrees with the draft (runtime/sampler.py), so a name or a line copied from the repository costs
one pass instead of one per token. A draft the model disagrees with commits nothing: it never changes a token the
model would not have predicted there."""
from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

MIN_MATCH = 6     # tokens before the cursor that must recur (held-out cross-file cursors, seed 1: with 3, drafts
                  # from chance matches such as `\n        return ` lowered confidence and showed 3 of 40 fewer)
MAX_MATCH = 12    # the longest recurrence looked for (the longest wins; of equals, the one nearest the cursor)


def draft(before: list[int], length: int, special: frozenset[int] = frozenset()) -> tuple[int, ...]:
    """Up to `length` tokens that followed the longest recent recurrence of `before`'s last tokens in `before`
    itself (a draft stops at a special token: a file's start or end is not code to copy)."""
    seq = np.asarray(before, dtype=np.int64)
    for n in range(min(MAX_MATCH, len(seq) - 1), MIN_MATCH - 1, -1):
        hits = np.flatnonzero((sliding_window_view(seq[:-1], n) == seq[-n:]).all(axis=1))
        if len(hits):
            out = []
            for t in seq[hits[-1] + n: hits[-1] + n + length].tolist():
                if t in special:
                    break
                out.append(t)
            if out:
                return tuple(out)
    return ()

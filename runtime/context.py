"""Context windowing: fit prefix and suffix into the model's token budget, cutting at line boundaries near the cursor."""
from __future__ import annotations

from dataclasses import dataclass

PREFIX_SHARE = 0.75   # of the context budget left after the window, the prefix gets this much (the suffix the rest,
                      # and the prefix takes whatever the suffix does not use)


@dataclass
class Context:
    prefix: list[int]     # starts with <|eos|> when the file's start is included
    suffix: list[int]     # ends with <|eos|> when the file's end is included
    prefix_cut: bool
    suffix_cut: bool


def _line_counts(tok, lines: list[str]) -> list[int]:
    return [len(ids) for ids in tok.encode_batch(lines)] if lines else []


def fit(tok, prefix: str, suffix: str, budget: int) -> Context:
    """Token ids for prefix and suffix within `budget` tokens together, keeping the lines nearest the cursor."""
    pre_lines = prefix.splitlines(keepends=True)
    suf_lines = suffix.splitlines(keepends=True)
    # the cursor's own line fragments are always kept (they may be cut mid-line only if one line exceeds the budget)
    pre_counts, suf_counts = _line_counts(tok, pre_lines), _line_counts(tok, suf_lines)
    suf_budget = max(0, min(sum(suf_counts) + 1, budget - int(budget * PREFIX_SHARE)))
    k_suf, used = 0, 0
    while k_suf < len(suf_lines) and used + suf_counts[k_suf] <= suf_budget - 1:
        used += suf_counts[k_suf]
        k_suf += 1
    pre_budget = budget - used - (1 if k_suf == len(suf_lines) else 0)
    k_pre, used_pre = 0, 0
    while k_pre < len(pre_lines) and used_pre + pre_counts[-1 - k_pre] <= pre_budget - 1:
        used_pre += pre_counts[-1 - k_pre]
        k_pre += 1
    prefix_cut, suffix_cut = k_pre < len(pre_lines), k_suf < len(suf_lines)
    pre_ids = tok.encode("".join(pre_lines[len(pre_lines) - k_pre:]))
    if not prefix_cut:
        pre_ids = [tok.eos_id] + pre_ids
    elif not pre_ids:  # one enormous line before the cursor: keep its tail
        pre_ids = tok.encode(pre_lines[-1])[-max(1, pre_budget):]
    suf_ids = tok.encode("".join(suf_lines[:k_suf]))
    if not suffix_cut:
        suf_ids = suf_ids + [tok.eos_id]
    return Context(pre_ids[-max(1, budget):], suf_ids, prefix_cut, suffix_cut)

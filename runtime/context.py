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


COUNT_CHUNK = 16      # lines tokenized at a time, outwards from the cursor, until the budget is spent
COUNTS_KEPT = 16384   # lines whose token counts are remembered (a keystroke changes one line of the file)
COUNTED_CHARS = 2000  # lines longer than this are counted every time (memory is bounded by lines × this)


def _count(tok, lines: list[str]) -> list[int]:
    """Token counts of lines, remembered on the tokenizer across requests (safe from several threads: a line
    another thread's clearing drops is just counted again)."""
    memo = getattr(tok, "_line_counts", None)
    if memo is None:
        memo = tok._line_counts = {}
    known = {l: n for l in dict.fromkeys(lines) if (n := memo.get(l)) is not None}
    new = [l for l in dict.fromkeys(lines) if l not in known]
    if new:
        if len(memo) + len(new) > COUNTS_KEPT:
            memo.clear()
        for line, ids in zip(new, tok.encode_batch(new)):
            known[line] = len(ids)
            if len(line) <= COUNTED_CHARS:
                memo[line] = len(ids)
    return [known[l] for l in lines]


def _line_counts(tok, lines: list[str], budget: int, from_end: bool) -> list[int]:
    """Token counts of the lines nearest the cursor (the last ones if `from_end`), only as many as it takes to
    pass `budget` tokens: a keystroke in a long file tokenizes what fits, not the whole file."""
    counts, total = [], 0
    order = lines[::-1] if from_end else lines
    for i in range(0, len(order), COUNT_CHUNK):
        chunk = _count(tok, order[i:i + COUNT_CHUNK])
        counts += chunk
        total += sum(chunk)
        if total > budget:
            break
    return counts[::-1] if from_end else counts


def fit(tok, prefix: str, suffix: str, budget: int) -> Context:
    """Token ids for prefix and suffix within `budget` tokens together, keeping the lines nearest the cursor."""
    pre_lines = prefix.splitlines(keepends=True)
    suf_lines = suffix.splitlines(keepends=True)
    # the cursor's own line fragments are always kept (they may be cut mid-line only if one line exceeds the budget)
    suf_counts = _line_counts(tok, suf_lines, budget, from_end=False)   # the nearest lines, past any budget
    suf_budget = max(0, min(sum(suf_counts) + 1, budget - int(budget * PREFIX_SHARE)))
    k_suf, used = 0, 0
    while k_suf < len(suf_counts) and used + suf_counts[k_suf] <= suf_budget - 1:
        used += suf_counts[k_suf]
        k_suf += 1
    pre_budget = budget - used - (1 if k_suf == len(suf_lines) else 0)
    pre_counts = _line_counts(tok, pre_lines, pre_budget, from_end=True)
    k_pre, used_pre = 0, 0
    while k_pre < len(pre_counts) and used_pre + pre_counts[-1 - k_pre] <= pre_budget - 1:
        used_pre += pre_counts[-1 - k_pre]
        k_pre += 1
    prefix_cut, suffix_cut = k_pre < len(pre_lines), k_suf < len(suf_lines)
    pre_ids = tok.encode("".join(pre_lines[len(pre_lines) - k_pre:]))
    if not prefix_cut:
        pre_ids = [tok.bos_id] + pre_ids
    elif not pre_ids:  # one enormous line before the cursor: keep its tail
        pre_ids = tok.encode(pre_lines[-1])[-max(1, pre_budget):]
    suf_ids = tok.encode("".join(suf_lines[:k_suf]))
    if not suffix_cut:
        suf_ids = suf_ids + [tok.eos_id]
    return Context(pre_ids[-max(1, budget):], suf_ids, prefix_cut, suffix_cut)

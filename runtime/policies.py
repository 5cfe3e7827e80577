"""The sampler's policies: what constrains a denoising step beyond "commit the confident slots". Each is a small
function on one step's data; runtime/sampler.py's Denoiser decides when each applies, and tests/test_policies.py
tests each alone.

- `choose`: logits → tokens and confidences (greedy, or nucleus sampling).
- `heal`: while typed text is being healed, the leftmost slot takes only tokens that agree with the text it
  has not covered yet.
- `names_left`, `narrow` (names that exist, runtime/names.py): while the window spells a name at a member access
  or an import, the leftmost slot takes only tokens that go on spelling a name that exists there, or end it.
- `fill_line`: while the cursor's line is blank, the leftmost slot may not end the result or break the line.
- `guard_end` (syntax guidance): an ending token at the leftmost slot is drawn again while `may_end` refuses the
  text it would end.
- `refused_break`: a stop-writing token committed ahead of the leftmost masked slot is handed back (re-masked)
  once the slots before it are filled, if `may_end` refuses the text it ends.
- `pad_after_end`: everything after the first committed end marker is padding.
- `writes_stop`, `through_stop`: whether text writes a stop sequence; the tokens a result keeps when one does.

(A repair's scoring passes and re-fill are runtime/repair.py's.)
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from runtime.vocab import SpecialIds

USED_BONUS = 4.0             # logits gained by a name the file uses elsewhere (runtime/names.py in_use)
GUARD_TRIES = 8              # ending tokens may_end refuses at one slot before every ending token is barred there


def heal(row: np.ndarray, left: str, special: SpecialIds) -> None:
    """Healing, in place on the leftmost slot's logits: only tokens that agree with `left` (the typed text not
    covered yet: a token spelling a prefix of it, or all of it and more); untouched if no token does."""
    if (ok := special.agrees(left)).any():
        row[~ok] = -np.inf


def _word(ch: str) -> bool:
    return ch.isalnum() or ch == "_"


def names_left(text: str, names: tuple[str, ...]) -> tuple[str, ...] | None:
    """What each name still needs after `text` (the window's text past the typed start); None once the text has
    left the names (a character no name has there; a name ending in one, `key=` or `**`, is left once it is
    whole) or fits none of them (nothing to keep to)."""
    if not all(map(_word, text)) and not any(n.startswith(text) and n != text for n in names):
        return None
    return tuple(n[len(text):] for n in names if n.startswith(text)) or None


def narrow(row: np.ndarray, rests: tuple[str, ...], special: SpecialIds, skip: int = 0,
           used: tuple[str, ...] = ()) -> None:
    """Names that exist, in place on the leftmost slot's logits: a token may only go on spelling one of the names
    (`rests`: what each still needs; the token's first `skip` characters are typed text it heals) or end a name that
    is complete, never glue more letters onto it; a token that goes on spelling a name the file uses elsewhere
    (`used`, rests too) gains USED_BONUS. Untouched if no token may."""
    def fits(extra: str, among: tuple[str, ...]) -> bool:
        return any(r.startswith(extra) or (extra.startswith(r) and not _word(extra[len(r)])) for r in among)

    if skip:   # healing already narrowed the row to the few tokens that agree with the typed text
        pool = [i for i in np.flatnonzero(np.isfinite(row)) if len(special.texts[i]) <= skip or
                fits(special.texts[i][skip:], rests)]
    else:
        near = np.zeros(len(row), bool)
        for r in rests:
            near |= special.agrees(r) if r else ~special.starts_word
        pool = [i for i in np.flatnonzero(near & np.isfinite(row)) if fits(special.texts[i], rests)]
    if pool:   # (a complete name's rest is "": then tokens that start no name, end markers among them, fit)
        keep = row[pool]
        if used:   # (per step while a name is spelled: only where the file uses some of them)
            keep = keep + USED_BONUS * np.array([fits(special.texts[i][skip:], used) for i in pool])
        row[:] = -np.inf
        row[pool] = keep


def fill_line(row: np.ndarray, healing: str, special: SpecialIds) -> None:
    """A blank cursor line, in place on the leftmost slot's logits: no end marker and no line break there (while
    `healing`, none in what a token spells past the typed text). Untouched if nothing else is left."""
    keep = row.copy()
    row[special.breaks_after(healing) if healing else special.breaks_line] = -np.inf
    row[list(special.ends)] = -np.inf
    if not np.isfinite(row).any():
        row[:] = keep


def ended_text(lead: str, token: int, stop: tuple[str, ...], special: SpecialIds) -> str | None:
    """The result's text if `token` ends it after `lead`: an end marker ends it there, a token that writes a stop
    sequence just past the stop; None if the token does not end it."""
    if token in special.ends_set:
        return lead
    text = lead + special.texts[token]
    cuts = [text.find(s, len(lead)) + len(s) for s in stop if s in text[len(lead):]]
    return text[:min(cuts)] if cuts else None


def guard_end(row: np.ndarray, token: int, conf: float, lead: str, stop: tuple[str, ...],
              may_end: Callable[[str], bool], draw: Callable[[np.ndarray], tuple[int, float]],
              special: SpecialIds) -> tuple[int, float]:
    """(token, confidence) for the slot after `lead` (the result so far): the chosen one, or, while it would end
    the result where `may_end` refuses (an end marker, or a token that writes a stop sequence), another `draw`
    from the slot's logits `row` without it; after GUARD_TRIES refusals, a draw with no ending token at all."""
    row = row.copy()
    for _ in range(GUARD_TRIES):
        text = ended_text(lead, token, stop, special)
        if text is None or may_end(text):
            return token, conf
        row[token] = -np.inf
        if not np.isfinite(row).any():
            return token, conf
        token, conf = draw(row)
    row[list(special.ends)] = -np.inf
    row[special.writes(stop)] = -np.inf
    if not np.isfinite(row).any():
        return token, conf
    return draw(row)


def refused_break(win: np.ndarray, masked: np.ndarray, stop: tuple[str, ...], text_before: Callable[[int], str | None],
                  may_end: Callable[[str], bool], special: SpecialIds) -> int | None:
    """The slot of the first stop-writing token committed before the leftmost masked slot, if `may_end` refuses
    the text it ends (the caller re-masks it, and the next step decides that slot under the guard); else None.
    `text_before(k)` is the result's text before slot k (None while healing has not covered the typed text)."""
    filled = int(np.argmax(masked)) if masked.any() else len(win)
    hits = np.flatnonzero(special.writes(stop)[win[:filled]] & ~masked[:filled])
    if not len(hits):
        return None
    k = int(hits[0])
    if any(t in special.ends_set for t in win[:k].tolist()):
        return None
    lead = text_before(k)
    if lead is None or may_end(ended_text(lead, int(win[k]), stop, special)):
        return None
    return k


def pad_after_end(win: np.ndarray, masked: np.ndarray, special: SpecialIds) -> int | None:
    """In place: every slot after the first committed end marker becomes committed padding. Its index, or None."""
    ends = np.flatnonzero(~masked & np.isin(win, special.ends))
    if not len(ends):
        return None
    win[ends[0]:] = special.eom
    masked[ends[0]:] = False
    return int(ends[0])


def writes_stop(text: str, stop: tuple[str, ...]) -> bool:
    return any(s in text for s in stop)


def through_stop(tokens: list[int], stop: tuple[str, ...], text_of: Callable[[list[int]], str]) -> list[int]:
    """The leading tokens through the one that completes a stop sequence: what a result keeps (tokens a step
    committed past it are cut with the text, and are not counted as generated). Bisection: texts only grow."""
    lo, hi = 0, len(tokens)
    if not writes_stop(text_of(tokens), stop):
        return tokens
    while lo + 1 < hi:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if writes_stop(text_of(tokens[:mid]), stop) else (mid, hi)
    return tokens[:hi]


def log_softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


GREEDY_BELOW = 1e-6


def choose(logits: np.ndarray, temperature: float, top_p: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(N, V) logits → (tokens, confidences): greedy at temperature 0, else nucleus sampling.
    Confidence is the chosen token's probability under the untempered distribution. A temperature below
    GREEDY_BELOW is greedy: the tempered distribution is one-hot in float32 already, and dividing by it overflows."""
    logp = log_softmax(logits.astype(np.float32))
    if temperature < GREEDY_BELOW:
        tokens = logp.argmax(-1)
    else:
        p = np.exp(log_softmax(logits / temperature))
        order = np.argsort(-p, axis=-1)
        sorted_p = np.take_along_axis(p, order, -1)
        keep = np.cumsum(sorted_p, -1) - sorted_p < top_p
        keep[:, 0] = True                                   # the top token, even at a top_p float32 rounds to 0
        sorted_p = np.where(keep, sorted_p, 0)
        sorted_p /= sorted_p.sum(-1, keepdims=True)
        u = rng.random((len(p), 1))
        idx = np.minimum((np.cumsum(sorted_p, -1) < u).sum(-1), p.shape[-1] - 1)
        tokens = np.take_along_axis(order, idx[:, None], -1)[:, 0]
    return tokens, np.exp(np.take_along_axis(logp, tokens[:, None], -1)[:, 0])

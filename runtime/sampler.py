"""The masked-diffusion sampler: a window of <|mask|> slots between prefix and suffix, filled over denoising steps.

Options (unknown ones raise):
    window       int    slots between prefix and suffix (the most tokens a result can have), >= 1
    block        int    slots decoded together, left to right (semi-autoregressive); >= window means one block
    threshold    float  in (0, 1]: commit every masked slot whose confidence reaches it (at least one per step)
    temperature  float  0: greedy and deterministic; > 0: sample
    top_p        float  in (0, 1]: nucleus sampling when temperature > 0
    seed         int    sampling seed (same request and seed → same output)
    stop         list   strings; the result ends before the first one
    deadline     float  time.monotonic() after which decoding stops with the text before the first masked slot
    edit         str    a window of existing tokens: 'all' re-masks them, 'repair' its least likely few, 'none' `masked`
    stripes      int    'repair' scores in this many passes, each masking every stripes-th slot; 0: one, none masked
    repair       Plan   'repair': what analysis says of the block (runtime/repair.py: where to look, what to offer)
    eom_bias     float  added to the <|eom|> logit: > 0 ends middles earlier (the model tends to overfill a window)
    forced       str    text the window must begin with (healing: the cursor's typed line), removed from the result
    fill_line    bool   the cursor's line is blank: it gets a non-blank character before the result may end or break it
    parallel_ends bool  an end marker right after this step's slots is committed with them (else in a pass of its own)
    max_tokens   int    the most tokens of new text a result keeps (a client's max_tokens); default: the window's
    names        tuple  the rests of the names that exist at the cursor (runtime/names.py): only those are spelled
    used         tuple  the rests of those names the file uses elsewhere: preferred
    draft        tuple  tokens expected after the given slots (runtime/drafts.py): the leading ones that agree commit
    commit_with  callable  Step -> bool mask: the slots to commit instead of `commit_rule`'s (an eval's oracle)
    may_end      callable  text -> bool: whether the result may end as `text` (syntax guidance: runtime/syntax.py
                        end_guard); where it says no, no end marker or stop-writing token ends it there

A Denoiser is a state machine: `inputs()` gives the sequence for the next forward pass and `advance(logits)`
consumes that pass's logits for the window. The scheduler batches the passes of many Denoisers; `denoise()` is
the one-request loop. Each step is LLaDA's: predict every masked slot of the active block, keep the confident
predictions (`commit_rule`), leave the rest masked. The policies that constrain a step (healing, a blank line's
first text, syntax-guided ends, the padding after an end) are small functions in runtime/policies.py.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, fields
from typing import Callable, Iterator

import numpy as np

from runtime import repair
from runtime.frames import Frame, Result, Stats, Step, frame_text
from runtime.policies import (choose, fill_line, guard_end, heal, names_left, narrow, pad_after_end, refused_break,
                              through_stop, writes_stop)
from runtime.repair import Plan, repair_refill, span_to_refill, stripe_of, striped, token_probs
from runtime.request import EOM_BIAS, THRESHOLD
from runtime.vocab import SpecialIds

MIN_PROB = 1e-6              # floor for a committed slot's probability (a forced commit may have none)
END_THRESHOLD = 0.97         # an end marker committed in the same step as the content before it needs this confidence
                             # (held-out editor cursors: at 0.9 one answer in 90 ended shorter than one at a time)
EDIT_MODES = ("all", "repair", "none")


@dataclass
class SamplerOptions:
    window: int = 32
    block: int = 32
    threshold: float = THRESHOLD
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0
    stop: tuple[str, ...] = ()
    deadline: float | None = None
    edit: str = "all"
    stripes: int = repair.STRIPES   # 0 for a model trained to judge present tokens (model/objective.py corrupt_tokens)
    repair: Plan = Plan()
    eom_bias: float = EOM_BIAS
    forced: str = ""
    fill_line: bool = False
    parallel_ends: bool = True
    max_tokens: int | None = None
    may_end: Callable[[str], bool] | None = None
    draft: tuple[int, ...] = ()
    names: tuple[str, ...] = ()
    used: tuple[str, ...] = ()
    commit_with: Callable[[Step], np.ndarray] | None = None

    def __post_init__(self):
        if min(self.window, self.block, 1 if self.max_tokens is None else self.max_tokens) < 1:
            raise ValueError("window, block and max_tokens must be at least 1")
        if not 0 < self.threshold <= 1:
            raise ValueError("threshold must be in (0, 1]")
        if self.temperature < 0 or not 0 < self.top_p <= 1:
            raise ValueError("temperature must be >= 0 and top_p in (0, 1]")
        if self.edit not in EDIT_MODES or self.stripes < 0:
            raise ValueError(f"edit must be one of {EDIT_MODES}, not {self.edit!r}, and stripes >= 0")
        self.stop = tuple(s for s in self.stop if s)

    @classmethod
    def from_dict(cls, d: dict) -> "SamplerOptions":
        if unknown := set(d) - {f.name for f in fields(cls)}:
            raise ValueError(f"unknown sampler options {sorted(unknown)}")
        return cls(**d)


def commit_rule(conf: np.ndarray, is_end: np.ndarray, leftmost: np.ndarray, threshold: float, end_threshold: float,
                may_end_at: Callable[[int, np.ndarray], bool]) -> np.ndarray:
    """Which of a step's predicted slots to commit (LLaDA's low-confidence remasking with a threshold, as in
    Fast-dLLM): every one whose confidence reaches `threshold`, and at least the most confident. An end marker
    decides the length, so it is committed only as the slot right after this step's content: at `threshold`
    where it is the first candidate, else at `end_threshold`; and only where `may_end_at(k, commit)` agrees (every
    slot before it filled, the syntax guidance) — confident padding at the window's right edge must not creep
    leftwards over the content. A lone end marker is committed only at the leftmost masked slot."""
    commit = (conf >= threshold) & ~is_end
    if not commit.any():   # nothing confident enough: the single most confident slot that may be committed
        commit[np.where(~is_end | leftmost, conf, -1.0).argmax()] = True
    left = np.flatnonzero(~commit)
    if len(left) and is_end[left[0]] and conf[left[0]] >= (threshold if left[0] == 0 else end_threshold) and \
            may_end_at(int(left[0]), commit):
        commit[left[0]] = True   # the end right after this step's content: no pass of its own
    return commit


class Denoiser:
    """One request's decoding state. ids = prefix + window + suffix; the window spans [start, end)."""

    def __init__(self, prefix: list[int], window: list[int] | None, suffix: list[int], opts: SamplerOptions,
                 special: SpecialIds, decode: Callable[[list[int]], str], masked: np.ndarray | None = None):
        if not prefix:
            raise ValueError("the prefix must hold at least one token (start files with <|eos|>)")
        self.opts, self.special, self.decode = opts, special, decode
        win = np.array(window if window is not None else [special.mask] * opts.window, dtype=np.int64)
        self.ids = np.concatenate([np.array(prefix, np.int64), win, np.array(suffix, np.int64)])
        self.start, self.end = len(prefix), len(prefix) + len(win)
        self.original = win.copy()
        self.masked = np.ones(len(win), bool) if window is None else (
            masked.copy() if masked is not None else np.full(len(win), opts.edit == "all"))
        self.scoring = window is not None and opts.edit == "repair"
        self.stripe, self.scores, self.around = 0, np.ones(len(win), np.float32), None   # around: _refill's
        self.prob = np.ones(len(win), np.float32)   # each slot's probability when it was committed
        self.step_of = np.zeros(len(win), np.int64)   # the step that committed each slot (0: given; -1: masked still)
        self.rng = np.random.default_rng(opts.seed)
        self.stats, self.t0 = Stats(), time.perf_counter()
        self.done, self.line_filled = False, not opts.fill_line
        self.cache = None   # the engine's keys/values for the fixed context (opaque here)
        self.context_key, self.context_window = b"", 0   # the engine's kept context for it (opaque here)
        self.final: list[int] = []   # the result's tokens, set by `finish` (the client's cap applied)
        self.ids[self.start:self.end][self.masked] = special.mask
        self.step_of[self.masked] = -1
        # leading slots given before decoding (healing's typed pieces): fixed, so no step needs their outputs
        self.given_lead = 0 if self.scoring or not self.masked.any() else int(np.flatnonzero(self.masked)[0])
        self.draft = np.r_[[-1] * self.given_lead, opts.draft, [-1] * len(win)][:len(win)]   # each slot's (-1: none)
        if not self.scoring and not self.masked.any():
            self.finish("nothing to do")
        elif self.scoring and (at := opts.repair.insert_at) is not None:   # analysis says where: no scoring
            self._refill((at, at), repair.INSERT)

    # --- the two calls a scheduler makes -------------------------------------------------------------
    def inputs(self) -> np.ndarray:
        """The sequence for the next forward pass (the logits needed start at position start - 1)."""
        return striped(self.ids, self.start, self.end, self.stripe, self.special.mask, self.opts.stripes) \
            if self.scoring else self.ids

    def advance(self, logits: np.ndarray) -> Frame:
        """Consume the logits of one forward pass for the window slots ((window, V) or longer): one denoising step
        — the block's masked slots, constrained where a policy says so (healing, a blank line's first text,
        syntax-guided ends), are predicted, the commit rule picks which to keep, and decoding ends when nothing
        is masked, a stop sequence is written, or the deadline has passed."""
        t0 = time.perf_counter()
        logits = logits[: self.end - self.start].copy()
        logits[:, self.special.banned] = -np.inf
        logits[:, self.special.eom] += self.opts.eom_bias
        self.stats.forward_passes += 1
        if self.scoring:
            return self._score(logits)
        self.stats.steps += 1
        cand, healing = self._constrain(logits, np.flatnonzero(self.masked & self._block_mask()))
        tokens, conf = choose(logits[cand], self.opts.temperature, self.opts.top_p, self.rng)
        leftmost = cand == int(self.masked.argmax())
        if self.opts.may_end is not None and not healing and leftmost[0]:
            lead = self._past_forced(self.decode(self._tokens())) or ""
            tokens[0], conf[0] = guard_end(logits[cand[0]], int(tokens[0]), float(conf[0]), lead, self.opts.stop,
                                           self.opts.may_end, self._draw, self.special)
        end_threshold = max(END_THRESHOLD, self.opts.threshold) if self.opts.parallel_ends else np.inf
        is_end = np.isin(tokens, self.special.ends)
        commit = commit_rule(conf, is_end, leftmost, self.opts.threshold, end_threshold,
                             lambda k, commit: self._may_end_at(cand, tokens, commit, k))
        run = (tokens == self.draft[cand]) & (cand == cand[0] + np.arange(len(cand))) & leftmost[0]
        drafted = np.cumprod(run).astype(bool)   # the leading run of slots, from the leftmost, that agree with the draft
        self.stats.drafted += int((drafted & ~commit).sum())
        commit |= drafted
        if self.opts.commit_with is not None:
            commit = self.opts.commit_with(Step(cand, tokens, conf, is_end, logits[cand], commit,
                                                self.masked.copy(), self.stats.steps))
        ended = self._commit(cand[commit], tokens[commit], conf[commit])
        reason = self._stop_reason()
        if reason or not self.masked.any():
            self.finish(reason or ("eom" if ended else "window"))
        self.stats.sample_ms += 1000 * (time.perf_counter() - t0)
        return self.frame()

    def _constrain(self, logits: np.ndarray, cand: np.ndarray) -> tuple[np.ndarray, str]:
        """The candidate slots after the policies, and the typed text still to heal. While healing, only the
        leftmost slot, under `heal`; while the cursor's line is blank, `fill_line` at the leftmost masked slot.
        Constrains `logits` in place."""
        healing = self._healing_left()
        if healing:
            cand = cand[:1]
            heal(logits[cand[0]], healing, self.special)
        if self.opts.names and len(cand) and cand[0] == int(self.masked.argmax()) and \
                (rests := names_left(spelled := self._text(self._tokens()), self.opts.names)) is not None:
            cand = cand[:1]   # a name being spelled: one slot at a time, each a name that exists (runtime/names.py)
            narrow(logits[cand[0]], rests, self.special, len(healing), names_left(spelled, self.opts.used) or ())
        if not self.line_filled:
            text = self._past_forced(self.decode(self._tokens())) or ""
            self.line_filled = bool(text.strip(" \t\r\n"))
            if not self.line_filled and "\n" not in text and len(cand) and cand[0] == int(self.masked.argmax()):
                fill_line(logits[cand[0]], healing, self.special)
        return cand, healing

    def _commit(self, slots: np.ndarray, tokens: np.ndarray, conf: np.ndarray) -> bool:
        """Write the committed tokens; everything after the first committed end marker becomes padding. True when
        the window holds an end marker."""
        win = self.ids[self.start:self.end]
        win[slots], self.masked[slots] = tokens, False
        self.prob[slots] = np.clip(conf, MIN_PROB, 1.0)
        self.step_of[slots] = self.stats.steps
        was = self.masked.copy()
        if (end := pad_after_end(win, self.masked, self.special)) is None:
            return False
        self.step_of[end:][was[end:]] = self.stats.steps
        return True

    def _stop_reason(self) -> str:
        """'stop' once a stop sequence is written (a stop token committed early that `may_end` refuses is
        re-masked first), 'deadline' once the deadline passed with slots still masked, else ''."""
        if self.opts.stop:   # decode only when there is a stop sequence to look for
            if self.opts.may_end is not None:
                self._recheck_break()
            if writes_stop(self._text(self._tokens()), self.opts.stop):
                return "stop"
        if self.masked.any() and self.opts.deadline is not None and time.monotonic() >= self.opts.deadline:
            return "deadline"
        return ""

    def _may_end_at(self, cand: np.ndarray, tokens: np.ndarray, commit: np.ndarray, k: int) -> bool:
        """Whether the result may end at candidate k, given this step's commits: every slot before it filled, a
        blank cursor line written on, and syntax guidance (if any) agreeing."""
        win, masked = self.ids[self.start:self.end].copy(), self.masked.copy()
        win[cand[commit]], masked[cand[commit]] = tokens[commit], False
        if masked[:cand[k]].any():
            return False
        if self.opts.may_end is None and self.line_filled:
            return True
        lead = self._past_forced(self.decode(win[:cand[k]].tolist()))
        if lead is None or (not self.line_filled and not lead.strip(" \t\r\n")):
            return False
        return self.opts.may_end is None or bool(self.opts.may_end(lead))

    def active(self) -> tuple[int, int]:
        """Positions [lo, hi) the next step can change: the current block (the whole window while scoring)."""
        if self.scoring or self.done:
            return self.start, self.end
        first = int(np.flatnonzero(self.masked)[0]) // self.opts.block * self.opts.block
        return self.start + first, min(self.start + first + self.opts.block, self.end)

    # --- helpers ---------------------------------------------------------------------------------------
    def _past_forced(self, text: str) -> str | None:
        """The window's text after the forced (healed) text; None while the text does not cover it yet."""
        forced = self.opts.forced
        return text[len(forced):] if text.startswith(forced) else None

    def _healing_left(self) -> str:
        """The part of the forced text that the committed leading tokens do not cover yet."""
        lead = self.decode(self._tokens()) if self.opts.forced else ""
        return self.opts.forced[len(lead):] if len(lead) < len(self.opts.forced) else ""

    def _recheck_break(self) -> None:
        """`refused_break`: a stop-writing token committed ahead of the frontier that `may_end` refuses, once the
        slots before it are filled, is re-masked (the next step decides that slot under the guard)."""
        win = self.ids[self.start:self.end]
        k = refused_break(win, self.masked, self.opts.stop, lambda k: self._past_forced(self.decode(win[:k].tolist())),
                          self.opts.may_end, self.special)
        if k is not None:
            win[k] = self.special.mask
            self.masked[k], self.step_of[k] = True, -1

    def _draw(self, row: np.ndarray) -> tuple[int, float]:
        """One slot's token and confidence from its logits, as the request samples."""
        token, conf = choose(row[None], self.opts.temperature, self.opts.top_p, self.rng)
        return int(token[0]), float(conf[0])

    def _block_mask(self) -> np.ndarray:
        """Slots of the leftmost block that still has masked slots."""
        (lo, hi), at = self.active(), np.arange(self.start, self.end)
        return (at >= lo) & (at < hi)

    def _score(self, logits: np.ndarray) -> Frame:
        stripe = stripe_of(self.end - self.start, self.stripe, self.opts.stripes)
        self.scores[stripe] = token_probs(logits[stripe], self.original[stripe])
        self.stripe += 1
        if self.stripe >= max(self.opts.stripes, 1) or self.stripe >= self.end - self.start:
            self.scoring = False   # then the least likely token is re-filled, if one is unlikely
            if (chosen := span_to_refill(self.original, self.scores, self.opts.repair, self.special)) is None:
                self.finish("nothing to repair")
            else:
                self._refill(*chosen)
        return self.frame()

    def _refill(self, span: tuple[int, int], slack: int) -> None:
        """The window becomes the span's re-masked slots (repair.repair_refill); `around`: the block around."""
        self.ids, self.around = repair_refill(self.ids, self.start, self.end, span, self.special, slack)
        self.start, k = self.start + len(self.around[0]), len(self.around[1]) + slack
        self.end, self.cache, self.scoring = self.start + k, None, False
        self.masked, self.prob, self.step_of = np.ones(k, bool), np.ones(k, np.float32), np.full(k, -1)
        self.original, self.draft = self.ids[self.start:self.end].copy(), np.full(k, -1)

    def _tokens(self) -> list[int]:
        win = self.ids[self.start:self.end]
        stop = self.masked | np.isin(win, self.special.ends)   # the first masked slot or end marker
        return win[:int(stop.argmax()) if stop.any() else len(win)].tolist()

    def _text(self, tokens: list[int]) -> str:
        """The text of leading tokens past the forced text ('' while they do not cover it yet)."""
        return self._past_forced(self.decode(tokens)) or ""

    def finish(self, reason: str) -> None:
        self.done = True
        self.stats.stop_reason = reason
        tokens = through_stop(self._tokens(), self.opts.stop, self._text) if reason == "stop" else self._tokens()
        healed = 0  # tokens that only re-spell the forced text are not generated tokens
        if self.opts.forced:
            while healed < len(tokens) and len(self.decode(tokens[:healed])) < len(self.opts.forced):
                healed += 1
        # a healed token that spells past the forced text ("retur" → "return") wrote text the user sees: it counts
        spills = healed > 0 and len(self.decode(tokens[:healed])) > len(self.opts.forced)
        if self.opts.max_tokens is not None and len(tokens) - healed + spills > self.opts.max_tokens:
            tokens = tokens[:healed - spills + self.opts.max_tokens]   # the client's cap, not the window's
            if reason in ("eom", "stop"):
                self.stats.stop_reason = "window"
        self.final = tokens
        self.stats.tokens = len(tokens) - healed + spills
        win = self.ids[self.start:self.end]
        ended = len(tokens) < len(win) and not self.masked[len(tokens)] and int(win[len(tokens)]) in \
            self.special.ends_set   # the end marker's slot
        # one unsure token is enough to make a line wrong: on held-out editor cursors the least probable token
        # separated right from wrong answers better than the tokens' geometric mean (evals/editor.py)
        probs = self.prob[healed:len(tokens) + ended]
        self.generated_probs = probs.copy()   # for the engine's calibrator (runtime/confidence.py)
        self.stats.confidence = float(probs.min()) if len(probs) else 0.0
        self.stats.tokens_per_forward = self.stats.tokens / max(1, self.stats.forward_passes)
        if self.around is not None:   # a repair: its span as re-filled where runtime/repair.py offers it, else as
            sure = repair.offered(self.stats.confidence)   # it was; the block ends where it did
            self.final = self.around[0] + (tokens if sure else self.around[1]) + self.around[2]
            self.stats.stop_reason = "eom"
        self.stats.ms = 1000 * (time.perf_counter() - self.t0)

    def frame(self) -> Frame:
        text = frame_text(self.ids[self.start:self.end], self.masked, self.special.ends_set, self.decode)
        text = text if self.around is None else self.decode(self.around[0]) + text + self.decode(self.around[2])
        past = self._past_forced(text)   # the forced text is already in the document
        return Frame(self.stats.steps, past if past is not None else text.lstrip("\n"), int((~self.masked).sum()),
                     int(self.masked.sum()))

    def result(self) -> Result:
        tokens = self.final if self.done else self._tokens()
        text = self._past_forced(self.decode(tokens)) or ""   # healing unfinished: nothing stable past the cursor
        cut, self.stats.stop_word = min(((text.find(s), s) for s in self.opts.stop if s in text), default=(-1, ""))
        return Result(text[:cut] if cut >= 0 else text, tokens, self.stats)


def denoise(forward: Callable[[np.ndarray, np.ndarray, int], np.ndarray], d: Denoiser) -> Iterator[Frame]:
    """Run one Denoiser to the end with batch-of-one forward passes, yielding a frame per pass."""
    while not d.done:
        ids = d.inputs()[None]
        logits = forward(ids, np.ones_like(ids, dtype=bool), d.start - 1)[0]
        yield d.advance(logits)

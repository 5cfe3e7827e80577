"""Answers kept across keystrokes: a user typing what the last suggestion said gets the rest of it at once, with no
forward pass (as editors keep ghost text while it is typed through: llama.vim's cache, VS Code's inline
suggestions).

An answer is kept when an editor would show it (its confidence reaches the editors' threshold,
`runtime.engine.editor_min_confidence`), it was decoded greedily to its own end (not cut by a deadline or a
cancellation), and it holds no U+FFFD (a character cut between byte tokens, which the next keystroke decodes
right). A later request with the same suffix and settings whose prefix is the kept prefix plus a start of
the kept text (what the user typed since, possibly nothing: a retry, or a backspace back to it) gets the rest of
the text, the same confidence, and stats that say so (`typed_through`, no passes, no tokens generated) — if the
request asks for no more tokens than the kept answer's did (an answer a small cap cut, or sized, never serves a
larger one) and the rest fits its cap. Once the user types something else, or has typed the whole answer, the
next request is decoded.

Chosen on held-out typed lines (docs/history.md, "Probes behind single rules"): keeping only answers an editor shows, because a withheld answer typed through stays withheld where
a fresh decoding, knowing the typed characters, often becomes sure enough to show.
"""
from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable

from runtime.frames import Completion, Stats

KEPT_ANSWERS = 64          # answers kept (a few lines' worth of keystrokes for several editors)
KEPT_REASONS = ("eom", "stop", "window")   # answers decoded to their own end; a deadline's or a cancellation's are cut


@dataclass(frozen=True)
class Settings:
    """What besides the prefix decides an answer: two requests that differ here never share one. (The cap is not
    here: an answer serves a request that asks for no more tokens than its own did, if the rest fits.)"""
    mode: str
    suffix: str
    stop: tuple
    threshold: float
    eom_bias: float
    single_line: bool | None
    language: str | None
    window: int | None
    block: int | None
    editor: bool
    extra: tuple
    window_multiple: int
    path: str | None        # names analysis reads the file's imports from where it is
    root: str | None

    @classmethod
    def of(cls, req) -> "Settings":
        """An editor's request (`runtime.engine.editor_request`) is shaped by its cursor: a block on a blank line, the
        rest of a line once the line has text (its cap, its newline stop). Those are left out, so that typing the
        first characters of a block that was shown keeps it (a user's probe: it vanished at the first letter)."""
        shaped = req.editor
        return cls(req.mode, req.suffix, tuple(s for s in req.stop if not (shaped and s == "\n")), req.threshold,
                   req.eom_bias, None if shaped else req.single_line, req.language, req.window, req.block, req.editor,
                   tuple(req.extra), req.window_multiple, req.path, req.root)


@dataclass
class Answered:
    """A request answered before any pass — from a kept answer, a repair analysis made (runtime/fixes.py), or an
    import line analysis writes (`import_line`):
    finished already (the scheduler hands it straight to `Engine.finish`, which returns `completion`)."""
    completion: object            # runtime.engine.Completion
    t0: float = field(default_factory=time.perf_counter)
    done: bool = True
    cache: None = None

    def finish(self, reason: str) -> None:   # a cancelled request that was answered already keeps its answer
        pass


def import_line(req, found: tuple[str, tuple[str, ...]], lacking: tuple[str, ...], count_tokens,
                names_ms: float):
    """An import line's rest where the file uses names the module has and nothing in the file binds them
    (runtime/names.py `missing`): all of them, in isort's order, as many whole ones as the client's `max_tokens`
    takes. Analysis answers it; the model is not asked (runtime/engine.py)."""
    typed, names = found
    text = ", ".join(lacking)[len(typed):]
    while ", " in text and count_tokens(text) > req.max_new_tokens:
        text = text[:text.rfind(", ")]
    return by_analysis(req, text, names=str(len(names)), names_ms=names_ms, tokens=count_tokens(text),
                       answered_by="analysis")


def by_analysis(req, text: str, **stats):
    """A result analysis made before any pass (a repair's fix, an import line): sure (confidence 1), not
    calibrated, with `stats` besides."""
    return Completion(req.id, text, text, {**vars(Stats(stop_reason="eom", confidence=1.0)), "calibrated": False,
                                           **stats})


def answered_stats(kept: dict) -> dict:
    """The stats of a request answered from a kept answer: no step, pass or generated token (a fresh `Stats`), the
    kept answer's ending and confidence, and `typed_through`."""
    fresh = Stats(stop_reason=kept.get("stop_reason", ""), confidence=kept.get("confidence", 0.0),
                  stop_word=kept.get("stop_word", ""), typed_through=True,
                  context_tokens=kept.get("context_tokens", 0), truncated=kept.get("truncated", False))
    return {**vars(fresh), "calibrated": kept.get("calibrated", False)}


def rest_after(kept_prefix: str, text: str, prefix: str) -> str | None:
    """The rest of `text` (an answer at `kept_prefix`) at `prefix`, when what was typed since is a start of it and
    something other than blanks is left; else None. (The language server's cache of shown completions uses it too.)"""
    if not prefix.startswith(kept_prefix):
        return None
    typed = prefix[len(kept_prefix):]
    return text[len(typed):] if text.startswith(typed) and text[len(typed):].strip() else None


class KeptAnswers:
    def __init__(self, count: Callable[[str], int], entries: int = KEPT_ANSWERS, bar: float | None = None):
        self.count, self.entries = count, entries   # count: a text's tokens (the request's cap is in tokens)
        self.bar = bar   # the confidence an answer needs to be kept; None: the editors' threshold (the engine's)
        self._kept: OrderedDict[tuple, tuple] = OrderedDict()   # (settings, prefix) → (text, stats, cap)

    def clear(self) -> None:
        self._kept.clear()

    def keep(self, req, text: str, stats: dict, min_confidence: float) -> None:
        """Keep a finished answer for the keystrokes that type it, if an editor would show it."""
        if req.mode == "edit" or req.temperature != 0 or stats.get("stop_reason") not in KEPT_REASONS or \
                not text.strip() or "\ufffd" in text or \
                stats.get("confidence", 0.0) < (min_confidence if self.bar is None else self.bar):
            return
        key = (Settings.of(req), req.prefix)
        # a copy (the first answer's stats may still be changed by its caller), with the cap it was decoded under
        self._kept[key] = (text, dict(stats), req.max_new_tokens)
        self._kept.move_to_end(key)
        while len(self._kept) > self.entries:
            self._kept.popitem(last=False)

    def typed_through(self, req) -> tuple[str, dict] | None:
        """(the rest of a kept answer, its stats) for a request whose prefix typed a start of it; the one kept at
        the longest prefix if several match. None if none does, or if only blank text would be left."""
        if req.mode == "edit" or req.temperature != 0:
            return None
        settings, best = Settings.of(req), None
        for (s, prefix), (text, stats, cap) in self._kept.items():
            if s == settings and req.max_new_tokens <= cap and (not best or len(prefix) > len(best[0])) and \
                    (rest := rest_after(prefix, text, req.prefix)) is not None:
                best = (prefix, rest, stats)
        if best is None or self.count(best[1]) > req.max_new_tokens:
            return None
        self._kept.move_to_end((settings, best[0]))
        return best[1], best[2]

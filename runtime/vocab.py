"""The token ids the sampler treats specially (mask, end markers, banned ids) and each token's text, with the
per-vocabulary tables its constraints read (healing, line breaks, stop sequences), built once per model."""
from __future__ import annotations

import bisect

import numpy as np


class SpecialIds:
    """The token ids the sampler treats specially, and each token's text (for healing constraints)."""

    def __init__(self, mask: int, eom: int, ends: tuple[int, ...], banned: tuple[int, ...], texts: list[str]):
        self.mask, self.eom = mask, eom
        self.ends = ends                 # tokens that end the generated text (<|eom|>, <|eos|>)
        self.ends_set = frozenset(ends)
        self.banned = list(banned)       # never generated (mask, pad, sentinels)
        self.texts = texts
        # tokens that break the line before writing anything on it ("\n    ", "  \n")
        self.starts_word = np.array([bool(t) and (t[0].isalnum() or t[0] == "_") for t in texts])
        self.breaks_line = np.array([("\n" in t) and not t.split("\n", 1)[0].strip(" \t\r") for t in texts])
        self._breaks_after: dict[str, np.ndarray] = {}
        self._writes: dict[tuple[str, ...], np.ndarray] = {}
        # for `agrees`: the texts in sorted order (the tokens starting with a text are one run of it) and each
        # text's tokens (the tokens a text starts with are found by looking up its prefixes)
        self._order = np.array(sorted((i for i, t in enumerate(texts) if t), key=texts.__getitem__), np.int64)
        self._sorted = [texts[i] for i in self._order]
        self._by_text: dict[str, list[int]] = {}
        for i, t in enumerate(texts):
            if t:
                self._by_text.setdefault(t, []).append(i)

    def breaks_after(self, text: str) -> np.ndarray:
        """(V,) bool: tokens that, past the first len(text) characters, break the line before writing on it."""
        if text not in self._breaks_after:
            if len(self._breaks_after) >= 64:  # blank-run spellings are few; bound the cache all the same
                self._breaks_after.clear()
            rest = [t[len(text):] for t in self.texts]
            self._breaks_after[text] = np.array([("\n" in r) and not r.split("\n", 1)[0].strip(" \t\r") for r in rest])
        return self._breaks_after[text]

    def writes(self, stop: tuple[str, ...]) -> np.ndarray:
        """(V,) bool: tokens whose text contains one of the stop strings."""
        if stop not in self._writes:
            if len(self._writes) >= 64:
                self._writes.clear()
            self._writes[stop] = np.array([any(s in t for s in stop) for t in self.texts], dtype=bool)
        return self._writes[stop]

    def agrees(self, text: str) -> np.ndarray:
        """(V,) bool: tokens whose text starts `text` or continues past it (a bisection and len(text) lookups,
        not a pass over the vocabulary)."""
        ok = np.zeros(len(self.texts), bool)
        if not text:
            return ok
        lo = bisect.bisect_left(self._sorted, text)
        hi = bisect.bisect_left(self._sorted, text + "\U0010ffff", lo)
        ok[self._order[lo:hi]] = True
        for k in range(1, len(text)):
            ok[self._by_text.get(text[:k], [])] = True
        return ok

    @classmethod
    def from_tokenizer(cls, tok, vocab: int | None = None) -> "SpecialIds":
        """From a tokenizer's roles; `vocab` is the width of the model's logits when its embedding has more rows
        than the tokenizer has tokens (padded tables, as Qwen2's): those ids have no text and are never generated."""
        texts = tok.token_bytes()
        vocab = max(vocab or 0, len(texts))
        texts += [""] * (vocab - len(texts))
        for i in tok.special_ids:
            texts[i] = ""
        ends = tuple(dict.fromkeys((tok.eom_id, tok.eos_id)))   # one id when the model pads with its end of text
        banned = sorted((tok.special_ids - set(ends)) | set(range(tok.vocab_size, vocab)))  # masks, padding, sentinels
        return cls(mask=tok.mask_id, eom=tok.eom_id, ends=ends, banned=tuple(banned), texts=texts)

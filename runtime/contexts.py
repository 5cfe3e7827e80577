"""Keys/values kept for contexts: one request's across its steps (`ContextCache`), and across requests
(`KeptContexts`): the same sequence again (a retry, another sample) reuses them exactly; the same prefix and
suffix around a window changed in a few slots (the next keystroke) reuses them with the suffix's keys rotated to
their new positions — Fast-dLLM's approximate cache, across requests instead of across blocks."""
from __future__ import annotations

from collections import OrderedDict

import numpy as np

ROPE_THETA = 10000.0              # the shipped model's RoPE base (model/network.py), unless its card says otherwise
CONTEXT_CACHE_ENTRIES = 8         # contexts kept across requests (≈ 10 MB each for the shipped model at 384 tokens)
STALE_TOKENS = 4                  # the next keystroke reuses a kept context computed for a window that differs from
                                  # its own in at most this many slots, typed on from it (`typed_on`; its suffix
                                  # keys rotated to their new positions); more, and it pays a full pass that
                                  # replaces it
WINDOW_GROWTH = 8                 # ... and whose window is at most this many slots longer or shorter (an editor's
                                  # window grows by 8 while a line is typed, runtime/engine.py): a line's context
                                  # (12 slots) served a block's request (32) at the same cursor, and the block came
                                  # out as garbage ("return average((\"\")" where the cold answer was the line)


class ContextCache:
    """One request's keys/values for every position outside its active region [lo, hi) (the block being decoded)
    and, for a model with shifted logits (`shift` 1), the slot before it (whose output predicts the block's first
    token). Window passes run only those and attend to these instead of recomputing them. `window` is the window's
    ids when they were computed."""

    def __init__(self, keys: np.ndarray, values: np.ndarray, region: tuple[int, int], window: np.ndarray,
                 shift: int = 1):
        self.keys, self.values = keys, values   # (n_layer, 1, kv heads, C, head_dim)
        self.region, self.window, self.shift = region, window, shift
        self._bound = None

    def on(self, model) -> tuple:
        """keys, values as the model's passes read them: on its device when it binds them (uploaded once per
        context, not once per pass), else these arrays."""
        if not model.bind:
            return self.keys, self.values
        if self._bound is None:
            self._bound = model.on_device(self.keys), model.on_device(self.values)
        return self._bound

    @property
    def length(self) -> int:
        return self.keys.shape[3]

    def narrowed(self, lo: int, keys: np.ndarray, values: np.ndarray) -> "ContextCache":
        """This context with its region starting at `lo` instead: `keys`, `values` (n_layer, 1, kv heads, n,
        head_dim) are those of the n positions that leave the region for the context (appended: attention does
        not care where a key sits, each carries its own position). A new object: a kept context stays as it is."""
        return ContextCache(np.concatenate([self.keys, keys], 3), np.concatenate([self.values, values], 3),
                            (lo, self.region[1]), self.window, self.shift)

    def moved(self, region: tuple[int, int], theta: float, pairs: str = "interleaved") -> "ContextCache":
        """This context for the same prefix with the window at `region` (a request's whole window): the suffix's
        keys rotated from their old positions to the new ones (RoPE rotations compose, so this is exact for the
        keys as computed; what is approximate is that they were computed beside another window's content).
        `pairs`: how the model's RoPE pairs dimensions (runtime/conventions.py)."""
        moved_by = region[1] - self.region[1]
        if moved_by == 0:
            return ContextCache(self.keys, self.values, region, self.window, self.shift)
        keys = self.keys.copy()
        k = keys[:, :, :, self.region[0] - self.shift:]   # the suffix's keys
        head_dim = k.shape[-1]
        angle = moved_by / theta ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
        cos, sin = np.cos(angle).astype(np.float32), np.sin(angle).astype(np.float32)
        first, second = (np.s_[..., ::2], np.s_[..., 1::2]) if pairs == "interleaved" else \
            (np.s_[..., :head_dim // 2], np.s_[..., head_dim // 2:])
        k1, k2 = k[first].copy(), k[second].copy()
        k[first], k[second] = k1 * cos - k2 * sin, k1 * sin + k2 * cos
        return ContextCache(keys, self.values, region, self.window, self.shift)


def padded(a: np.ndarray, b: np.ndarray, mask: int) -> tuple[np.ndarray, np.ndarray]:
    """Two windows at one length, the shorter read as ending in more masked slots."""
    n = max(len(a), len(b))
    return tuple(np.concatenate([w, np.full(n - len(w), mask, w.dtype)]) for w in (a, b))


def window_changes(a: np.ndarray, b: np.ndarray, mask: int) -> int:
    """Slots in which two windows differ: how many tokens one window has that the context computed beside the
    other never saw."""
    a, b = padded(a, b, mask)
    return int((a != b).sum())


def typed_on(a: np.ndarray, b: np.ndarray, mask: int) -> bool:
    """Whether one window's given slots (the typed pieces of the cursor line) continue the other's: at the first
    slot where they differ one of them is still masked. Typing and deleting at the cursor do that; replacing a
    word earlier in the line does not, and a context computed beside the old word kept answering for it (a user's
    probe: `raise ValueError(` → `raise KeyError(` got ValueError's message, one token changed)."""
    a, b = padded(a, b, mask)
    differ = np.flatnonzero(a != b)
    return not len(differ) or mask in (a[differ[0]], b[differ[0]])


class KeptContexts:
    """Contexts kept across requests, by the whole sequence (exact) and by prefix and suffix (the next keystroke).
    `stale_tokens` -1: only an identical sequence is reused."""

    def __init__(self, mask: int, rope_theta: float = ROPE_THETA, stale_tokens: int = STALE_TOKENS,
                 entries: int = CONTEXT_CACHE_ENTRIES, rope_pairs: str = "interleaved"):
        self.mask, self.rope_theta, self.stale_tokens, self.entries = mask, rope_theta, stale_tokens, entries
        self.rope_pairs = rope_pairs
        self._exact: OrderedDict[bytes, ContextCache] = OrderedDict()
        self._near: OrderedDict[bytes, ContextCache] = OrderedDict()

    @staticmethod
    def _exact_key(d) -> bytes:
        return np.array([d.start, d.end], np.int64).tobytes() + d.inputs().tobytes()

    @staticmethod
    def _near_key(d) -> bytes:
        ids = d.inputs()
        return np.array([d.start], np.int64).tobytes() + ids[:d.start].tobytes() + b"|" + ids[d.end:].tobytes()

    def find(self, d) -> ContextCache | None:
        """A kept context for a new request (a Denoiser before its first pass), marking the request's stats."""
        if (key := self._exact_key(d)) in self._exact:
            self._exact.move_to_end(key)
            d.stats.context_reused = True
            return self._exact[key]
        c = self._near.get(key := self._near_key(d))
        if c is None or self.stale_tokens < 0 or d.active() != (d.start, d.end) or \
                c.region != (d.start, d.start + len(c.window)) or abs(len(c.window) - (d.end - d.start)) > WINDOW_GROWTH \
                or window_changes(c.window, window := d.inputs()[d.start:d.end], self.mask) > self.stale_tokens \
                or not typed_on(c.window, window, self.mask):
            return None
        self._near.move_to_end(key)
        d.stats.context_reused = True
        return c.moved((d.start, d.end), self.rope_theta, self.rope_pairs)

    def keep(self, d, cache: ContextCache) -> None:
        """Keep a request's context from its first (full) pass."""
        for store, key in ((self._exact, self._exact_key(d)), (self._near, self._near_key(d))):
            store[key] = cache
            store.move_to_end(key)
            while len(store) > self.entries:
                store.popitem(last=False)

    def clear(self) -> None:
        self._exact.clear()
        self._near.clear()

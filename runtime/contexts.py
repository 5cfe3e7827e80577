"""Keys/values kept for contexts: one request's across its steps (`ContextCache`), and across requests
(`KeptContexts`). What is kept across requests is a *canonical* context: the prefix and suffix computed beside a
window that holds the typed pieces of the cursor's line (all but the last: healing's given slots) and mask slots
after them, at a window length rounded up to CONTEXT_MULTIPLE. It is a function of the request alone — never of
what was asked before — so a request gets the same keys/values whether they were kept or computed now (same
request, same answer), and the keystrokes that type a word share them (the suffix's keys rotated to the request's
own window length). Masking the last typed pieces too, so that a whole line shares one context, lost a tenth of
the right answers on held-out typed lines: the context must see what was typed."""
from __future__ import annotations

from collections import OrderedDict

import numpy as np

ROPE_THETA = 10000.0              # the shipped model's RoPE base (model/network.py), unless its card says otherwise
CONTEXT_CACHE_ENTRIES = 8         # contexts kept across requests (≈ 10 MB each for the shipped model at 384 tokens)
CONTEXT_MULTIPLE = 8              # a canonical context's window is the request's rounded up to this: typing a line
                                  # grows the window a token at a time, and eight tokens of it share one context


class ContextCache:
    """One request's keys/values for every position outside its active region [lo, hi) (the block being decoded)
    and, for a model with shifted logits (`shift` 1), the slot before it (whose output predicts the block's first
    token). Window passes run only those and attend to these instead of recomputing them."""

    def __init__(self, keys: np.ndarray, values: np.ndarray, region: tuple[int, int], shift: int = 1):
        self.keys, self.values = keys, values   # (n_layer, 1, kv heads, C, head_dim)
        self.region, self.shift = region, shift
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
                            (lo, self.region[1]), self.shift)

    def moved(self, region: tuple[int, int], theta: float, pairs: str = "interleaved") -> "ContextCache":
        """This context for the same prefix with the window at `region` (a request's whole window): the suffix's
        keys rotated from their old positions to the new ones (RoPE rotations compose, so this is exact for the
        keys as computed; what is approximate is that they were computed beside a window of another length).
        `pairs`: how the model's RoPE pairs dimensions (runtime/conventions.py)."""
        moved_by = region[1] - self.region[1]
        if moved_by == 0:
            return ContextCache(self.keys, self.values, region, self.shift)
        keys = self.keys.copy()
        k = keys[:, :, :, self.region[0] - self.shift:]   # the suffix's keys
        head_dim = k.shape[-1]
        angle = moved_by / theta ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
        cos, sin = np.cos(angle).astype(np.float32), np.sin(angle).astype(np.float32)
        first, second = (np.s_[..., ::2], np.s_[..., 1::2]) if pairs == "interleaved" else \
            (np.s_[..., :head_dim // 2], np.s_[..., head_dim // 2:])
        k1, k2 = k[first].copy(), k[second].copy()
        k[first], k[second] = k1 * cos - k2 * sin, k1 * sin + k2 * cos
        return ContextCache(keys, self.values, region, self.shift)


def canonical_window(window: int, room: int) -> int:
    """The window length a request's canonical context is computed at: its own rounded up to CONTEXT_MULTIPLE,
    within `room` (what the model's positions allow)."""
    return max(window, min(-(-window // CONTEXT_MULTIPLE) * CONTEXT_MULTIPLE, room))


def canonical_key(prefix: np.ndarray, suffix: np.ndarray, window: int) -> bytes:
    return np.array([len(prefix), window], np.int64).tobytes() + prefix.tobytes() + b"|" + suffix.tobytes()


class KeptContexts:
    """Canonical contexts kept across requests, least recently used out."""

    def __init__(self, entries: int = CONTEXT_CACHE_ENTRIES):
        self.entries = entries
        self._kept: OrderedDict[bytes, ContextCache] = OrderedDict()

    def get(self, key: bytes) -> ContextCache | None:
        if (c := self._kept.get(key)) is not None:
            self._kept.move_to_end(key)
        return c

    def keep(self, key: bytes, cache: ContextCache) -> None:
        self._kept[key] = cache
        self._kept.move_to_end(key)
        while len(self._kept) > self.entries:
            self._kept.popitem(last=False)

    def clear(self) -> None:
        self._kept.clear()

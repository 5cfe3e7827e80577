"""The context key/value cache: the window pass against cached context equals the full pass, a refresh every
step equals no cache, a repeated context skips the full pass, and the next keystroke reuses the last one's
context (suffix keys rotated, probabilities close to a full pass) (tiny model, real ONNX Runtime sessions)."""
import numpy as np
import pytest

import runtime.contexts as contexts
from runtime.engine import Engine, Request
from runtime.sampler import log_softmax
from runtime.vocab import SpecialIds

PREFIX = "import os\n\n\ndef read(path):\n    with open(path) as f:\n        "
SUFFIX = "\n    return data\n"


class Counting:
    """Wraps a LoadedModel and counts full passes (empty cache) and window passes (cached context)."""

    def __init__(self, model):
        self._model, self.full, self.window = model, 0, 0

    def __getattr__(self, name):
        return getattr(self._model, name)

    def forward_kv(self, ids, positions, mask, past_k, past_v, logits_from, new_kv=True):
        if past_k.shape[3]:
            self.window += 1
        else:
            self.full += 1
        return self._model.forward_kv(ids, positions, mask, past_k, past_v, logits_from, new_kv)


def never_ending(engine: Engine) -> Engine:
    """The tiny model may end a window early with <|eos|>; tests that count steps ban both end markers."""
    sp = engine.special
    engine.special = SpecialIds(sp.mask, sp.eom, sp.ends, tuple(sp.banned) + sp.ends, sp.texts)
    return engine


def requests():
    return [Request(prefix=PREFIX, suffix=SUFFIX, max_new_tokens=10, threshold=1.0, eom_bias=-100.0),
            Request(prefix="class A:\n    def __init__(self):\n        self.", max_new_tokens=6, threshold=1.0),
            Request(prefix=PREFIX, suffix=SUFFIX, mode="edit", existing="data = f.read()", edit="repair")]


def test_window_pass_equals_the_full_pass(tiny_engine):
    engine = Engine(tiny_engine.model)
    assert engine.kv_cache
    d = engine.denoiser(requests()[0])
    full = engine._full([d])[0][:d.end - d.start]  # (the full pass also returns the last slot's output)
    assert d.cache is not None and d.cache.length == len(d.inputs()) - (d.end - d.start + 1)
    window = engine._window([d])[0]
    assert full.shape == window.shape == (d.end - d.start, engine.tok.vocab_size)
    np.testing.assert_allclose(window, full, atol=1e-3)


def test_refreshing_every_step_equals_no_cache(tiny_engine):
    plain = Engine(tiny_engine.model, kv_cache=False)
    fresh = Engine(tiny_engine.model, refresh_every=1)
    for req in requests():
        assert fresh.complete(req).raw == plain.complete(req).raw


def test_cache_runs_one_full_pass_then_window_passes(tiny_engine):
    model = Counting(tiny_engine.model)
    engine = never_ending(Engine(model))
    res = engine.complete(requests()[0])
    assert res.stats["forward_passes"] >= 10  # threshold 1: one slot a step
    assert (model.full, model.window) == (1, res.stats["forward_passes"] - 1)
    assert res.stats["tokens"] >= 9  # every slot was filled, one per step


def test_a_repeated_context_skips_the_full_pass(tiny_engine):
    model = Counting(tiny_engine.model)
    engine = Engine(model)
    first = engine.complete(requests()[1])
    full = model.full
    again = engine.complete(requests()[1])
    assert model.full == full and again.raw == first.raw
    other = engine.complete(Request(prefix=PREFIX + "x = 1\n", max_new_tokens=6, threshold=1.0))
    assert model.full == full + 1 and other.raw


def test_batched_cached_requests_match_single_ones(tiny_engine):
    engine = Engine(tiny_engine.model)
    alone = [engine.complete(r).raw for r in requests()]
    ds = [engine.denoiser(r) for r in requests()]
    engine.clear_cache()
    while not all(d.done for d in ds):
        live = [d for d in ds if not d.done]
        for d, logits in zip(live, engine.forward_batch(live)):
            d.advance(logits)
    assert [engine.finish(r, d).raw for r, d in zip(requests(), ds)] == alone


@pytest.mark.parametrize("kv_cache", [True, False])
def test_cache_switch_is_reported(tiny_engine, kv_cache):
    assert Engine(tiny_engine.model, kv_cache=kv_cache).kv_cache is kv_cache


def test_blocks_refresh_the_cache_and_match_uncached_decoding_when_refreshed(tiny_engine):
    model = Counting(tiny_engine.model)
    engine = never_ending(Engine(model))
    req = Request(prefix="def add(a, b):\n", mode="completion", max_new_tokens=24, block=8, threshold=1.0,
                  eom_bias=-100.0)
    res = engine.complete(req)
    window = engine.denoiser(req).end - engine.denoiser(req).start  # 24, or 25 with a healed newline
    blocks = -(-window // 8)
    assert res.stats["forward_passes"] == window and model.full == blocks  # a full pass per block
    assert model.window == window - blocks
    plain = never_ending(Engine(tiny_engine.model, kv_cache=False)).complete(req)
    assert never_ending(Engine(tiny_engine.model, refresh_every=1)).complete(req).raw == plain.raw


def test_a_passed_deadline_returns_only_the_committed_text(tiny_engine):
    req = Request(prefix="def add(a, b):\n", mode="completion", max_new_tokens=24, block=8, threshold=1.0,
                  eom_bias=-100.0, deadline_ms=0.001)
    res = Engine(tiny_engine.model).complete(req)
    # one pass commits one slot (threshold 1.0): the result is that token, not 24 slots filled at once
    assert res.stats["stop_reason"] == "deadline" and res.stats["forward_passes"] == 1
    assert res.stats["tokens"] <= 1 and "\n" not in res.raw.strip("\n ")


LINE = "        data = f.read().split()"


def typed(n: int) -> Request:
    """The cursor's line typed up to its n-th character."""
    return Request(prefix=PREFIX.rstrip(" ") + LINE[:n], suffix=SUFFIX, max_new_tokens=8, threshold=1.0)


def test_typing_a_line_reuses_the_context_across_keystrokes(tiny_engine):
    model = Counting(tiny_engine.model)
    full = {}
    for stale in (-1, contexts.STALE_TOKENS):
        engine, model.full = Engine(model, stale_tokens=stale), 0
        for n in range(9, len(LINE) + 1):  # the line typed key by key after its indentation
            engine.complete(typed(n))
        full[stale] = model.full
    keystrokes = len(LINE) - 8
    # without reuse, every keystroke that completes a piece of the line (and so changes the window) pays a full
    # pass; with it, only those that change the window in more than STALE_TOKENS slots since the kept context
    assert full[-1] >= 6
    assert full[contexts.STALE_TOKENS] <= max(2, full[-1] // 2) and full[contexts.STALE_TOKENS] < keystrokes / 4
    with pytest.raises(ValueError, match="window_multiple"):
        Request(prefix="x", window_multiple=0)


def test_moved_suffix_keys_equal_keys_computed_at_the_new_positions(tiny_engine):
    engine = Engine(tiny_engine.model)
    a, b = (engine.denoiser(Request(prefix=PREFIX, suffix=SUFFIX, window=w)) for w in (6, 9))
    engine._full([a])
    engine._full([b])
    assert a.cache.length == b.cache.length and b.end - a.end == 3
    n = len(a.inputs()) - a.end                                   # the suffix's keys come last
    moved = a.cache.moved((b.start, b.end), engine.kept.rope_theta)
    # layer 0's keys depend only on the token and its position, so the rotation must reproduce them exactly
    np.testing.assert_allclose(moved.keys[0, :, :, -n:], b.cache.keys[0, :, :, -n:], atol=1e-4)
    assert not np.allclose(a.cache.keys[0, :, :, -n:], b.cache.keys[0, :, :, -n:], atol=1e-3)   # they did move
    np.testing.assert_array_equal(moved.keys[:, :, :, :-n], a.cache.keys[:, :, :, :-n])          # the prefix did not


NEAR_TOLERANCE = 0.05   # max |Δ probability| of the window's slots, reused context against a full pass (tiny model)


def test_a_reused_context_gives_window_probabilities_close_to_a_full_pass_and_a_refresh_is_exact(tiny_engine):
    engine = Engine(tiny_engine.model)
    engine.complete(typed(14))                 # "        data =": its context is kept
    d = engine.denoiser(typed(19))             # "        data = f.re": the window's pieces differ, its context not
    logits = engine.forward_batch([d])[0]
    assert d.stats.context_reused and 0 < contexts.window_changes(
        d.cache.window, d.inputs()[d.start:d.end], engine.special.mask) <= contexts.STALE_TOKENS
    fresh = Engine(tiny_engine.model, kv_cache=False)
    exact = fresh.forward_batch([fresh.denoiser(typed(19))])[0][:d.end - d.start]
    p = lambda x: np.exp(log_softmax(x))
    assert np.abs(p(logits) - p(exact)).max() <= NEAR_TOLERANCE
    engine.clear_cache()                       # a refresh (no kept context): the full pass itself
    refreshed = engine.forward_batch([engine.denoiser(typed(19))])[0][:d.end - d.start]
    np.testing.assert_allclose(refreshed, exact, atol=1e-4)


class Widths(Counting):
    """Counting, and the number of positions each window pass runs."""

    def __init__(self, model):
        super().__init__(model)
        self.widths = []

    def forward_kv(self, ids, positions, mask, past_k, past_v, logits_from, new_kv=True):
        if past_k.shape[3]:
            self.widths.append(ids.shape[1])
        return super().forward_kv(ids, positions, mask, past_k, past_v, logits_from, new_kv)


@pytest.mark.parametrize("warm", [False, True])
def test_typed_pieces_leave_the_window_pass_after_the_first_and_the_kept_context_stays_whole(tiny_engine, warm):
    model = Widths(tiny_engine.model)
    engine = never_ending(Engine(model))
    wide = never_ending(Engine(tiny_engine.model, narrow_given=False))   # the typed pieces in every window pass
    if warm:                                   # the next keystroke's first pass: a window pass over the whole window
        engine.complete(typed(14))
        wide.complete(typed(14))
    model.widths.clear()
    d, w = engine.denoiser(typed(19)), wide.denoiser(typed(19))   # "        data = f.re": the pieces before "re"
    assert d.given_lead >= 3 and engine.region(d) == (d.start + d.given_lead, d.end)
    before = d.inputs().copy()
    d.advance(engine.forward_batch([d])[0])
    assert d.stats.context_reused == warm
    kept = engine.kept.find(engine.denoiser(typed(19)))
    assert kept.region == (d.start, d.end) and d.cache.region == engine.region(d)   # kept whole; this one narrowed
    assert d.cache.length == kept.length + d.given_lead
    # the pieces' keys/values joined the context: those the first pass computed at their positions (and the slot
    # before them, which stays in the window pass for its shifted logits, did not)
    if warm:
        c, n = kept.moved((d.start, d.end), engine.kept.rope_theta), d.end - d.start + 1
        ids = before[None, d.start - 1:d.end]
        mask = np.ones((1, c.length + n), bool)
        _, keys, values = tiny_engine.model.forward_kv(ids, np.arange(d.start - 1, d.end)[None], mask, c.keys,
                                                       c.values, 0)
        first = np.s_[:, :, :, :d.given_lead]
    else:
        ids = before[None]
        empty = tiny_engine.model.empty_cache(1)
        _, keys, values = tiny_engine.model.forward_kv(ids, np.arange(ids.shape[1])[None], np.ones_like(ids, bool),
                                                       empty, empty, 0)
        first = np.s_[:, :, :, d.start - 1:d.start - 1 + d.given_lead]
    np.testing.assert_allclose(d.cache.keys[:, :, :, kept.length:], keys[first], atol=1e-5)
    np.testing.assert_allclose(d.cache.values[:, :, :, kept.length:], values[first], atol=1e-5)
    second = engine.forward_batch([d])[0]
    assert model.widths[-1] == d.end - d.start - d.given_lead + 1   # the slots after them and the one before
    assert (model.widths[0] == d.end - d.start + 1) if warm else len(model.widths) == 1
    # the approximation: the pieces' keys/values come from the first pass, not recomputed beside new commits
    w.advance(wide.forward_batch([w])[0])
    assert (w.ids == d.ids).all()
    p = lambda x: np.exp(log_softmax(x[d.masked]))
    assert np.abs(p(second) - p(wide.forward_batch([w])[0])).max() <= NEAR_TOLERANCE


def test_a_line_requests_context_does_not_serve_a_block_request_at_the_same_cursor(tiny_engine):
    engine = Engine(tiny_engine.model)
    line = Request(prefix=PREFIX, suffix=SUFFIX, max_new_tokens=32, stop=("\n",))
    block = lambda: Request(prefix=PREFIX, suffix=SUFFIX, max_new_tokens=32, window=32)
    near = lambda: Request(prefix=PREFIX, suffix=SUFFIX, max_new_tokens=32, window=12 + contexts.WINDOW_GROWTH)
    engine.complete(line)                                  # a line's window (12 slots and the healed indent) is kept
    width = lambda req: (d := engine.denoiser(req)).end - d.start
    assert width(block()) - width(line) == 20 and width(near()) - width(line) == contexts.WINDOW_GROWTH
    served = engine.complete(block())
    assert not served.stats["context_reused"]              # 20 slots longer: a full pass, the cold answer
    engine.clear_cache()
    assert served.text == engine.complete(block()).text
    engine.clear_cache()
    engine.complete(line)
    assert engine.complete(near()).stats["context_reused"]   # within WINDOW_GROWTH slots it still serves


def test_a_word_replaced_earlier_in_the_line_is_not_answered_from_the_old_words_context(tiny_engine):
    """Typing on from a kept context reuses it; replacing a word before the cursor (one token changed) does not:
    the context was computed beside the old word (a user's probe: `raise ValueError(` then `raise KeyError(` got
    ValueError's message). Its answer is the cold one."""
    engine = Engine(tiny_engine.model)
    at = lambda line: Request(prefix=PREFIX.rstrip(" ") + line, suffix=SUFFIX, max_new_tokens=8, threshold=1.0)
    engine.complete(at("        data = f.read("))
    assert engine.complete(at("        data = f.read().")).stats["context_reused"]     # typed on: reused
    engine.clear_cache()
    engine.complete(at("        data = f.read("))
    was, now = (engine.denoiser(at(line)) for line in ("        data = f.read(", "        data = g.read("))
    assert contexts.window_changes(was.inputs()[was.start:was.end], now.inputs()[now.start:now.end],
                                   engine.special.mask) <= contexts.STALE_TOKENS   # near enough but for the rule
    replaced = engine.complete(at("        data = g.read("))
    assert not replaced.stats["context_reused"]
    engine.clear_cache()
    assert replaced.text == engine.complete(at("        data = g.read(")).text
    pad = lambda *ids: np.array(ids, np.int64)
    assert contexts.typed_on(pad(5, 6, 0, 0), pad(5, 6, 7, 0), mask=0)         # typed on
    assert contexts.typed_on(pad(5, 6, 7, 0), pad(5, 6, 0), mask=0)            # deleted at the cursor
    assert not contexts.typed_on(pad(5, 6, 7, 0), pad(5, 8, 7, 0), mask=0)     # a word replaced before the cursor

"""The context key/value cache: the window pass against cached context equals the full pass, a refresh every
step equals no cache, a repeated context skips the full pass, and the next keystroke reuses the last one's
context (suffix keys rotated, probabilities close to a full pass) (tiny model, real ONNX Runtime sessions)."""
import numpy as np
import pytest

import runtime.contexts as contexts
from runtime.engine import Engine
from runtime.request import Request
from runtime.policies import log_softmax
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


def test_typing_a_word_reuses_its_context_and_a_new_word_computes_one(tiny_engine):
    model = Counting(tiny_engine.model)
    engine = Engine(model)
    for n in range(9, len(LINE) + 1):  # the line typed key by key after its indentation
        engine.complete(typed(n))
    keystrokes, kept = len(LINE) - 8, model.full
    engine, model.full = Engine(model), 0
    for n in range(9, len(LINE) + 1):
        engine.clear_cache()
        engine.complete(typed(n))
    assert model.full == keystrokes and kept < keystrokes * 3 / 4   # a context per piece typed, not per keystroke
    with pytest.raises(ValueError, match="window_multiple"):
        Request(prefix="x", window_multiple=0)


def test_moved_suffix_keys_equal_keys_computed_at_the_new_positions(tiny_engine):
    engine = Engine(tiny_engine.model)
    theta = tiny_engine.model.conventions.rope_theta
    a, b = (engine.denoiser(Request(prefix=PREFIX, suffix=SUFFIX, window=w)) for w in (6, 9))
    engine._full([a])
    engine._full([b])
    assert a.cache.length == b.cache.length and b.end - a.end == 3
    n = len(a.inputs()) - a.end                                   # the suffix's keys come last
    moved = a.cache.moved((b.start, b.end), theta)
    # layer 0's keys depend only on the token and its position, so the rotation must reproduce them exactly
    np.testing.assert_allclose(moved.keys[0, :, :, -n:], b.cache.keys[0, :, :, -n:], atol=1e-4)
    assert not np.allclose(a.cache.keys[0, :, :, -n:], b.cache.keys[0, :, :, -n:], atol=1e-3)   # they did move
    np.testing.assert_array_equal(moved.keys[:, :, :, :-n], a.cache.keys[:, :, :, :-n])          # the prefix did not


NEAR_TOLERANCE = 0.05   # max |Δ probability| of the window's slots, kept context against a full pass (tiny model)


def test_a_kept_context_gives_window_probabilities_close_to_a_full_pass(tiny_engine):
    engine = Engine(tiny_engine.model)
    engine.complete(typed(18))                 # "        data = f.r": its context is kept
    d = engine.denoiser(typed(19))             # "        data = f.re": the same pieces before the cursor's word
    logits = engine.forward_batch([d])[0]
    assert d.stats.context_reused and d.context_window > d.end - d.start   # computed beside a rounded-up window
    fresh = Engine(tiny_engine.model, kv_cache=False)
    exact = fresh.forward_batch([fresh.denoiser(typed(19))])[0][:d.end - d.start]
    p = lambda x: np.exp(log_softmax(x[d.given_lead:]))
    assert np.abs(p(logits[:d.end - d.start]) - p(exact)).max() <= NEAR_TOLERANCE


HISTORIES = {
    "nothing": lambda e: None,
    "typing toward the cursor": lambda e: [e.complete(typed(n)) for n in range(9, 19)],
    "an edit 200 characters earlier": lambda e: e.complete(
        Request(prefix="x = 1\n" * 40 + PREFIX.rstrip(" ") + LINE[:19], suffix=SUFFIX, max_new_tokens=8)),
    "an unrelated request": lambda e: e.complete(Request(prefix="import sys\n", suffix="", max_new_tokens=8)),
    "the same request": lambda e: e.complete(typed(19)),
}


@pytest.mark.parametrize("n", [12, 19, 25, len(LINE)])
def test_the_same_request_gets_the_same_answer_whatever_was_asked_before(tiny_engine, n):
    answers = {}
    for name, history in HISTORIES.items():
        engine = Engine(tiny_engine.model, type_through=False)   # a typed-through answer is the deliberate exception
        history(engine)
        c = engine.complete(typed(n))
        answers[name] = (c.text, c.stats["confidence"], c.stats["tokens"], c.stats["steps"])
    assert len(set(answers.values())) == 1, answers


class Widths(Counting):
    """Counting, and the number of positions each window pass runs."""

    def __init__(self, model):
        super().__init__(model)
        self.widths = []

    def forward_kv(self, ids, positions, mask, past_k, past_v, logits_from, new_kv=True):
        if past_k.shape[3]:
            self.widths.append(ids.shape[1])
        return super().forward_kv(ids, positions, mask, past_k, past_v, logits_from, new_kv)


def test_typed_pieces_are_context_and_never_run_in_a_window_pass(tiny_engine):
    model = Widths(tiny_engine.model)
    engine = never_ending(Engine(model))
    d = engine.denoiser(typed(19))             # "        data = f.re": the pieces before "re" are given
    assert d.given_lead >= 3 and engine.region(d) == (d.start + d.given_lead, d.end)
    d.advance(engine.forward_batch([d])[0])
    d.advance(engine.forward_batch([d])[0])
    assert model.full == 1 and model.widths == [d.end - d.start - d.given_lead + 1] * 2   # and the slot before them
    assert d.cache.region == engine.region(d)


def test_a_batch_of_more_new_contexts_than_are_kept_still_serves_its_kept_ones(tiny_engine):
    """Keeping a batch's new contexts may evict the batch's kept ones before they are used: they are held."""
    from runtime.contexts import CONTEXT_CACHE_ENTRIES
    engine = Engine(tiny_engine.model)
    first = Request(prefix=PREFIX, suffix=SUFFIX, max_new_tokens=8, threshold=1.0)
    engine.complete(first)
    reqs = [Request(prefix=PREFIX, suffix=SUFFIX, max_new_tokens=8, threshold=1.0)] + [
        Request(prefix=f"x{i} = {i}\n" + PREFIX, suffix=SUFFIX, max_new_tokens=8) for i in range(CONTEXT_CACHE_ENTRIES + 2)]
    ds = [engine.denoiser(r) for r in reqs]
    engine.forward_batch(ds)
    assert ds[0].stats.context_reused and not any(d.stats.context_reused for d in ds[1:])

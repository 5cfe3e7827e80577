"""Continuous batching on the tiny model: batched equals unbatched, cancellation, and a bounded queue."""

import pytest

from runtime.frames import Completion

from runtime.request import Request
from runtime.scheduler import Busy, Scheduler

PROMPTS = ["import os\n\ndef main():\n    ", "class A:\n    def __init__(self):\n        self.", "x = [", "# sum\ntotal = 0\nfor"]


@pytest.fixture
def scheduler(tiny_engine):
    s = Scheduler(tiny_engine, max_batch=4)
    yield s
    s.close()


def test_batched_results_equal_one_at_a_time(tiny_engine, scheduler):
    reqs = [Request(prefix=p, suffix="\n" * i, max_new_tokens=6 + 3 * i, threshold=0.5) for i, p in enumerate(PROMPTS)]
    alone = [tiny_engine.complete(r).raw for r in reqs]
    handles = [scheduler.submit(r) for r in reqs]
    batched = [h.result() for h in handles]
    assert [c.raw for c in batched] == alone
    assert all(isinstance(c, Completion) and c.stats["forward_passes"] >= 1 for c in batched)


def test_frames_stream_before_the_result(scheduler):
    items = list(scheduler.submit(Request(prefix="x = ", max_new_tokens=5, threshold=1.0, eom_bias=-50)))
    assert len(items) == 6 and isinstance(items[-1], Completion)
    assert [f.committed for f in items[:-1]] == [1, 2, 3, 4, 5]


def test_cancel_leaves_at_the_next_step(scheduler):
    # 200 exact slots, one a pass: the worker cannot finish them before the cancel, however far it runs ahead
    h = scheduler.submit(Request(prefix="x = ", max_new_tokens=200, window=200, threshold=1.0, eom_bias=-50))
    frames = iter(h)
    next(frames)
    h.cancel()
    rest = list(frames)
    assert rest[-1].stats["stop_reason"] == "cancelled"
    assert rest[-1].stats["forward_passes"] < 50


def test_full_queue_says_busy_at_once(tiny_engine):
    s = Scheduler(tiny_engine, max_batch=1, max_waiting=1)
    try:
        slow = Request(prefix="x = ", max_new_tokens=150, threshold=1.0, eom_bias=-50)
        handles, busy = [], 0
        for _ in range(6):
            try:
                handles.append(s.submit(slow))
            except Busy:
                busy += 1
        assert busy >= 1
        for h in handles:
            h.cancel()
            h.result()
    finally:
        s.close()


def test_bad_request_raises_before_queueing(scheduler):
    with pytest.raises(ValueError):
        scheduler.submit(Request(prefix="x", mode="edit"))


async def test_async_iteration(scheduler):
    items = [item async for item in scheduler.submit(Request(prefix="y = ", max_new_tokens=4)).aiter()]
    assert isinstance(items[-1], Completion)


def test_a_request_whose_step_fails_ends_alone_and_the_worker_goes_on(tiny_engine, scheduler, monkeypatch):
    made = tiny_engine.denoiser

    def denoiser(req):
        d = made(req)
        if req.prefix == "x = ":   # broken before the worker sees it: its steps fail, and so does finishing it
            d.advance, d.finish = (lambda logits: 1 / 0), (lambda reason: 1 / 0)
        return d
    monkeypatch.setattr(tiny_engine, "denoiser", denoiser)
    bad, good = (scheduler.submit(Request(prefix=p, max_new_tokens=8, threshold=1.0, eom_bias=-50))
                 for p in ("x = ", "y = "))
    with pytest.raises(ZeroDivisionError):
        bad.result()
    assert isinstance(good.result(), Completion)
    assert scheduler.submit(Request(prefix="z = ", max_new_tokens=4)).result().stats["forward_passes"] >= 1

"""Run one request through the scheduler for a route: timing, metrics and latency history in one place."""
from __future__ import annotations

import time
from typing import AsyncIterator

from runtime.engine import Completion, Request
from runtime.sampler import Frame


LIVE_QUEUE = 256   # frames a slow dashboard may lag behind before it misses some


def publish(state, event: dict) -> None:
    """Hand a frame to every live dashboard; a full queue drops it rather than slow a request down."""
    for q in list(state.live):
        if q.qsize() < LIVE_QUEUE:
            q.put_nowait(event)


async def run(state, req: Request, route: str) -> AsyncIterator[Frame | Completion]:
    """Frames then the Completion; the request is cancelled if the consumer stops early (e.g. a disconnect)."""
    t0 = time.perf_counter()
    handle = state.scheduler.submit(req)
    state.metrics.queue_depth.set(state.scheduler.queue_depth)
    first = None
    try:
        async for item in handle.aiter():
            if first is None:
                first = time.perf_counter() - t0
                state.metrics.first_frame.observe(first)
            publish(state, {"request_id": req.id, "route": route, "final": isinstance(item, Completion),
                            "text": item.text, "step": item.stats["steps"] if isinstance(item, Completion) else item.step})
            if isinstance(item, Completion):
                ms = 1000 * (time.perf_counter() - t0)
                state.metrics.observe_result(item.stats)
                state.metrics.latency.labels(route).observe(ms / 1000)
                state.store.add_request(item.id, route, ms, 1000 * first, item.stats, 200)
            yield item
    finally:
        handle.cancel()


async def complete(state, req: Request, route: str, http=None) -> Completion | None:
    """The Completion; None when the HTTP client went away first (its request is then cancelled)."""
    async for item in run(state, req, route):
        if isinstance(item, Completion):
            return item
        if http is not None and await http.is_disconnected():
            return None
    return None

"""Run requests through the scheduler for a route: timing, metrics, latency history and cancellation in one place."""
from __future__ import annotations

import asyncio
import logging
import time
from contextlib import aclosing
from typing import AsyncIterator

from runtime.frames import Completion

from runtime.request import Request
from runtime.frames import Frame
from runtime.scheduler import Handle
from server.store import StoreUnavailable

log = logging.getLogger("quicksilver.server")


LIVE_QUEUE = 256          # frames a slow dashboard may lag behind before it misses some
CANCELLED_STATUS = 499    # how a cancelled request is recorded (kept out of the latency history)


def returned_tokens(state, c: Completion) -> int:
    """The tokens a completion reports to a client (usage.completion_tokens, tokens_predicted): those it generated;
    for one typed through a kept answer, which generated nothing now, those of the text it returns."""
    return state.engine.count_tokens(c.text) if c.stats.get("typed_through") else c.stats["tokens"]


def publish(state, event: dict) -> None:
    """Hand a frame to every live dashboard; a full queue drops it rather than slow a request down."""
    for q in list(state.live):
        if q.qsize() < LIVE_QUEUE:
            q.put_nowait(event)


def grounded(state, reqs: list[Request]) -> list[Request]:
    """The requests with the workspace's chunks (`serve --workspace`) after the client's own other files."""
    return reqs if state.workspace is None else [state.workspace.ground(r) for r in reqs]


async def submit(state, reqs: list[Request]) -> list[Handle]:
    """Ground, tokenize and queue requests, all or none (Busy, ValueError), off the event loop: a long prompt's
    tokenizing must not stall every other client."""
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(None, lambda: state.scheduler.submit_all(grounded(state, reqs), loop))


async def run(state, req: Request, route: str, handle: Handle) -> AsyncIterator[Frame | Completion]:
    """Frames then the Completion of a submitted request; it is cancelled if the consumer stops early (e.g. a
    disconnect)."""
    t0 = time.perf_counter()
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
                status = CANCELLED_STATUS if item.stats["stop_reason"] in ("cancelled", "shutdown") else 200
                try:
                    state.store.add_request(item.id, route, ms, 1000 * first, item.stats, status)
                except StoreUnavailable as e:   # the answer does not need the history: it is served all the same
                    log.warning("request %s not recorded: %s", item.id, e)
            yield item
    finally:
        handle.cancel()


class ModelFailure(RuntimeError):
    """The engine failed on a request (its forward pass raised; the scheduler logged why): a 500, never a normal
    empty answer."""


class ReplicaLost(ModelFailure):
    """The replica decoding a request died (`serve --replicas`): a retryable 503; Ray Serve starts another."""


async def final(state, req: Request, route: str, handle: Handle) -> Completion:
    async with aclosing(run(state, req, route, handle)) as frames:
        async for item in frames:
            if isinstance(item, Completion):
                if item.stats["stop_reason"] == "error":
                    raise ModelFailure(f"the model failed on request {req.id}; the server log has the error")
                return item
    raise RuntimeError(f"request {req.id} ended without a result")


async def disconnected(http) -> None:
    """Returns when the HTTP client has gone away (its body was read already, so the next message says so)."""
    while (await http.receive())["type"] != "http.disconnect":
        pass


async def complete(state, reqs: list[Request], handles: list[Handle], route: str, http=None) -> list[Completion] | None:
    """The Completions of submitted requests decoded side by side; None when the HTTP client went away first. If
    the client leaves, or one request fails, every other one is cancelled at its next step."""
    tasks = [asyncio.ensure_future(final(state, r, route, h)) for r, h in zip(reqs, handles)]
    gone = asyncio.ensure_future(disconnected(http)) if http is not None else None
    try:
        pending = set(tasks)
        while pending:
            done, _ = await asyncio.wait(pending | {gone} - {None}, return_when=asyncio.FIRST_COMPLETED)
            if gone in done:
                return None
            for t in done:
                t.result()   # raises the first failure
            pending -= done
        return [t.result() for t in tasks]
    finally:
        for t in tasks + [gone]:
            if t is not None:
                t.cancel()
        for h in handles:
            h.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

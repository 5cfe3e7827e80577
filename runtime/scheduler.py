"""Continuous batching: one worker thread runs a batched forward pass per step over every active request.

Requests join or leave between steps; a cancelled request leaves at its next step with what it has; when the
queue of waiting requests is full, `submit` raises Busy at once instead of making the caller wait.
"""
from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections import deque
from typing import AsyncIterator, Iterator

from runtime.engine import Engine

from runtime.frames import Completion

from runtime.request import Request
from runtime.frames import Frame
from runtime.sampler import Denoiser

log = logging.getLogger("quicksilver.scheduler")

MAX_BATCH = 8        # requests in one forward pass
MAX_WAITING = 64     # requests queued behind a full batch before callers get Busy
_END = object()


class Busy(Exception):
    """The scheduler's queue is full; try again shortly."""


class Handle:
    """A submitted request: its frames arrive on a queue, ending with a Completion. A request submitted from an
    event loop gets its frames on that loop (`aiter`), handed over by the worker with `call_soon_threadsafe`, so
    waiting requests hold no threads; one submitted from plain code reads them with `iter` / `result`."""

    def __init__(self, req: Request, d: Denoiser, loop: asyncio.AbstractEventLoop | None = None):
        self.req, self.d = req, d
        self.id = req.id
        self.cancelled = threading.Event()
        self._out: queue.Queue = queue.Queue()
        if loop is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                pass
        self._loop = loop
        self._aout: asyncio.Queue | None = asyncio.Queue() if loop is not None else None

    def cancel(self) -> None:
        self.cancelled.set()

    def _push(self, item) -> None:
        if self._loop is None:
            self._out.put(item)
            return
        try:
            self._loop.call_soon_threadsafe(self._aout.put_nowait, item)
        except RuntimeError:   # the loop has closed: nobody is listening any more
            self.cancel()

    def __iter__(self) -> Iterator[Frame | Completion]:
        while (item := self._out.get()) is not _END:
            yield _raised(item)

    def result(self) -> Completion:
        for item in self:
            last = item
        return last

    async def aiter(self) -> AsyncIterator[Frame | Completion]:
        if self._aout is None:
            raise RuntimeError("this request was submitted outside an event loop: iterate it with iter()")
        while (item := await self._aout.get()) is not _END:
            yield _raised(item)


def _raised(item):
    if isinstance(item, Exception):
        raise item
    return item


class Scheduler:
    def __init__(self, engine: Engine, max_batch: int = MAX_BATCH, max_waiting: int = MAX_WAITING):
        self.engine, self.max_batch, self.max_waiting = engine, max_batch, max_waiting
        self._waiting: deque[Handle] = deque()
        self._active: list[Handle] = []
        self._cv = threading.Condition()
        self._stop = False
        self._thread = threading.Thread(target=self._loop, name="quicksilver-scheduler", daemon=True)
        self._thread.start()

    @property
    def queue_depth(self) -> int:
        return len(self._waiting)

    @property
    def active(self) -> int:
        return len(self._active)

    def submit(self, req: Request, loop: asyncio.AbstractEventLoop | None = None) -> Handle:
        """Tokenize and enqueue; raises ValueError for a bad request and Busy when the queue is full."""
        return self.submit_all([req], loop)[0]

    def submit_all(self, reqs: list[Request], loop: asyncio.AbstractEventLoop | None = None) -> list[Handle]:
        """Tokenize and enqueue all of them or none: ValueError for a bad request, Busy when they do not all fit
        in the queue. Frames go to `loop` (default: the running one, if any). Safe to call from a worker thread."""
        handles = [Handle(r, self.engine.denoiser(r), loop) for r in reqs]
        with self._cv:
            if len(self._waiting) + len(handles) > self.max_waiting:
                raise Busy(f"{len(self._waiting)} requests are waiting and {len(handles)} more do not fit; "
                           "retry shortly")
            self._waiting.extend(handles)
            self._cv.notify()
        return handles

    def close(self) -> None:
        with self._cv:
            self._stop = True
            self._cv.notify()
        self._thread.join(timeout=10)

    def finish(self, h: Handle, reason: str | None = None) -> None:
        try:
            if reason:
                h.d.finish(reason)
            h._push(self.engine.finish(h.req, h.d))
        except Exception as e:  # the caller hears of it (iterating raises it) instead of waiting for ever
            log.exception("finishing %s failed", h.id)
            h._push(e)
        h._push(_END)

    def _loop(self) -> None:
        while True:
            with self._cv:
                while not self._stop and not self._waiting and not self._active:
                    self._cv.wait()
                if self._stop:
                    break
                while self._waiting and len(self._active) < self.max_batch:
                    self._active.append(self._waiting.popleft())
            for h in [h for h in self._active if h.cancelled.is_set() or h.d.done]:
                self._active.remove(h)
                self.finish(h, "cancelled" if not h.d.done else None)
            if not self._active:
                continue
            batch = list(self._active)
            try:
                logits = self.engine.forward_batch([h.d for h in batch])
            except Exception:  # one bad batch must not take the worker down
                log.exception("forward pass failed for %s", [h.id for h in batch])
                for h in batch:
                    self._active.remove(h)
                    self.finish(h, "error")
                continue
            for h, lg in zip(batch, logits):
                try:
                    h._push(h.d.advance(lg))
                except Exception:  # nor one request's step: it ends in error, the others go on
                    log.exception("decoding step failed for %s", h.id)
                    self._active.remove(h)
                    self.finish(h, "error")
                    continue
                if h.d.done:
                    self._active.remove(h)
                    self.finish(h)
        for h in self._active + list(self._waiting):
            self.finish(h, "shutdown")

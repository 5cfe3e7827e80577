"""`quicksilver serve --replicas N`: the engines run as Ray Serve replicas, this process stays the ingress.

Every route, the guard, the sessions and the store stay where they are (server/app.py); only the scheduler is
another: `RemoteScheduler` sends each request to an `EngineReplica` (a model, an engine and its batching scheduler
of its own) chosen by Ray Serve's request router. With `affinity` routing (the default) that is consistent hashing
on the request's document (`affinity_key`), so a user's next keystroke meets the replica that kept the last one's
context and answer; a replica with `MAX_ONGOING` requests in hand passes the request to the ring's next one. A
replica that dies is replaced by Serve; the requests it held end with a retryable error (503, ReplicaLost).

Each replica reports itself (id, pid, host, queue depth, requests served) to a small named actor every
`HEARTBEAT_S`; /health lists them and /metrics labels their gauges with the replica's id.

Ray is imported here only (the `replicas` extra): without `--replicas`, nothing changes and Ray is never loaded.
"""
from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import AsyncIterator

from runtime.frames import Completion, Frame
from runtime.request import DEFAULT_CONTEXT_TOKENS, Request
from runtime.scheduler import MAX_BATCH, MAX_WAITING, Busy
from server.generate import ReplicaLost

log = logging.getLogger("quicksilver.replicas")

APP, DEPLOYMENT, REGISTRY = "quicksilver", "Engine", "quicksilver-replicas"
NAMESPACE = "quicksilver"
ROUTING = {"affinity": "ray.serve.experimental.consistent_hash_router.ConsistentHashRouter",
           "round-robin": "ray.serve.experimental.round_robin_router.RoundRobinRouter"}
MAX_ONGOING = 2 * MAX_BATCH   # requests one replica holds (a batch decoding, a batch waiting) before the next is tried
HEARTBEAT_S = 1.0             # how often a replica reports itself
GONE_S = 3.0                  # a replica silent this long is listed as gone; after FORGET_S it is not listed
FORGET_S = 60.0
KEY_LINES, KEY_CHARS = 8, 1024   # the start of a file that names it for routing (when the client sends no path)


@dataclass(frozen=True)
class ReplicaConfig:
    model: Path | None
    threads: int = 0
    context_tokens: int = DEFAULT_CONTEXT_TOKENS
    names: bool = True
    max_batch: int = MAX_BATCH


def affinity_key(req: Request) -> str:
    """The file a request is typed in, as the router hashes it: its path when the client sends one, else its first
    KEY_LINES lines (at most KEY_CHARS characters) above the cursor's line — the same at every keystroke on a line,
    and on every line once the file has KEY_LINES above the cursor."""
    if req.path:
        return req.path
    head = req.prefix[: req.prefix.rfind("\n") + 1][:KEY_CHARS]
    return "".join(head.splitlines(keepends=True)[:KEY_LINES])


class ReplicasUnavailable(RuntimeError):
    """The replicas cannot be started as asked (no Ray cluster at the address, too few GPUs)."""


def reachable(address: str, timeout_s: float = 5.0) -> None:
    """An explicit HOST:PORT must answer at once: Ray itself retries an unreachable one for minutes."""
    host, _, port = address.rpartition(":")
    if address == "auto" or "://" in address or not port.isdigit():
        return
    try:
        socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout_s).close()
    except OSError as e:
        raise ReplicasUnavailable(f"no Ray cluster answers at {address} ({e}): start one with `ray start --head`, or "
                                  "leave --ray-address out for a cluster of this server's own") from None


class EngineReplica:
    """One replica: the model, an Engine and its Scheduler, as a single-process server has them."""

    def __init__(self, cfg: ReplicaConfig, app: str = APP):
        import ray
        from ray import serve

        from runtime.engine import Engine
        from runtime.scheduler import Scheduler
        from runtime.session import load
        self.engine = Engine(load(cfg.model, threads=cfg.threads), cfg.context_tokens)
        if not cfg.names:
            self.engine.names = False
        self.scheduler = Scheduler(self.engine, max_batch=cfg.max_batch)
        self.id, self.app = serve.get_replica_context().replica_id.unique_id, app
        self.served, self.started = 0, time.time()
        self._registry = ray.get_actor(REGISTRY, namespace=NAMESPACE)
        self._beat = threading.Thread(target=self._heartbeat, name="quicksilver-heartbeat", daemon=True)
        self._beat.start()

    def info(self) -> dict:
        return {"id": self.id, "app": self.app, "pid": os.getpid(), "host": socket.gethostname(), "served": self.served,
                "queue_depth": self.scheduler.queue_depth, "active": self.scheduler.active,
                "uptime_s": round(time.time() - self.started, 1)}

    def _heartbeat(self) -> None:
        while True:
            try:
                self._registry.report.remote(self.info())
            except Exception:   # the ingress (and its registry) restarting: report again next beat
                log.debug("heartbeat not delivered", exc_info=True)
            time.sleep(HEARTBEAT_S)

    async def decode(self, req: Request) -> AsyncIterator[Frame | Completion]:
        """The request's frames then its Completion (stats name this replica); cancelled when the caller goes."""
        handle = self.scheduler.submit(req, asyncio.get_running_loop())
        try:
            async for item in handle.aiter():
                if isinstance(item, Completion):
                    self.served += 1
                    item.stats["replica"] = self.id
                yield item
        finally:
            handle.cancel()


class Registry:
    """The replicas' last reports: a named actor the replicas and every ingress on the cluster find."""

    def __init__(self):
        self.seen: dict[str, dict] = {}

    def report(self, info: dict) -> None:
        self.seen[info["id"]] = {**info, "at": time.time()}

    def replicas(self, app: str) -> list[dict]:
        now = time.time()
        self.seen = {k: v for k, v in self.seen.items() if now - v["at"] < FORGET_S}
        return [{**{k: v for k, v in r.items() if k != "at"}, "state": "running" if now - r["at"] < GONE_S else "gone",
                 "reported_s_ago": round(now - r["at"], 1)} for r in sorted(self.seen.values(), key=lambda r: r["id"])
                if r["app"] == app]


class AnsweredHandle:
    """A request this process answered itself: the rest of a kept answer the user typed a start of."""

    def __init__(self, req: Request, completion: Completion):
        self.req, self.id, self._completion = req, req.id, completion

    def cancel(self) -> None:
        pass

    async def aiter(self) -> AsyncIterator[Completion]:
        yield self._completion


class RemoteHandle:
    """A request sent to a replica: `aiter` and `cancel`, as the local scheduler's Handle has them."""

    def __init__(self, req: Request, owner: "RemoteScheduler"):
        self.req, self.id, self._owner = req, req.id, owner
        self._response = None
        self._cancelled = False

    def cancel(self) -> None:
        self._cancelled = True
        if self._response is not None:
            self._response.cancel()

    async def aiter(self) -> AsyncIterator[Frame | Completion]:
        from ray.exceptions import ActorUnavailableError, RayActorError, RayTaskError
        from ray.serve.exceptions import BackPressureError, RequestCancelledError
        if self._cancelled:
            return
        self._owner.inflight += 1
        try:
            self._response = self._owner.engine.options(stream=True, session_id=affinity_key(self.req)).decode.remote(
                self.req)
            async for item in self._response:
                if isinstance(item, Completion):
                    self._owner.front.keep(self.req, item)
                yield item
        except RequestCancelledError:
            return
        except (BackPressureError, RayActorError, ActorUnavailableError, RayTaskError) as e:
            cause = e.cause if isinstance(e, RayTaskError) and isinstance(e.cause, Exception) else e
            if isinstance(cause, BackPressureError):   # every replica holds all it may, and the queue is full
                raise Busy(f"every replica is full ({cause})") from None
            if isinstance(cause, (RayActorError, ActorUnavailableError)):
                raise ReplicaLost(f"the replica decoding request {self.id} went away ({type(cause).__name__}): "
                                  "retry, another replica takes its place") from None
            raise cause from None   # the replica raised (a bad request, Busy): the caller hears that error
        finally:
            self._owner.inflight -= 1


class RemoteScheduler:
    """The scheduler interface the routes use (submit_all, queue_depth, active, close) over Ray Serve replicas, and
    `replicas()`: what each reported last. `front` is this process's engine (the app sets it once made): it keeps
    the answers the replicas return, and answers a keystroke that types a start of one itself (no hop to a
    replica, whichever routing). Raises ReplicasUnavailable when the replicas cannot be started."""

    def __init__(self, n: int, cfg: ReplicaConfig, address: str | None = None, routing: str = "affinity",
                 num_gpus: float = 0.0, front=None):
        import ray
        from ray import serve
        from ray.serve.config import RequestRouterConfig
        self.started_ray = address is None and not ray.is_initialized()
        if not ray.is_initialized():
            ours = signal.getsignal(signal.SIGTERM)   # Ray's driver takes SIGTERM over (sys.exit): the server's
            if address is None:   # a cluster of this machine's own, started and stopped with the server
                ray.init(namespace=NAMESPACE, include_dashboard=False, log_to_driver=False,
                         num_cpus=max(n, os.cpu_count() or 1), configure_logging=False)
            else:
                reachable(address)
                ray.init(address=address, namespace=NAMESPACE, log_to_driver=False)
            if threading.current_thread() is threading.main_thread() and ours is not None:
                signal.signal(signal.SIGTERM, ours)   # graceful shutdown stays the server's
        if num_gpus and (have := ray.cluster_resources().get("GPU", 0)) < n * num_gpus:
            self._shutdown()
            raise ReplicasUnavailable(f"{n} replicas at {num_gpus:g} GPUs each need {n * num_gpus:g} GPUs; the Ray "
                                      f"cluster has {have:g}")
        self.registry = ray.remote(num_cpus=0)(Registry).options(
            name=REGISTRY, namespace=NAMESPACE, get_if_exists=True, lifetime="detached").remote()
        serve.start(proxy_location="Disabled")   # no Serve proxy: this process is the HTTP front
        self.app = APP if routing == "affinity" else f"{APP}-{routing}"   # a deployment routes one way
        deployment = serve.deployment(
            EngineReplica, name=DEPLOYMENT, num_replicas=n, max_ongoing_requests=MAX_ONGOING,
            max_queued_requests=MAX_WAITING, health_check_period_s=2, health_check_timeout_s=30,
            ray_actor_options={"num_cpus": 0, "num_gpus": num_gpus},
            request_router_config=RequestRouterConfig(request_router_class=ROUTING[routing]))
        running = serve.status().applications.get(self.app)
        if running is not None and running.status == "RUNNING":   # another server deployed them: share its replicas
            log.info("using the %s replicas already running on the cluster", self.app)
            self.engine = serve.get_app_handle(self.app)
        else:
            try:
                self.engine = serve.run(deployment.bind(cfg, self.app), name=self.app, route_prefix=None)
            except Exception as e:   # a replica that cannot load the model, say: the deployment failed
                self._shutdown()
                raise ReplicasUnavailable(f"the replicas did not start: {e}") from None
        self.front, self.inflight = front, 0
        self._last: list[dict] = []
        self._stop = threading.Event()
        self._poll = threading.Thread(target=self._refresh, name="quicksilver-replicas", daemon=True)
        self._poll.start()

    def _refresh(self) -> None:
        import ray
        quiet = False
        while not self._stop.is_set():
            try:
                self._last = ray.get(self.registry.replicas.remote(self.app), timeout=10)
                quiet = False
            except Exception as e:   # said once an outage, not once a second
                if not quiet:
                    log.warning("the replicas' registry does not answer (%s): is the Ray cluster up?", e)
                quiet = True
            self._stop.wait(HEARTBEAT_S)

    def submit_all(self, reqs: list[Request], loop=None) -> list[RemoteHandle | AnsweredHandle]:
        handles = []
        for r in reqs:
            answered = self.front.typed_through(r, time.perf_counter())
            if answered is None:
                handles.append(RemoteHandle(r, self))
            else:
                done = self.front.finish(r, answered)
                done.stats["replica"] = "front"   # no replica decoded it
                handles.append(AnsweredHandle(r, done))
        return handles

    def replicas(self) -> list[dict]:
        return list(self._last)

    @property
    def queue_depth(self) -> int:
        return sum(r["queue_depth"] for r in self._last if r["state"] == "running")

    @property
    def active(self) -> int:
        return self.inflight

    def close(self) -> None:
        self._stop.set()
        self._poll.join(timeout=15)   # a Ray call after the shutdown would start a new cluster
        self._shutdown()

    def _shutdown(self) -> None:
        import ray
        from ray import serve
        if self.started_ray:   # a cluster of our own: its replicas go with it
            serve.shutdown()
            ray.shutdown()

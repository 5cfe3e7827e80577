"""Prometheus metrics, in a registry of the app's own (so several apps can live in one process)."""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 6.4, 12.8)


class Metrics:
    def __init__(self):
        self.registry = r = CollectorRegistry()
        self.requests = Counter("quicksilver_requests", "HTTP requests by route and status", ["route", "status"], registry=r)
        self.latency = Histogram("quicksilver_latency_seconds", "End-to-end latency", ["route"], buckets=LATENCY_BUCKETS, registry=r)
        self.first_frame = Histogram("quicksilver_first_frame_seconds", "Time to the first denoising frame",
                                     buckets=LATENCY_BUCKETS, registry=r)
        self.steps = Histogram("quicksilver_denoising_steps", "Denoising steps per request",
                               buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256), registry=r)
        self.tokens_per_forward = Histogram("quicksilver_tokens_per_forward", "Generated tokens per forward pass",
                                            buckets=(0.5, 1, 1.5, 2, 3, 4, 6, 8, 16), registry=r)
        self.typed_through = Counter("quicksilver_typed_through", "Completions answered from a kept answer the "
                                     "user typed the start of (no forward pass)", registry=r)
        self.queue_depth = Gauge("quicksilver_queue_depth", "Requests waiting for the batch", registry=r)
        self.completions = Counter("quicksilver_completions", "Completions by the replica that decoded them ('local': "
                                   "this process; 'front': typed through, answered by the front)", ["replica"],
                                   registry=r)
        self.replica_queue_depth = Gauge("quicksilver_replica_queue_depth", "Requests waiting in a replica's batch, "
                                         "as it last reported", ["replica", "state"], registry=r)
        self.replica_active = Gauge("quicksilver_replica_active", "Requests a replica is decoding, as it last reported",
                                    ["replica", "state"], registry=r)
        self.active_sessions = Gauge("quicksilver_active_sessions", "Open websocket sessions", registry=r)

    def observe_replicas(self, replicas: list[dict]) -> None:
        """The replicas' last reports as labelled gauges (those no longer listed are dropped)."""
        for gauge, key in ((self.replica_queue_depth, "queue_depth"), (self.replica_active, "active")):
            gauge.clear()
            for r in replicas:
                gauge.labels(r["id"], r["state"]).set(r[key])

    def observe_result(self, stats: dict) -> None:
        self.completions.labels(stats.get("replica", "local")).inc()
        if stats.get("typed_through"):   # no pass ran: it says nothing about the denoiser's steps
            self.typed_through.inc()
            return
        self.steps.observe(stats.get("steps", 0))
        self.tokens_per_forward.observe(stats.get("tokens_per_forward", 0.0))

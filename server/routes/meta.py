"""GET /health, /v1/models, /metrics; POST /v1/events and GET /v1/events/summary (completion telemetry)."""
from __future__ import annotations

import os
import socket
import time
from typing import Literal

from fastapi import APIRouter, Request as HttpRequest
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ConfigDict, Field

from server.store import EVENTS

router = APIRouter()


@router.get("/health")
async def health(http: HttpRequest):
    s = http.app.state
    return {"status": "ok", "model": s.model_name, "card_sha256": s.loaded.card_sha256, "provider": s.loaded.provider,
            "model_file": s.loaded.model_file, "family": s.loaded.conventions.family, "store": s.store.kind,
            "uptime_s": round(time.time() - s.started, 1), "replicas": replicas(s)}


def replicas(s) -> list[dict]:
    """What decodes: Ray Serve's replicas as they last reported (`serve --replicas`), or this process."""
    if hasattr(s.scheduler, "replicas"):
        return s.scheduler.replicas()
    return [{"id": "local", "pid": os.getpid(), "host": socket.gethostname(), "state": "running",
             "queue_depth": s.scheduler.queue_depth, "active": s.scheduler.active}]


@router.get("/v1/models")
async def models(http: HttpRequest):
    s = http.app.state
    return {"object": "list", "data": [{"id": s.model_name, "object": "model", "created": int(s.started),
                                        "owned_by": "quicksilver"}]}


@router.get("/metrics", response_class=PlainTextResponse)
async def metrics(http: HttpRequest):
    s = http.app.state
    s.metrics.queue_depth.set(s.scheduler.queue_depth)
    s.metrics.observe_replicas(replicas(s))
    return Response(generate_latest(s.metrics.registry), media_type=CONTENT_TYPE_LATEST)


class EventBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    completion_id: str = Field(..., max_length=64, description="the choice's `quicksilver.id`")
    event: Literal[EVENTS]


@router.post("/v1/events", responses={404: {"description": "no such completion was served here"}})
async def add_event(body: EventBody, http: HttpRequest):
    if not http.app.state.store.add_event(body.completion_id, body.event):
        return JSONResponse({"error": {"message": f"no completion {body.completion_id!r} was served here (send the "
                                       "choice's quicksilver.id)", "type": "not_found", "code": 404}}, 404)
    return {"ok": True}


@router.get("/v1/events/summary")
async def event_summary(http: HttpRequest):
    return http.app.state.store.event_summary()

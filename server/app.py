"""The FastAPI app: model, engine, scheduler, SQLite store and metrics made in the lifespan; routers; error handlers."""
from __future__ import annotations

import logging
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from fastapi import FastAPI, Request as HttpRequest
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from runtime.engine import DEFAULT_CONTEXT_TOKENS, Engine
from runtime.scheduler import MAX_BATCH, Busy, Scheduler
from runtime.session import load
from server.auth import key_ok
from server.metrics import Metrics
from server.routes import completions, dashboard, infill, meta, sessions
from server.store import Store

log = logging.getLogger("quicksilver.server")
OPEN_PATHS = {"/health"}                         # reachable without the API key
MAX_BODY_BYTES = 1 << 20
KNOWN_ROUTES = {"/v1/completions", "/infill", "/v1/models", "/health", "/metrics", "/v1/events", "/v1/events/summary",
                "/dashboard", "/v1/stats"}


@dataclass
class ServerConfig:
    model: Path | None = None
    db: Path = Path("quicksilver.sqlite")
    api_key: str | None = None
    context_tokens: int = DEFAULT_CONTEXT_TOKENS
    max_batch: int = MAX_BATCH
    threads: int = 0


def error(status: int, message: str, kind: str) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": kind, "code": status}}, status_code=status)


def create_app(cfg: ServerConfig) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI):
        s = app.state
        s.loaded = load(cfg.model, threads=cfg.threads)
        s.model_name = f"quicksilver/{s.loaded.model_dir.name}"
        s.engine = Engine(s.loaded, cfg.context_tokens)
        s.scheduler = Scheduler(s.engine, max_batch=cfg.max_batch)
        s.store, s.metrics, s.started = Store(cfg.db), Metrics(), time.time()
        s.api_key, s.live = cfg.api_key, set()
        log.info("serving %s (%s, %s)", s.model_name, s.loaded.model_file, s.loaded.provider)
        yield
        s.scheduler.close()
        s.store.close()

    app = FastAPI(title="quicksilver", lifespan=lifespan)
    for module in (completions, infill, meta, sessions, dashboard):
        app.include_router(module.router)

    @app.middleware("http")
    async def guard_and_count(request: HttpRequest, call_next):
        path = request.url.path
        if int(request.headers.get("content-length") or 0) > MAX_BODY_BYTES:
            return error(413, f"request body over {MAX_BODY_BYTES} bytes", "invalid_request_error")
        if path not in OPEN_PATHS and not key_ok(request.headers, request.query_params, cfg.api_key):
            app.state.metrics.requests.labels(path if path in KNOWN_ROUTES else "other", "401").inc()
            return error(401, "missing or wrong API key: send 'Authorization: Bearer KEY'", "authentication_error")
        response = await call_next(request)
        app.state.metrics.requests.labels(path if path in KNOWN_ROUTES else "other", str(response.status_code)).inc()
        return response

    @app.exception_handler(RequestValidationError)
    async def invalid(_, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(x) for x in first.get("loc", ()) if x != "body")
        return error(400, f"invalid request: {where}: {first.get('msg', 'bad value')}", "invalid_request_error")

    @app.exception_handler(ValueError)
    async def bad_value(_, exc: ValueError):
        return error(400, str(exc), "invalid_request_error")

    @app.exception_handler(Busy)
    async def busy(_, exc: Busy):
        response = error(429, f"server busy: {exc}", "server_busy")
        response.headers["Retry-After"] = "1"
        return response

    @app.exception_handler(Exception)
    async def unexpected(_, exc: Exception):
        log.exception("unhandled error")
        return error(500, "internal error; the server logged the details", "server_error")

    return app

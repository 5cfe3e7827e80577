"""The FastAPI app: model, engine, scheduler, SQLite store and metrics made in the lifespan; routers; error handlers."""
from __future__ import annotations

import logging
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from pydantic import BaseModel, Field

from runtime.engine import Engine

from runtime.request import DEFAULT_CONTEXT_TOKENS
from runtime.scheduler import MAX_BATCH, Busy, Scheduler
from runtime.session import LoadedModel, load
from runtime.workspace import Workspace
from server.generate import ModelFailure, ReplicaLost
from server.guard import Guard, Policy
from server.metrics import Metrics
from server.routes import completions, dashboard, infill, meta, sessions
from server.store import RETRY, Store, StoreUnavailable

log = logging.getLogger("quicksilver.server")
KNOWN_ROUTES = {"/v1/completions", "/infill", "/v1/models", "/health", "/metrics", "/v1/events", "/v1/events/summary",
                "/dashboard", "/v1/stats"}


@dataclass
class ServerConfig:
    model: Path | None = None
    db: str | Path = Path("quicksilver.sqlite")   # a SQLite file, or a PostgreSQL URL replicas share
    api_key: str | None = None
    allow_origins: tuple[str, ...] = ()
    check_host: bool = True           # bound to loopback: refuse other Host names (DNS rebinding)
    min_confidence: float | None = None   # /v1/completions withholds choices below this (None: shows all)
    context_tokens: int = DEFAULT_CONTEXT_TOKENS
    max_batch: int = MAX_BATCH
    threads: int = 0
    workspace: Path | None = None     # a repository to index and give every request context from
    names: bool = True                # names analysis in decoding (runtime/names.py); off to compare
    replicas: int = 0                 # engines on Ray Serve (server/replicas.py); 0: this process decodes
    ray_address: str | None = None    # an existing Ray cluster (default: one of this machine's own)
    routing: str = "affinity"         # how requests find a replica: "affinity" (their document) or "round-robin"
    gpus_per_replica: float = 0.0


class ErrorBody(BaseModel):
    error: dict = Field(..., description="{'message': what was wrong and what to do, 'type': a kind, 'code': the status}")


ERROR_RESPONSES = {code: {"model": ErrorBody, "description": what} for code, what in {
    400: "a bad value: the message says which", 401: "missing or wrong API key",
    403: "a browser origin that is not allowed (--allow-origin)", 413: "body over 1 MB",
    415: "the body is not sent as application/json", 429: "the queue is full: retry after Retry-After seconds",
    503: "the database cannot be reached just now (a shared PostgreSQL restarting): retry after Retry-After seconds",
}.items()}


MAX_ERRORS_SHOWN = 3      # a value that fits no branch of a union has one error per branch


def problem(e: dict) -> str:
    """'field.sub: message' for one validation error (pydantic's union-branch names left out of the place)."""
    where = ".".join(str(x) for x in e.get("loc", ()) if x != "body" and not (isinstance(x, str) and "[" in x or
                                                                              x in ("str", "constrained-str")))
    if e.get("type") == "json_invalid":
        return f"the body is not valid JSON (at character {e['loc'][-1]}): {e.get('ctx', {}).get('error', 'bad JSON')}"
    if e.get("type") == "string_unicode":
        return f"{where or 'body'}: holds a lone surrogate (half a UTF-16 pair): send valid Unicode"
    return f"{where or 'body'}: {e.get('msg', 'bad value')}"


def problems(errors: list[dict]) -> list[str]:
    """One message per problem: where a value may take several shapes (a prompt: a string or a list), the
    shapes it did not even try to be ("Input should be a valid list") are left out when another says what is
    wrong with the one it has."""
    out = [problem(e) for e in errors]
    places = [m.split(": ", 1)[0] for m in out]
    keep = [m for e, m, w in zip(errors, out, places)
            if not (str(e.get("type", "")).endswith("_type") and
                    any(w == w2 and not str(e2.get("type", "")).endswith("_type") for e2, w2 in zip(errors, places)))]
    return list(dict.fromkeys(keep))


ROUTES = ("quicksilver serves POST /v1/completions (OpenAI's completions: `prompt` and `suffix` for "
          "fill-in-the-middle; no chat completions), POST /infill (llama.cpp's, for llama.vim and llama.vscode), "
          "GET /v1/models, /health, /metrics, /dashboard and the chat-edit websocket /v1/sessions")


def error(status: int, message: str, kind: str) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": kind, "code": status}}, status_code=status)


def replicated(cfg: ServerConfig):
    """The engines as Ray Serve replicas (imported only here: Ray is the `replicas` extra)."""
    from server.replicas import RemoteScheduler, ReplicaConfig
    return RemoteScheduler(cfg.replicas, ReplicaConfig(cfg.model, cfg.threads, cfg.context_tokens, cfg.names,
                                                       cfg.max_batch),
                           cfg.ray_address, cfg.routing, cfg.gpus_per_replica)


def create_app(cfg: ServerConfig, loaded: LoadedModel | None = None, store: Store | None = None,
               replicas=None) -> FastAPI:
    """The app; `loaded`, `store` and `replicas` may be opened beforehand (so `serve` reports a damaged file, or
    replicas that cannot start, before serving)."""
    @asynccontextmanager
    async def lifespan(app: FastAPI):
        s = app.state
        s.loaded = loaded or load(cfg.model, threads=cfg.threads)
        s.model_name = f"quicksilver/{s.loaded.model_dir.name}"
        s.engine = Engine(s.loaded, cfg.context_tokens)
        if not cfg.names:
            s.engine.names = False
        if cfg.replicas:   # `serve` starts them beforehand, to report a failure in one line
            s.scheduler = replicas or replicated(cfg)
            s.scheduler.front = s.engine   # answers what the user typed through (server/replicas.py)
        else:
            s.scheduler = Scheduler(s.engine, max_batch=cfg.max_batch)
        s.store, s.metrics, s.started = store or Store(cfg.db), Metrics(), time.time()
        s.live, s.running, s.min_confidence = set(), set(), cfg.min_confidence   # dashboard queues; session/request ids decoding now
        s.workspace = Workspace(cfg.workspace).start() if cfg.workspace else None
        log.info("serving %s (%s, %s)", s.model_name, s.loaded.model_file, s.loaded.provider)
        yield
        s.scheduler.close()
        s.store.close()
        if s.workspace is not None:
            s.workspace.close()

    app = FastAPI(title="quicksilver", lifespan=lifespan, responses=ERROR_RESPONSES)
    routers = [m.router for m in (completions, infill, meta, sessions, dashboard)]
    for router in routers:
        app.include_router(router)
    json_paths = frozenset(r.path for router in routers for r in router.routes if "POST" in getattr(r, "methods", ()))

    def count(path: str, status: int) -> None:
        if hasattr(app.state, "metrics"):
            app.state.metrics.requests.labels(path if path in KNOWN_ROUTES else "other", str(status)).inc()

    app.add_middleware(Guard, policy=Policy(cfg.api_key, tuple(cfg.allow_origins), count, json_paths,
                                                 cfg.check_host))
    if cfg.allow_origins:  # outside the guard: answers allowed pages' preflights, marks their responses readable
        app.add_middleware(CORSMiddleware, allow_origins=list(cfg.allow_origins), allow_methods=["GET", "POST"],
                           allow_headers=["authorization", "content-type", "x-api-key"])

    @app.exception_handler(RequestValidationError)
    async def invalid(_, exc: RequestValidationError):
        return error(400, "invalid request: " + "; ".join(problems(list(exc.errors()))[:MAX_ERRORS_SHOWN]),
                     "invalid_request_error")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(http, exc: StarletteHTTPException):   # 404, 405, a body that cannot be parsed: one shape
        detail = str(exc.detail)
        if exc.status_code == 404 and detail == "Not Found":   # a client pointed at the wrong route: say which exist
            detail = f"no route {http.method} {http.url.path} here: {ROUTES}"
        elif exc.status_code == 400 and detail == "There was an error parsing the body":   # FastAPI's words
            detail = "the body could not be read as JSON: it must be a JSON object in UTF-8"
        response = error(exc.status_code, detail, "invalid_request_error")
        response.headers.update(exc.headers or {})   # a 405's Allow
        return response

    @app.exception_handler(ValueError)
    async def bad_value(_, exc: ValueError):
        return error(400, str(exc), "invalid_request_error")

    @app.exception_handler(Busy)
    async def busy(_, exc: Busy):
        response = error(429, f"server busy: {exc}", "server_busy")
        response.headers["Retry-After"] = "1"
        return response

    @app.exception_handler(StoreUnavailable)
    async def store_unavailable(_, exc: StoreUnavailable):   # PostgreSQL restarting: retry; the store reconnects
        response = error(503, f"{exc}: {RETRY}", "store_unavailable")
        response.headers["Retry-After"] = "1"
        return response

    @app.exception_handler(ReplicaLost)
    async def replica_lost(_, exc: ReplicaLost):   # a replica died mid-request: another takes its place
        response = error(503, str(exc), "replica_unavailable")
        response.headers["Retry-After"] = "1"
        return response

    @app.exception_handler(ModelFailure)
    async def model_failure(_, exc: ModelFailure):
        return error(500, str(exc), "server_error")

    @app.exception_handler(Exception)
    async def unexpected(_, exc: Exception):
        log.exception("unhandled error")
        return error(500, "internal error; the server logged the details", "server_error")

    return app

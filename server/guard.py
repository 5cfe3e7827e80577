"""The ASGI guard every HTTP request and websocket passes first: browser origins, the API key, body size and type.

A pure ASGI middleware (not Starlette's BaseHTTPMiddleware, which hides a client's disconnect from the routes and
so kept abandoned requests decoding). It reads a body whole, up to MAX_BODY_BYTES however it is sent (a chunked
body has no Content-Length to trust), then hands it to the app; later `receive` calls reach the client, so a
route still sees `http.disconnect`.
"""
from __future__ import annotations

import hmac
import json
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

MAX_BODY_BYTES = 1 << 20
OPEN_PATHS = {"/health"}                          # reachable without the API key
JSON_TYPES = ("application/json",)               # POST bodies must say they are JSON (a cross-site form cannot)
LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1", "[::1]"}


@dataclass
class Policy:
    api_key: str | None = None
    allow_origins: tuple[str, ...] = ()          # browser origins allowed besides the server's own page
    count: object = None                         # count(path, status): the metrics hook
    json_paths: frozenset[str] = frozenset()     # routes that take a JSON body (POST)
    check_host: bool = True                      # only loopback Host names (and allowed origins' hosts) reach us


def key_ok(given: str, key: str | None) -> bool:
    """True when no key is configured, or `given` is it (compared as bytes, so any text is a wrong key, not a crash)."""
    if not key:
        return True
    return hmac.compare_digest(given.encode("utf-8", "surrogateescape"), key.encode("utf-8", "surrogateescape"))


def presented_key(headers: dict[str, str], query: str) -> str:
    bearer = headers.get("authorization", "")
    bearer = bearer[len("bearer "):] if bearer[:len("bearer ")].lower() == "bearer " else bearer
    return (bearer.strip() or headers.get("x-api-key", "")
            or (parse_qs(query).get("api_key") or [""])[0])


def origin_ok(origin: str | None, host: str | None, allowed: tuple[str, ...]) -> bool:
    """No Origin (not a browser), an allowed one, or the server's own page: the Origin names the Host the browser
    asked for, and that Host is a loopback name (a page on a rebinding domain names its own host, not ours)."""
    if origin is None or origin in allowed or "*" in allowed:
        return True
    own = urlsplit(origin)
    return own.scheme in ("http", "https") and own.netloc == host and (own.hostname or "") in LOOPBACK_HOSTS


def host_ok(host: str | None, allowed: tuple[str, ...]) -> bool:
    """A loopback Host (or none, as HTTP/1.0 allows), or the host of an allowed origin."""
    if host is None:
        return True
    name = urlsplit("//" + host).hostname or ""
    return name in LOOPBACK_HOSTS or name.startswith("127.") or any(urlsplit(o).hostname == name for o in allowed)


def _headers(scope) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", ())}


class Guard:
    def __init__(self, app, policy: Policy):
        self.app, self.policy = app, policy

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        headers, path = _headers(scope), scope["path"]
        problem = self._refuse(scope, headers, path)
        if scope["type"] == "websocket":
            if problem:   # closing before accept is answered with HTTP 403
                await receive()
                return await send({"type": "websocket.close", "code": 1008, "reason": problem[2][:120]})
            return await self.app(scope, receive, send)
        if problem is None and scope["method"] == "POST" and path in self.policy.json_paths:
            problem, receive = await self._read_body(headers, receive)
        if problem:
            return await self._error(send, path, *problem)
        await self.app(scope, receive, self._counting(send, path))

    def _refuse(self, scope, headers, path) -> tuple[int, str, str] | None:
        if self.policy.check_host and not host_ok(headers.get("host"), self.policy.allow_origins):
            return 403, "forbidden_host", ("this server answers only to localhost names (a page on another domain "
                                           "that resolves here is refused); bind --host to serve other names")
        if not origin_ok(headers.get("origin"), headers.get("host"), self.policy.allow_origins):
            return 403, "forbidden_origin", (f"origin {headers['origin']!r} is not allowed: start the server with "
                                            "--allow-origin ORIGIN to let that page in")
        if path not in OPEN_PATHS and not key_ok(presented_key(headers, scope.get("query_string", b"").decode(
                "latin-1")), self.policy.api_key):
            return 401, "authentication_error", "missing or wrong API key: send 'Authorization: Bearer KEY'"
        return None

    async def _read_body(self, headers, receive):
        kind = headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if kind not in JSON_TYPES:
            return (415, "invalid_request_error",
                    f"send the body as JSON with 'Content-Type: application/json' (got {kind or 'no content type'!r})"), receive
        if int(headers.get("content-length") or 0) > MAX_BODY_BYTES:
            return (413, "invalid_request_error", f"request body over {MAX_BODY_BYTES} bytes"), receive
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return (499, "client_closed", "the client went away"), receive
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > MAX_BODY_BYTES:
                return (413, "invalid_request_error", f"request body over {MAX_BODY_BYTES} bytes"), receive
            if not message.get("more_body"):
                break
        body, sent = b"".join(chunks), False

        async def replay():
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()
        return None, replay

    def _counting(self, send, path):
        async def counted(message):
            if message["type"] == "http.response.start" and self.policy.count:
                self.policy.count(path, message["status"])
            await send(message)
        return counted

    async def _error(self, send, path, status: int, kind: str, message: str) -> None:
        if self.policy.count:
            self.policy.count(path, status)
        body = json.dumps({"error": {"message": message, "type": kind, "code": status}}).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

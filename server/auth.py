"""The API key check, shared by the HTTP middleware and the websocket routes."""
from __future__ import annotations

import hmac


def key_ok(headers, query_params, key: str | None) -> bool:
    """True when no key is configured, or the request presents it (Bearer header, x-api-key, or ?api_key=)."""
    if not key:
        return True
    given = (headers.get("authorization", "").removeprefix("Bearer ").strip()
             or headers.get("x-api-key", "") or query_params.get("api_key", ""))
    return hmac.compare_digest(given, key)


async def accept_websocket(ws) -> bool:
    """Accept a websocket that presents the key; close any other with policy violation (1008). True if accepted."""
    if not key_ok(ws.headers, ws.query_params, ws.app.state.api_key):
        await ws.close(code=1008, reason="missing or wrong API key")
        return False
    await ws.accept()
    return True

"""Websocket accept for the routes; the Origin and API key checks ran before, in server/guard.py."""
from __future__ import annotations


async def accept_websocket(ws) -> bool:
    """Accept a websocket that reached a route (server.guard.Guard already refused a foreign origin or a wrong
    key with 1008, before the handshake completed). True once accepted."""
    await ws.accept()
    return True

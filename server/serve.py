"""quicksilver serve: the HTTP server on the shipped model (127.0.0.1:8000 unless told otherwise)."""
from __future__ import annotations

import logging
import os
from pathlib import Path

from server.app import ServerConfig, create_app

API_KEY_ENV = "QUICKSILVER_API_KEY"


def add_arguments(p) -> None:
    p.add_argument("--host", default="127.0.0.1", help="address to bind (127.0.0.1 keeps it local)")
    p.add_argument("--port", type=int, default=8000, help="port")
    p.add_argument("--model", type=Path, help="model directory (default: the shipped model)")
    p.add_argument("--db", type=Path, default=Path("quicksilver.sqlite"), help="SQLite file for events and history")
    p.add_argument("--api-key", default=os.environ.get(API_KEY_ENV), help=f"require this key (or set {API_KEY_ENV})")
    p.add_argument("--threads", type=int, default=0, help="ONNX Runtime threads (0: all cores)")


def run(args) -> None:
    import uvicorn

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    app = create_app(ServerConfig(model=args.model, db=args.db, api_key=args.api_key, threads=args.threads))
    uvicorn.run(app, host=args.host, port=args.port, log_level="info")

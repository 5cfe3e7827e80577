"""quicksilver serve: the HTTP server on the shipped model (127.0.0.1:8000 unless told otherwise)."""
from __future__ import annotations

import logging
import os
import re
import sys
from pathlib import Path

from runtime.request import DEFAULT_CONTEXT_TOKENS
from runtime.session import ModelError, load
from server.app import ServerConfig, create_app, replicated
from server.guard import LOOPBACK_HOSTS
from server.routes.sessions import MAX_MESSAGE_CHARS
from server.store import Store, StoreError

API_KEY_ENV = "QUICKSILVER_API_KEY"
GRACEFUL_SHUTDOWN_S = 3       # on Ctrl+C, requests still running after this are cancelled
WS_MAX_BYTES = 4 * MAX_MESSAGE_CHARS + 1024   # a websocket frame of MAX_MESSAGE_CHARS characters, UTF-8 encoded
SECRET_QUERY = re.compile(r"(api(?:_|%5f)key=)[^&\s\"]*", re.IGNORECASE)   # also percent-encoded names


class RedactKeys(logging.Filter):
    """Access-log lines never carry the API key a client put in the query string."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(SECRET_QUERY.sub(r"\1***", a) if isinstance(a, str) else a for a in record.args)
        return True


def add_arguments(p) -> None:
    p.add_argument("--host", default="127.0.0.1", help="address to bind (127.0.0.1 keeps it local)")
    p.add_argument("--port", type=int, default=8000, help="port")
    p.add_argument("--model", type=Path, help="model directory (default: the shipped model)")
    p.add_argument("--db", "--database", default="quicksilver.sqlite",
                   help="where sessions, events and history are kept: a SQLite file, or a PostgreSQL URL "
                        "(postgresql://user@host/db, with quicksilver[postgres]) that several servers share")
    p.add_argument("--api-key", default=os.environ.get(API_KEY_ENV), help=f"require this key (or set {API_KEY_ENV})")
    p.add_argument("--allow-origin", action="append", default=[], metavar="ORIGIN",
                   help="a browser origin (e.g. http://localhost:3000) allowed to call the API and open websockets; "
                        "repeat for more. Default: none but the server's own pages")
    p.add_argument("--min-confidence", type=float, metavar="P",
                   help="/v1/completions: withhold choices less confident than P in [0, 1] (default: show all; "
                        "/infill and the language server withhold below their own default)")
    p.add_argument("--threads", type=int, default=0, help="ONNX Runtime threads (0: all cores)")
    p.add_argument("--context-tokens", type=int, default=DEFAULT_CONTEXT_TOKENS, metavar="N",
                   help=f"prefix + window + suffix the model sees (default {DEFAULT_CONTEXT_TOKENS}, at most the "
                        "model's context; an imported model has room for /infill's input_extra files)")
    p.add_argument("--workspace", type=Path, metavar="DIR",
                   help="a repository to index (what git or its .gitignore files leave out is never read) and give "
                        "every request context from: /v1/completions, /infill and sessions; changes are followed")
    p.add_argument("--no-names", dest="names", action="store_false",
                   help="decode names unconstrained (by default, at a member access or an import, only names that "
                        "exist there are spelled: jedi's analysis, reported as stats.names)")
    p.add_argument("--replicas", type=int, default=0, metavar="N",
                   help="decode on N engine replicas on Ray Serve (pip install 'quicksilver[replicas]'); this process "
                        "keeps every route. Give several servers one --database postgresql://… (docs/scaling.md)")
    p.add_argument("--ray-address", metavar="ADDR",
                   help="with --replicas: an existing Ray cluster (ray start --head; default: one of this machine's own)")
    p.add_argument("--routing", choices=["affinity", "round-robin"], default="affinity",
                   help="with --replicas: a request goes to the replica holding its document's context (affinity), "
                        "or to each in turn")
    p.add_argument("--gpus-per-replica", type=float, default=0.0, metavar="G",
                   help="with --replicas: GPUs each replica holds (1: one each; 0.5: two a GPU)")


def uvicorn_config(app, host: str, port: int, **kw):
    """The uvicorn settings the product runs with (tests start servers with the same)."""
    import uvicorn
    for name in ("uvicorn.access", "uvicorn.error"):   # HTTP lines, and websocket handshakes
        logging.getLogger(name).addFilter(RedactKeys())
    return uvicorn.Config(app, host=host, port=port, ws_max_size=WS_MAX_BYTES,
                          timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S, **kw)


def port_in_use(host: str, port: int) -> str | None:
    """Why `host:port` cannot be listened on (the OS's words), or None if it can (checked, then released)."""
    import socket
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as e:
        return e.strerror or str(e)
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)   # as uvicorn binds: a TIME_WAIT port is free
        try:
            s.bind(address)
        except OSError as e:
            return e.strerror or str(e)
    return None


def run(args) -> None:
    import uvicorn

    if args.context_tokens < 32:
        sys.exit("quicksilver serve: --context-tokens must be at least 32")
    if args.min_confidence is not None and not 0 <= args.min_confidence <= 1:
        sys.exit("quicksilver serve: --min-confidence must be between 0 and 1")
    if args.api_key and not (args.api_key.isascii() and args.api_key.isprintable()):   # "" means no key
        sys.exit("quicksilver serve: the API key must be printable ASCII (HTTP headers cannot carry other text)")

    if args.replicas < 0 or args.gpus_per_replica < 0:
        sys.exit("quicksilver serve: --replicas and --gpus-per-replica cannot be negative")
    if not args.replicas and (args.ray_address or args.routing != "affinity" or args.gpus_per_replica):
        sys.exit("quicksilver serve: --ray-address, --routing and --gpus-per-replica go with --replicas N")
    if args.replicas:
        try:
            import ray.serve  # noqa: F401  (the replicas extra)
        except ImportError:
            sys.exit("quicksilver serve: --replicas needs Ray Serve: pip install 'quicksilver[replicas]'")
    if args.workspace is not None and not args.workspace.is_dir():
        sys.exit(f"quicksilver serve: --workspace {args.workspace} is not a folder")
    if (busy := port_in_use(args.host, args.port)) is not None:   # say so before loading anything
        sys.exit(f"quicksilver serve: cannot listen on {args.host}:{args.port} ({busy}): another server has it? "
                 "Choose another port: `quicksilver serve --port 8001`, or `make serve PORT=8001`")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:  # open what the app needs first, so a damaged model or database is one line naming it
        loaded, store = load(args.model, threads=args.threads), Store(args.db)
    except (ModelError, StoreError) as e:
        sys.exit(f"quicksilver serve: {e}")
    cfg = ServerConfig(model=args.model, db=args.db, api_key=args.api_key, threads=args.threads,
                       allow_origins=tuple(args.allow_origin), check_host=args.host in LOOPBACK_HOSTS,
                       min_confidence=args.min_confidence, context_tokens=args.context_tokens,
                       workspace=args.workspace, names=args.names, replicas=args.replicas,
                       ray_address=args.ray_address, routing=args.routing, gpus_per_replica=args.gpus_per_replica)
    replicas = None
    if args.replicas:
        from server.replicas import ReplicasUnavailable
        try:
            replicas = replicated(cfg)
        except ReplicasUnavailable as e:
            sys.exit(f"quicksilver serve: {e}")
    app = create_app(cfg, loaded=loaded, store=store, replicas=replicas)
    try:
        uvicorn.Server(uvicorn_config(app, args.host, args.port, log_level="info")).run()
    except KeyboardInterrupt:   # uvicorn re-raises Ctrl+C after a clean shutdown (uvicorn.run swallows it too)
        pass

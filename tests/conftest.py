"""Shared fixtures: a tiny corpus, tokenizer, checkpoint and exported model built once per test session."""
from __future__ import annotations

import argparse
import os
import shutil
import socket
import sysconfig
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ROOT / "model" / "default"
STDLIB = Path(sysconfig.get_paths()["stdlib"])
TINY_SOURCES = ["json", "email", "http", "unittest", "asyncio"]   # a few MB of real Python
TINY_VOCAB = 1024


def train_args(*argv: str) -> argparse.Namespace:
    from model.train import add_arguments
    p = argparse.ArgumentParser()
    add_arguments(p)
    return p.parse_args(list(argv))


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory) -> Path:
    from model.corpus import build_corpus, humaneval_path
    src = tmp_path_factory.mktemp("src")
    for name in TINY_SOURCES:
        shutil.copytree(STDLIB / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "test*"))
    out = tmp_path_factory.mktemp("corpus")
    build_corpus(out, [src], None, TINY_VOCAB, int(20e6), 2, humaneval_path())
    return out


@pytest.fixture(scope="session")
def tiny_ckpt(tiny_corpus, tmp_path_factory) -> Path:
    from model.train import train
    out = tmp_path_factory.mktemp("ckpt") / "tiny"
    train(train_args("--corpus", str(tiny_corpus), "--out", str(out), "--size", "tiny", "--steps", "30",
                     "--batch", "8", "--warmup", "5", "--threads", "2"))
    return out


@pytest.fixture(scope="session")
def tiny_model_dir(tiny_ckpt, tmp_path_factory) -> Path:
    from model.export import export
    out = tmp_path_factory.mktemp("models") / "tiny"
    export(tiny_ckpt, out, precision="both")
    return out


@pytest.fixture(scope="session")
def int8_dir(tiny_ckpt, tmp_path_factory) -> Path:
    """The tiny model as the shipped one is exported (int8, with the weights distill and the twin start from)."""
    from model.export import export
    out = tmp_path_factory.mktemp("int8") / "base"
    export(tiny_ckpt, out, precision="int8")
    return out


@pytest.fixture(scope="session")
def tiny_twin_dir(tiny_corpus, tmp_path_factory) -> Path:
    """The autoregressive twin of the tiny model, exported (fp32)."""
    from model.export import export
    from model.train import train
    ckpt = tmp_path_factory.mktemp("ckpt") / "twin"
    train(train_args("--corpus", str(tiny_corpus), "--out", str(ckpt), "--size", "tiny", "--steps", "30",
                     "--batch", "8", "--warmup", "5", "--threads", "2", "--objective", "autoregressive"))
    out = tmp_path_factory.mktemp("models") / "twin"
    export(ckpt, out, precision="fp32")
    return out


@pytest.fixture(scope="session")
def tiny_engine(tiny_model_dir):
    from runtime.engine import Engine
    from runtime.session import load
    return Engine(load(tiny_model_dir, prefer="fp32", threads=1))


def in_ci() -> bool:
    return os.environ.get("CI") == "true"


def program(*names: str, package: str) -> str:
    """The path of a system program the test drives: skipped on a laptop without it, a failure in CI (whose
    .ci/run installs `package`)."""
    path = next((p for p in map(shutil.which, names) if p), None)
    if path is None:
        if in_ci():
            pytest.fail(f"{names[0]} is missing: .ci/run installs Debian's {package} package")
        pytest.skip(f"{names[0]} is not installed (apt-get install {package})")
    return path


API_KEY = "test-key"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model_dir: Path, db: Path, api_key: str | None = API_KEY, **options):
    """A real uvicorn server on a free loopback port, in a thread, with the product's uvicorn settings; returns
    (server, thread, base http url). `options` are ServerConfig fields (e.g. allow_origins)."""
    import uvicorn
    from server.app import ServerConfig, create_app
    from server.serve import uvicorn_config
    app = create_app(ServerConfig(model=model_dir, db=db, api_key=api_key, threads=1, **options))
    port = free_port()
    srv = uvicorn.Server(uvicorn_config(app, "127.0.0.1", port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.time() + 60
    while not srv.started and time.time() < deadline:
        time.sleep(0.05)
    assert srv.started, "the server did not start"
    return srv, thread, f"http://127.0.0.1:{port}"


def stop_server(srv, thread) -> None:
    srv.should_exit = True
    thread.join(timeout=10)


@pytest.fixture(scope="session")
def postgres_server():
    """One PostgreSQL server for the test session (tests/postgres.py)."""
    from tests.postgres import Postgres, binaries
    bindir = binaries()
    if bindir is None:
        pytest.skip("PostgreSQL's binaries are not installed (Debian: apt-get install postgresql; .ci/run does)")
    pytest.importorskip("psycopg", reason="pip install 'quicksilver[postgres]'")
    server = Postgres(bindir)
    server.start()
    yield server
    server.close()


@pytest.fixture
def postgres(postgres_server):
    """The shared PostgreSQL server with an empty database."""
    postgres_server.reset()
    return postgres_server

"""The server as a process, the way `quicksilver serve` runs: a crash in the middle of a request, what its logs
hold, Ctrl+C and SIGTERM with work in flight, and the one-line start-up errors (each a finding of the probe that
tests/test_hardening.py covers for a running server)."""
import json
import os
import signal
import subprocess
import sys
import time

import httpx
import pytest
from websockets.sync.client import connect

from tests.conftest import API_KEY as KEY
from tests.conftest import ROOT, SHIPPED, free_port
from tests.test_hardening import AUTH, raw_post, talk, until


def serve_process(model_dir, db, *extra, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL):
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "runtime.cli", "serve", "--model", str(model_dir), "--db", str(db),
                             "--port", str(port), "--threads", "1", *extra], cwd=ROOT, stdout=stdout,
                            stderr=stderr, text=True, env={**os.environ, "QUICKSILVER_API_KEY": KEY})
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        assert proc.poll() is None, proc.communicate()
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.1)


def test_a_request_in_flight_at_a_crash_is_reported_on_resume(tiny_model_dir, tmp_path):
    db = tmp_path / "crash.sqlite"
    proc, url = serve_process(tiny_model_dir, db, stderr=subprocess.DEVNULL)
    ws_url = url.replace("http://", "ws://") + "/v1/sessions"
    try:
        ws = connect(ws_url, additional_headers=AUTH)
        sid = talk(ws, {"type": "open", "document": {"text": "x = 1\n"}})["session_id"]
        ws.send(json.dumps({"type": "complete", "request_id": "lost", "offset": 6, "max_tokens": 1024,
                            "threshold": 1.0, "eom_bias": -50}))
        until(ws, "lost", kinds=("frame",))
    finally:
        proc.kill()    # a crash: no shutdown, no goodbye
        proc.wait()
    proc, url = serve_process(tiny_model_dir, db, stderr=subprocess.DEVNULL)
    try:
        with connect(ws_url.replace(ws_url.split("/")[2], url.split("/")[2]), additional_headers=AUTH) as ws:
            resumed = talk(ws, {"type": "open", "session_id": sid})
        assert [(r["request_id"], r["state"]) for r in resumed["requests"]] == [("lost", "interrupted")]
        assert "send it again" in resumed["requests"][0]["message"]
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=15)


# --- 8 and 12: the access log, shutdown -------------------------------------------------------------------------
def test_the_key_never_reaches_the_log_and_ctrl_c_exits(tiny_model_dir, tmp_path):
    proc, url = serve_process(tiny_model_dir, tmp_path / "log.sqlite", stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT)   # uvicorn's access log goes to stdout
    try:
        assert httpx.get(url + f"/v1/models?api_key={KEY}", timeout=30).status_code == 200
        assert httpx.get(url + "/v1/models?api_key=wrong-guess", timeout=30).status_code == 401
        assert httpx.get(url + f"/v1/models?api%5Fkey={KEY}", timeout=30).status_code == 200
        live = connect(url.replace("http://", "ws://") + f"/v1/dashboard/live?api_key={KEY}")
    finally:
        t0 = time.monotonic()
        proc.send_signal(signal.SIGINT)
        err, _ = proc.communicate(timeout=15)
    assert time.monotonic() - t0 < 5, "Ctrl+C did not stop the server promptly"
    live.close()
    assert "api_key=***" in err and KEY not in err and "wrong-guess" not in err
    assert "Traceback" not in err


# --- 11. start-up errors ----------------------------------------------------------------------------------------
def serve_fails(*args) -> str:
    r = subprocess.run([sys.executable, "-m", "runtime.cli", "serve", "--port", str(free_port()), *args], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    last = r.stderr.strip().splitlines()[-1]
    assert r.returncode != 0 and "Traceback" not in r.stderr and last.startswith("quicksilver serve: "), r.stderr
    return last


def test_a_corrupt_database_is_one_line_naming_it(tiny_model_dir, tmp_path):
    bad = tmp_path / "corrupt.sqlite"
    bad.write_bytes(b"this is not a database" * 100)
    assert str(bad) in serve_fails("--model", str(tiny_model_dir), "--db", str(bad))


def test_a_database_that_cannot_be_reached_is_one_line_without_its_password(tiny_model_dir):
    pytest.importorskip("psycopg")
    message = serve_fails("--model", str(tiny_model_dir), "--db", "postgresql://me:hunter2@127.0.0.1:1/quicksilver")
    assert "cannot be reached" in message and "127.0.0.1:1" in message and "hunter2" not in message


def test_a_key_headers_cannot_carry_is_refused_at_start(tiny_model_dir, tmp_path):
    assert "printable ASCII" in serve_fails("--model", str(tiny_model_dir), "--db", str(tmp_path / "k.sqlite"),
                                            "--api-key", "clé€ключ")


def test_a_damaged_model_is_one_line_naming_the_file(tiny_model_dir, tmp_path):
    import shutil
    damaged = tmp_path / "damaged"
    shutil.copytree(tiny_model_dir, damaged)
    onnx = next(damaged.glob("*.onnx"))
    onnx.write_bytes(onnx.read_bytes()[:1000])
    assert onnx.name in serve_fails("--model", str(damaged), "--db", str(tmp_path / "ok.sqlite"))


def test_sigterm_with_work_in_flight_exits_promptly(tmp_path):
    """HTTP requests still decoding are cancelled after the grace period instead of holding the shutdown ("Waiting
    for background tasks to complete" until kill -9). The shipped model, which fills a long window: sixteen
    completions of up to 1024 tokens take far longer than the grace period."""
    proc, url = serve_process(SHIPPED, tmp_path / "term.sqlite", stderr=subprocess.PIPE)
    body = json.dumps({"prompt": ["class Stack:\n    ", "def parse(text):\n    "], "n": 8, "max_tokens": 1024,
                       "temperature": 0.8}).encode()
    sock = raw_post(url, "/v1/completions", body, {**AUTH, "Content-Type": "application/json"})
    time.sleep(1.5)
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    took = time.monotonic() - t0
    sock.close()
    assert took < 8, f"SIGTERM waited {took:.1f} s for the running requests"
    assert "Traceback" not in err


def test_a_port_in_use_is_one_line_saying_how_to_choose_another(tiny_model_dir, tmp_path):
    import socket
    with socket.socket() as taken:   # another program listens there
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        message = serve_fails("--model", str(tiny_model_dir), "--db", str(tmp_path / "p.sqlite"), "--port", str(port))
    assert f"127.0.0.1:{port}" in message and "--port" in message and "PORT=" in message

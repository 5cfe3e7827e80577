"""The HTTP server, for real: uvicorn on 127.0.0.1, the official openai client, httpx, a real SQLite file."""
import json

import httpx
import openai
import pytest

from server.app import ServerConfig, create_app
from tests.conftest import API_KEY as KEY
from tests.conftest import start_server, stop_server


@pytest.fixture(scope="module")
def server(tiny_model_dir, tmp_path_factory):
    db = tmp_path_factory.mktemp("db") / "qs.sqlite"
    srv, thread, url = start_server(tiny_model_dir, db)
    yield {"url": url, "db": db}
    stop_server(srv, thread)


@pytest.fixture
def client(server):
    return openai.OpenAI(base_url=server["url"] + "/v1", api_key=KEY, max_retries=0)


def auth():
    return {"Authorization": f"Bearer {KEY}"}


def test_openai_client_fill_in_the_middle(client):
    r = client.completions.create(model="quicksilver", prompt="def add(a, b):\n    ", suffix="\n\nprint(add(1, 2))\n",
                                  max_tokens=12, temperature=0)
    assert r.object == "text_completion" and len(r.choices) == 1
    assert r.choices[0].finish_reason in ("stop", "length")
    assert r.usage.completion_tokens >= 0 and r.usage.prompt_tokens > 0


def test_openai_client_n_and_stop(client):
    r = client.completions.create(model="quicksilver", prompt="x = ", max_tokens=8, n=3, temperature=0.8, seed=1,
                                  stop=["\n"])
    assert [c.index for c in r.choices] == [0, 1, 2]
    assert all("\n" not in c.text for c in r.choices)


def test_openai_client_streaming(client):
    stream = client.completions.create(model="quicksilver", prompt="import os\n", suffix="\nprint(os.sep)\n",
                                       max_tokens=10, stream=True)
    chunks = list(stream)
    assert chunks and chunks[-1].choices[0].finish_reason in ("stop", "length")


def test_openai_client_streaming_with_usage(client):
    """stream_options.include_usage: a last chunk with no choices carries the usage, as OpenAI sends it."""
    chunks = list(client.completions.create(model="quicksilver", prompt=["import os\n", "x = "], max_tokens=6, n=2,
                                            stream=True, stream_options={"include_usage": True}))
    assert [len(c.choices) for c in chunks] == [1, 1, 1, 1, 0]
    assert all(c.usage is None for c in chunks[:-1])
    usage = chunks[-1].usage
    assert usage.prompt_tokens > 0 and 0 <= usage.completion_tokens <= 4 * 6
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


def test_stream_ends_with_done(server):
    with httpx.stream("POST", server["url"] + "/v1/completions", headers=auth(), timeout=60,
                      json={"prompt": "y = 1\n", "max_tokens": 6, "stream": True}) as r:
        lines = [l for l in r.iter_lines() if l]
    assert lines[-1] == "data: [DONE]" and all(l.startswith("data: ") for l in lines)
    last = json.loads(lines[-2][len("data: "):])["choices"][0]   # the choice's last chunk: its statistics
    assert last["finish_reason"] in ("stop", "length") and last["quicksilver"]["forward_passes"] >= 1
    assert 0 <= last["quicksilver"]["confidence"] <= 1 and last["quicksilver"]["withheld"] is False


def test_llama_cpp_infill(server):
    body = {"input_prefix": "def f(x):\n    ", "input_suffix": "\n    return y\n", "n_predict": 8,
            "input_extra": [{"filename": "util.py", "text": "def g():\n    pass\n"}], "samplers": ["top_k"]}
    r = httpx.post(server["url"] + "/infill", json=body, headers=auth(), timeout=60)
    assert r.status_code == 200 and r.json()["stop"] is True and "content" in r.json()


def test_models_health_metrics(server):
    models = httpx.get(server["url"] + "/v1/models", headers=auth()).json()
    assert models["data"][0]["id"].startswith("quicksilver/")
    health = httpx.get(server["url"] + "/health").json()  # open without the key
    assert health["status"] == "ok" and len(health["card_sha256"]) == 64 and health["provider"]
    text = httpx.get(server["url"] + "/metrics", headers=auth()).text
    assert 'quicksilver_requests_total{route="/v1/completions",status="200"}' in text
    assert "quicksilver_first_frame_seconds_bucket" in text and "quicksilver_queue_depth" in text


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}])
def test_api_key_required(server, headers):
    r = httpx.post(server["url"] + "/v1/completions", json={"prompt": "x"}, headers=headers)
    assert r.status_code == 401 and "API key" in r.json()["error"]["message"]


@pytest.mark.parametrize("body,needle", [
    ({"prompt": "x", "max_tokens": 0}, "max_tokens"),
    ({"prompt": "x", "temperature": -1}, "temperature"),
    ({"max_tokens": 3}, "prompt"),
    ({"prompt": "x", "echo": True}, "echo"),
    ({"prompt": "x" * 300_000}, "at most"),
    ({"prompt": [1, 2, 3]}, "token ids"),                  # not "at most 2 items": the ids are what is wrong
    ({"prompt": [[1, 2]]}, "token ids"),
])
def test_bad_input_is_a_clear_400_and_the_server_stays_up(server, body, needle):
    r = httpx.post(server["url"] + "/v1/completions", json=body, headers=auth())
    assert r.status_code == 400 and needle in r.json()["error"]["message"]
    assert "Traceback" not in r.text
    assert httpx.get(server["url"] + "/health").status_code == 200


def test_events_are_stored_and_summarised(server):
    r = httpx.post(server["url"] + "/v1/completions", json={"prompt": "x = ", "max_tokens": 4, "n": 2},
                   headers=auth(), timeout=60)
    a, b = (c["quicksilver"]["id"] for c in r.json()["choices"])
    for cid, event in [(a, "shown"), (a, "accepted"), (b, "shown"), (b, "dismissed")]:
        r = httpx.post(server["url"] + "/v1/events", json={"completion_id": cid, "event": event}, headers=auth())
        assert r.status_code == 200
    for cid, event, status in [(a, "liked", 400), ("never-issued", "shown", 404)]:
        r = httpx.post(server["url"] + "/v1/events", json={"completion_id": cid, "event": event}, headers=auth())
        assert r.status_code == status, (cid, event)
    summary = httpx.get(server["url"] + "/v1/events/summary", headers=auth()).json()
    assert summary["shown"] >= 2 and summary["acceptance_rate"] == pytest.approx(summary["accepted"] / summary["shown"])
    import sqlite3
    rows = sqlite3.connect(server["db"]).execute("SELECT COUNT(*) FROM requests").fetchone()[0]
    assert rows >= 1  # latency history is on disk


def test_oversized_body_and_invalid_utf8(server):
    r = httpx.post(server["url"] + "/v1/completions", content=b'{"prompt": "' + b"x" * (2 << 20) + b'"}',
                   headers={**auth(), "content-type": "application/json"})
    assert r.status_code == 413
    r = httpx.post(server["url"] + "/v1/completions", content=b'{"prompt": "\xff\xfe"}',
                   headers={**auth(), "content-type": "application/json"})
    assert r.status_code == 400 and "UTF-8" in r.json()["error"]["message"]


def test_busy_queue_is_429_with_retry_after(tiny_model_dir, tmp_path):
    from runtime.scheduler import Busy

    app = create_app(ServerConfig(model=tiny_model_dir, db=tmp_path / "b.sqlite", threads=1))
    from fastapi.testclient import TestClient

    @app.get("/always-busy")
    async def always_busy():
        raise Busy("32 requests are waiting")

    with TestClient(app, base_url="http://127.0.0.1") as c:   # a loopback Host, as the guard wants
        r = c.get("/always-busy")
    assert r.status_code == 429 and r.headers["retry-after"] == "1" and "busy" in r.json()["error"]["message"]


def test_max_tokens_null_is_the_default_and_a_wrong_route_names_the_right_ones(server):
    r = httpx.post(server["url"] + "/v1/completions", json={"prompt": "y = 1\n", "max_tokens": None}, headers=auth())
    assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] <= 16
    r = httpx.post(server["url"] + "/v1/chat/completions", json={"messages": []}, headers=auth())
    assert r.status_code == 404 and "/v1/completions" in r.json()["error"]["message"]
    assert "/v1/chat/completions" in r.json()["error"]["message"]

"""POST /infill as llama.vim and llama.vscode use it (llama.cpp's server protocol), on a real server on 127.0.0.1."""
import json

import httpx
import pytest

from tests.conftest import API_KEY as KEY
from tests.conftest import SHIPPED, start_server, stop_server

AUTH = {"Authorization": f"Bearer {KEY}"}
# what llama.vim's llama#fim sends (autoload/llama.vim), with its default n_predict and time budget
LLAMA_VIM = {"input_prefix": "import os\n\n\ndef read(path):\n", "input_suffix": "\n    return data\n",
             "input_extra": [{"text": "def write(path, data):\n    pass\n", "time": 1, "filename": "io.py"}],
             "prompt": "    ", "n_predict": 128, "n_indent": 4, "top_k": 40, "top_p": 0.99, "stream": False,
             "samplers": ["top_k", "top_p", "infill"], "cache_prompt": True, "t_max_prompt_ms": 500,
             "t_max_predict_ms": 1500,
             "response_fields": ["content", "timings/prompt_n", "timings/prompt_ms", "timings/prompt_per_token_ms",
                                 "timings/prompt_per_second", "timings/predicted_n", "timings/predicted_ms",
                                 "timings/predicted_per_token_ms", "timings/predicted_per_second", "truncated",
                                 "tokens_cached"]}


@pytest.fixture(scope="module")
def server(tiny_model_dir, tmp_path_factory):
    srv, thread, base = start_server(tiny_model_dir, tmp_path_factory.mktemp("infill") / "i.sqlite")
    yield srv.config.app, base + "/infill"
    stop_server(srv, thread)


@pytest.fixture
def url(server):
    return server[1]


def post(url, body) -> dict:
    r = httpx.post(url, json=body, headers=AUTH, timeout=60)
    assert r.status_code == 200, r.text
    return r.json()


def test_llama_vim_request_gets_exactly_the_fields_it_asked_for(url):
    got = post(url, LLAMA_VIM)
    assert set(got) == set(LLAMA_VIM["response_fields"])     # flat "timings/..." keys, as llama.cpp answers
    assert isinstance(got["content"], str) and got["truncated"] is False and got["tokens_cached"] >= 0
    assert got["timings/prompt_n"] > 0 and got["timings/predicted_ms"] >= 0
    if got["timings/predicted_n"]:
        assert got["timings/predicted_per_second"] > 0


def test_the_full_response_has_llama_cpp_fields(url):
    got = post(url, {k: v for k, v in LLAMA_VIM.items() if k != "response_fields"})
    for key in ("content", "tokens", "id_slot", "stop", "model", "tokens_predicted", "tokens_evaluated",
                "tokens_cached", "truncated", "stop_type", "stopping_word", "timings"):
        assert key in got, key
    assert got["stop"] is True and got["stop_type"] in ("eos", "limit", "word")
    assert {"prompt_n", "prompt_ms", "predicted_n", "predicted_ms", "predicted_per_second"} <= set(got["timings"])


def test_ring_buffer_warm_up_decodes_nothing(url):
    """llama.vim sends n_predict 0 with only input_extra to warm the cache: an empty answer at once."""
    got = post(url, {"input_prefix": "", "input_suffix": "", "prompt": "", "n_predict": 0,
                     "input_extra": LLAMA_VIM["input_extra"], "t_max_predict_ms": 1, "response_fields": [""]})
    assert got == {}
    full = post(url, {"input_prefix": "x = ", "n_predict": 0})
    assert full["content"] == "" and full["tokens_predicted"] == 0


def test_seed_minus_one_is_llama_cpp_default(url):
    got = post(url, {"input_prefix": "x = ", "n_predict": 4, "seed": -1, "temperature": 0.8})
    assert got["stop"] is True


def test_a_passed_deadline_returns_only_committed_text(url):
    got = post(url, {"input_prefix": "def fib(n):\n", "input_suffix": "\n", "n_predict": 64,
                     "t_max_predict_ms": 0.001})
    assert got["stop_type"] == "limit" and got["timings"]["forward_passes"] <= 2
    assert "\u2591" not in got["content"]


# cursors where the shipped model's committed lines are cut by post-processing (found by a user's probe: a stream
# used to send them as they settled): the line after the answer, a re-write of the line above, the suffix's code
STREAM_CASES = [("def is_even(n):\n    return ", "\n"),
                ("class Stack:\n    def __init__(self):\n        self.items = []\n\n    def push(self, x):\n        self.",
                 "\n"),
                ("def is_even(n):\n    return ", "\n\n\ndef is_odd(n):\n    return not is_even(n)\n"),
                ("class Point:\n    def __init__(self, x, y):\n", "")]


def sse(base: str, route: str, body: dict) -> list[dict]:
    with httpx.stream("POST", base + route, json={**body, "stream": True}, headers=AUTH, timeout=120) as r:
        assert r.status_code == 200
        return [json.loads(line[len("data: "):]) for line in r.iter_lines()
                if line.startswith("data: ") and line != "data: [DONE]"]


def test_a_stream_gets_exactly_what_the_same_request_without_stream_gets(tmp_path):
    """On the shipped model, through both routes: a diffusion model's committed lines may still be cut (stop
    strings, repeats of nearby lines, the suffix's echo, the confidence floor) until its last pass, so a stream
    must not send them before; it sends the final answer, with its statistics and whether it was withheld."""
    srv, thread, base = start_server(SHIPPED, tmp_path / "stream.sqlite")
    srv.config.app.state.engine.answers = None   # both requests decode (none is typed through the other's answer)
    try:
        for prefix, suffix in STREAM_CASES:
            body = {"prompt": prefix, "suffix": suffix, "max_tokens": 32, "stop": "\n"}
            whole = httpx.post(base + "/v1/completions", json=body, headers=AUTH, timeout=120).json()["choices"][0]
            events = sse(base, "/v1/completions", body)
            assert "".join(e["choices"][0]["text"] for e in events) == whole["text"], (prefix, suffix)
            last = events[-1]["choices"][0]
            assert last["finish_reason"] == whole["finish_reason"] and last["quicksilver"]["withheld"] is False

            body = {"input_prefix": prefix, "input_suffix": suffix, "n_predict": 64, "stop": ["\n"]}
            whole = httpx.post(base + "/infill", json=body, headers=AUTH, timeout=120).json()
            events = sse(base, "/infill", body)
            assert "".join(e["content"] for e in events) == whole["content"], (prefix, suffix)
            assert events[-1]["stop"] is True and events[-1]["withheld"] == whole["withheld"]
            assert events[-1]["stopping_word"] in ("", "\n")
            if whole["stop_type"] == "word":
                assert whole["stopping_word"] == "\n"
        # the confidence floor applies to a stream as to the same request without one
        body = {"input_prefix": STREAM_CASES[0][0], "input_suffix": "\n", "min_confidence": 1.0}
        assert sse(base, "/infill", body)[-1]["withheld"] is True and sse(base, "/infill", body)[-1]["content"] == ""
    finally:
        stop_server(srv, thread)


@pytest.mark.parametrize("body,needle", [
    ({"input_prefix": "x", "n_predict": 2000}, "n_predict"),
    ({"input_prefix": "x", "temperature": "hot"}, "temperature"),
    ({"input_prefix": "x", "seed": -2}, "seed"),
    ({"input_prefix": "x", "stream": 1}, "stream"),
    ({"input_prefix": "x", "input_extra": [{"text": 5}]}, "input_extra"),
])
def test_bad_fields_are_a_clear_400(url, body, needle):
    r = httpx.post(url, json=body, headers=AUTH, timeout=30)
    assert r.status_code == 400 and needle in r.json()["error"]["message"]



def test_input_extra_reaches_the_model_before_the_file(url):
    """llama.vim's ring-buffer chunks are not pasted into the file's prefix (where the syntax rules would read them
    as this file's code): they go before the file as other files do, and the model reads them (prompt_n)."""
    body = {"input_prefix": "def read(path):\n", "input_suffix": "\n", "prompt": "    ", "n_predict": 4,
            "response_fields": ["timings/prompt_n"]}
    n = lambda b: post(url, b)["timings/prompt_n"]
    assert n({**body, "input_extra": LLAMA_VIM["input_extra"]}) > n(body)

"""Typing through a kept answer (runtime/answers.py): the rest of a suggestion the user is typing, with no pass."""
import httpx
import pytest

from runtime.answers import KEPT_ANSWERS, KeptAnswers
from runtime.engine import Engine
from runtime.request import Request, editor_min_confidence, editor_request
from runtime.scheduler import Scheduler
from runtime.session import load
from tests.conftest import API_KEY, SHIPPED, start_server, stop_server

# a cursor the shipped model completes with confidence enough for an editor to show it
PREFIX, SUFFIX = "import sys\n\nif __name__ == '__main__':\n    ma", "\n"
SURE = {"stop_reason": "eom", "confidence": 0.9}


def line(prefix: str, **kw) -> Request:
    return Request(prefix=prefix, suffix=SUFFIX, max_new_tokens=32, stop=("\n",), **kw)


@pytest.fixture(scope="module")
def shipped():
    return load(SHIPPED, threads=1)


@pytest.fixture
def first(shipped):
    """An engine that answered PREFIX (an answer an editor shows), and that answer."""
    engine = Engine(shipped)
    c = engine.complete(line(PREFIX))
    assert len(c.text) >= 2 and c.stats["confidence"] >= editor_min_confidence(c), \
        f"the shipped model no longer answers this cursor with a sure answer: {c.text!r} {c.stats['confidence']}"
    return engine, c


def test_typing_the_start_of_a_shown_answer_gets_the_rest_of_it_without_a_pass(shipped, first):
    engine, c = first
    typed = engine.complete(line(PREFIX + c.text[0]))
    assert typed.text == c.text[1:] and typed.stats["typed_through"]
    assert typed.stats["forward_passes"] == 0 and typed.stats["tokens"] == 0 and typed.stats["steps"] == 0
    assert typed.stats["confidence"] == c.stats["confidence"] and typed.stats["stop_reason"] == c.stats["stop_reason"]
    # a backspace back to the first cursor (or a retry) gets the first answer again
    again = engine.complete(line(PREFIX))
    assert again.text == c.text and again.stats["typed_through"]
    # an engine that decodes every request decodes it
    fresh = Engine(shipped, type_through=False).complete(line(PREFIX + c.text[0]))
    assert fresh.stats["forward_passes"] > 0 and not fresh.stats["typed_through"]


@pytest.mark.parametrize("change", ["other character", "other suffix", "sampled", "other stop", "whole answer typed",
                                    "edit", "block", "another repository"])
def test_a_request_the_kept_answer_does_not_answer_is_decoded(first, change):
    engine, c = first
    other = "Z" if c.text[0] != "Z" else "Q"
    req = {"other character": line(PREFIX + other),
           "other suffix": Request(prefix=PREFIX + c.text[0], suffix="\nprint(1)\n", max_new_tokens=32, stop=("\n",)),
           "sampled": line(PREFIX + c.text[0], temperature=0.8, seed=3),
           "other stop": Request(prefix=PREFIX + c.text[0], suffix=SUFFIX, max_new_tokens=32),
           "whole answer typed": line(PREFIX + c.text),
           "edit": Request(prefix=PREFIX, suffix=SUFFIX, mode="edit", existing="in()\n"),
           "block": editor_request(PREFIX + c.text[0], SUFFIX, single_line=False),
           "another repository": line(PREFIX + c.text[0], root="/elsewhere")}[change]   # its names may differ
    out = engine.complete(req)
    assert not out.stats["typed_through"] and out.stats["forward_passes"] > 0


def test_only_answers_an_editor_would_show_and_decoded_to_their_end_are_kept():
    kept = KeptAnswers(len)   # characters for tokens: the texts here are short
    req = line("x = ")
    kept.keep(req, "foo(1)", {**SURE, "confidence": 0.1}, 0.2)           # withheld: a fresh decoding may do better
    kept.keep(req, "foo(2)", {**SURE, "stop_reason": "deadline"}, 0.2)   # cut short by the time limit
    kept.keep(req, "   ", SURE, 0.2)                                      # nothing to show
    kept.keep(line("x = ", temperature=0.5), "foo(3)", SURE, 0.2)         # a sample
    kept.keep(req, "\"中\ufffd\"", SURE, 0.2)                              # a character cut between byte tokens
    assert kept.typed_through(line("x = f")) is None
    kept.keep(req, "foo(4)", SURE, 0.2)
    assert kept.typed_through(line("x = f")) == ("oo(4)", SURE)
    assert kept.typed_through(line("x = foo(4")) == (")", SURE)
    assert kept.typed_through(line("x = foo(4)")) is None                 # typed all of it: decode the next
    assert kept.typed_through(line("y = f")) is None


def test_typing_the_first_letters_of_a_shown_block_keeps_it():
    """An editor asks for a block on a blank line and for the rest of a line once the line has text: the block
    shown stays while its first line is typed (a user's probe: it vanished at the first letter, decoded afresh
    as a line). Settings a client chose still part answers."""
    prefix, suffix = "class A:\n    def __init__(self, module, file):\n        self.module = module\n        ", "\n"
    block = editor_request(prefix, suffix, language="python")
    assert not block.single_line and "\n" not in block.stop
    kept = KeptAnswers(len)   # characters for tokens: the texts here are short
    kept.keep(block, "self.file = file\n        self.name = module", SURE, 0.2)
    typed = editor_request(prefix + "se", suffix, language="python")
    assert typed.single_line and "\n" in typed.stop
    assert kept.typed_through(typed) == ("lf.file = file\n        self.name = module", SURE)
    assert kept.typed_through(editor_request(prefix + "se", suffix, language="python", stop=(";",))) is None
    assert kept.typed_through(Request(prefix=prefix + "se", suffix=suffix, language="python")) is None  # not an editor
    # an editor's n_predict caps the rest too: a client asking for fewer tokens than the rest holds gets a decoding
    assert kept.typed_through(editor_request(prefix + "se", suffix, language="python", max_new_tokens=60)) is not None
    assert kept.typed_through(editor_request(prefix + "se", suffix, language="python", max_new_tokens=5)) is None


def test_an_answer_serves_only_requests_that_ask_for_no_more_tokens_than_it_did():
    """A small cap sizes and cuts an answer: it must not serve a request that asked for more (a user's probe got
    the 1-token answer 'pro' back at n_predict 128); one decoded under a larger cap serves a smaller one whose cap
    its rest fits."""
    kept = KeptAnswers(len)
    kept.keep(Request(prefix="x = ", suffix=SUFFIX, max_new_tokens=1, stop=("\n",)), "pro", SURE, 0.2)
    assert kept.typed_through(line("x = p")) is None                      # asks for 32
    kept.keep(line("y = "), "foo(4)", SURE, 0.2)                          # decoded under 32
    small = lambda prefix, cap: Request(prefix=prefix, suffix=SUFFIX, max_new_tokens=cap, stop=("\n",))
    assert kept.typed_through(small("y = f", 5)) == ("oo(4)", SURE)       # 5 characters: fits a cap of 5
    assert kept.typed_through(small("y = f", 4)) is None                  # does not fit 4


def test_the_answer_kept_at_the_longest_prefix_serves_and_the_oldest_leave_first():
    kept = KeptAnswers(len)   # characters for tokens: the texts here are short
    kept.keep(line("x = "), "foo(1) + bar", SURE, 0.2)
    kept.keep(line("x = foo(1) + "), "baz", SURE, 0.2)    # the user typed on; the model changed its mind
    assert kept.typed_through(line("x = foo(1) + b")) == ("az", SURE)
    assert kept.typed_through(line("x = fo")) == ("o(1) + bar", SURE)
    for i in range(KEPT_ANSWERS):
        kept.keep(line(f"y{i} = "), "1", SURE, 0.2)
    assert kept.typed_through(line("x = f")) is None and kept.typed_through(line(f"y{KEPT_ANSWERS - 1} = ")) == ("1", SURE)


def test_the_scheduler_answers_a_typed_through_request_beside_decoding_ones(shipped):
    engine = Engine(shipped)
    sched = Scheduler(engine)
    try:
        c = sched.submit(line(PREFIX)).result()
        handles = sched.submit_all([line(PREFIX + c.text[0]), line("def f(x):\n    retu"), line(PREFIX + c.text[:2])])
        typed, other, more = (h.result() for h in handles)
        assert typed.text == c.text[1:] and typed.stats["typed_through"] and more.text == c.text[2:]
        assert other.stats["forward_passes"] > 0
        h = sched.submit(line(PREFIX + c.text[0]))
        h.cancel()   # an answer that was ready before the cancel is still the answer
        assert h.result().text == c.text[1:]
    finally:
        sched.close()


def test_both_routes_answer_a_keystroke_that_types_the_suggestion_from_the_kept_answer(tmp_path):
    srv, thread, base = start_server(SHIPPED, tmp_path / "through.sqlite")
    auth = {"Authorization": f"Bearer {API_KEY}"}
    try:
        ask = lambda prefix: httpx.post(base + "/v1/completions", headers=auth, timeout=60, json={
            "prompt": prefix, "suffix": SUFFIX, "max_tokens": 32, "stop": "\n"}).json()["choices"][0]
        first = ask(PREFIX)
        typed = ask(PREFIX + first["text"][0])
        assert typed["text"] == first["text"][1:] and typed["quicksilver"]["typed_through"]
        assert typed["quicksilver"]["forward_passes"] == 0 and typed["finish_reason"] == first["finish_reason"]
        usage = httpx.post(base + "/v1/completions", headers=auth, timeout=60, json={
            "prompt": PREFIX + first["text"][0], "suffix": SUFFIX, "max_tokens": 32, "stop": "\n"}).json()["usage"]
        assert usage["completion_tokens"] > 0   # the tokens the client got, though none were generated now

        fim = lambda prompt: httpx.post(base + "/infill", headers=auth, timeout=60, json={
            "input_prefix": PREFIX.rsplit("\n", 1)[0] + "\n", "prompt": prompt, "input_suffix": SUFFIX,
            "n_predict": 128, "t_max_predict_ms": 1500}).json()
        cursor_line = PREFIX.rsplit("\n", 1)[1]
        one = fim(cursor_line)
        assert one["content"], one
        two = fim(cursor_line + one["content"][0])
        assert two["content"] == one["content"][1:] and two["tokens_predicted"] > 0   # what it returns, as usage
        assert two["timings"]["forward_passes"] == 0 and two["withheld"] is False and two["typed_through"] is True
        assert one["typed_through"] is False
        # an answer a small n_predict cut never serves a larger one (a user's probe: 'pro', stop_type limit, at 128)
        small = httpx.post(base + "/infill", headers=auth, timeout=60, json={
            "input_prefix": "# another\n" + PREFIX.rsplit("\n", 1)[0] + "\n", "prompt": cursor_line,
            "input_suffix": SUFFIX, "n_predict": 1}).json()
        assert small["tokens_predicted"] <= 1
        large = httpx.post(base + "/infill", headers=auth, timeout=60, json={
            "input_prefix": "# another\n" + PREFIX.rsplit("\n", 1)[0] + "\n", "prompt": cursor_line,
            "input_suffix": SUFFIX, "n_predict": 128}).json()
        assert large["typed_through"] is False and large["timings"]["forward_passes"] > 0
        # the metrics count them apart: they ran no denoising step
        metrics = httpx.get(base + "/metrics", headers=auth).text
        assert "quicksilver_typed_through_total 3.0" in metrics
    finally:
        stop_server(srv, thread)

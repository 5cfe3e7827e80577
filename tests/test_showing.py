"""What a user is shown: the engine decides the length (a client's max_tokens only caps it), a looping or
re-writing answer is cut, the code says which language it is, and an unsure answer is withheld with its score."""
import httpx
import pytest

from runtime.request import EDITOR_MIN_CONFIDENCE, UNCALIBRATED_MIN_CONFIDENCE, WINDOWS, Request
from runtime.showing import postprocess
from runtime.postprocess import clean_completion, cut_broken_character, cut_repeats, heal, invents_a_name
from runtime.syntax import infer_language
from tests.conftest import API_KEY as KEY
from tests.conftest import start_server, stop_server

AUTH = {"Authorization": f"Bearer {KEY}"}
BLANK_LINE = ("def total(xs):\n    s = 0\n    for x in xs:\n        ", "\n    return s\n")


@pytest.mark.parametrize("prefix,suffix,kind", [
    ("def is_even(n):\n    return ", "\n", "line"),          # text before the cursor: the rest of a line
    (*BLANK_LINE, "block"),                                 # a blank line in a block: a block
])
def test_the_window_is_the_engines_choice_and_max_tokens_only_caps_it(tiny_engine, prefix, suffix, kind):
    windows = {n: tiny_engine.denoiser(Request(prefix=prefix, suffix=suffix, max_new_tokens=n)).opts.window
               for n in (16, 64, 128, 256)}
    healed = len(tiny_engine.tok.encode(heal(prefix, suffix)[1]))   # the healed cursor line rides in the window
    assert windows == {n: min(n, WINDOWS[kind]) + healed for n in windows}
    capped = tiny_engine.denoiser(Request(prefix=prefix, suffix=suffix, max_new_tokens=4)).opts.window
    assert capped == 4 + healed
    exact = tiny_engine.denoiser(Request(prefix=prefix, suffix=suffix, max_new_tokens=256, window=100)).opts.window
    assert exact == 100 + healed                # the harness's exact (oracle) window


@pytest.mark.parametrize("text,prefix,suffix,kept", [
    ("lf.language = language\n        self.language = language\n        self.language = language",
     "    def __init__(self, language):\n        se", "\n", "lf.language = language\n"),          # a loop
    ("import typing\nimport typing\nimport typing", "import os\n", "\n", "import typing\n"),          # a loop
    ("s += x\n    return s\n", "    for x in xs:\n        ", "\n    return s\n", "s += x\n"),      # the next line
    ("s = 0\n    for x in xs:\n", "    total = 0\n    ", "\n    for x in xs:\n", "s = 0\n"),   # ran into the suffix
    ("return False\n", "    if x:\n        return False\n    if y:\n        ", "\n", ""),    # the line above, again
    ("return x\n", "def f(x):\n    ", "\n\ndef g(y):\n    y += 1\n    y *= 2\n    return x\n", "return x\n"),  # far
    ("total = 0\n", "    total = 0\n    for x in xs:\n        ", "\n", ""),                     # 2 lines up
    ("pass\n    pass\n", "    if x:\n        ", "\n", "pass\n    pass\n"),                       # trivial lines
])
def test_a_repeated_or_rewritten_line_is_cut(text, prefix, suffix, kept):
    assert cut_repeats(text, prefix, suffix) == kept


@pytest.mark.parametrize("text,reason,kept", [
    ("total = 0\n        ", "deadline", "total = 0\n"),       # the time limit cut the next line before its code
    ("total = 0\n   ", "window", "total = 0\n"),
    ("total = 0\n        ", "eom", "total = 0\n        "),   # the model ended there: the suffix's indentation
    ("total = ", "deadline", "total = "),                       # within a line: nothing to drop
])
def test_a_cut_short_answer_ends_at_its_last_line_not_at_an_indentation(text, reason, kept):
    req = Request(prefix="def f(xs):\n    ", suffix="\nreturn_value = 1\n", mode="infill")
    assert postprocess(req, text, reason) == kept
    # a suffix that starts mid-line (in its indentation): the answer's trailing spaces are the line's own
    mid = Request(prefix="def f(xs):\n    ", suffix="  return xs\n", mode="infill")
    assert postprocess(mid, text, reason) == text


FILE = "class Item:\n    def __init__(self, price, tags):\n        self.price = price\n        self.tags = tags\n"


@pytest.mark.parametrize("typed,text,invented", [
    ("        x = item.price", "rs", True),          # a finished name made into one the file does not have
    ("        x = item.tags", "ize", True),
    ("        x = item.pri", "ce", False),           # a name being typed: `pri` is no name of the file
    ("        x = self.price", "", False),             # nothing after it
    ("        x = item.price", " * 2", False),       # the completion starts after the name
    ("        x = item.tag", "s", False),            # `tags` exists
    ("        x = item.discount", "ed", False),      # `discount` is not the file's: it may be unfinished
])
def test_letters_glued_onto_a_finished_name_are_not_offered(typed, text, invented):
    prefix = FILE + "\n    def total(self, item):\n" + typed
    assert invents_a_name(text, prefix, "\n        return x\n") is invented
    assert (clean_completion(text, prefix, "\n        return x\n", single_line=True) == "") is (invented or not text)


def test_a_first_line_the_model_is_sure_of_may_equal_a_nearby_line():
    prefix, suffix = "    if x:\n        return False\n    if y:\n        ", "\n"
    assert cut_repeats("return False\n", prefix, suffix, sure=True) == "return False\n"
    assert cut_repeats("return False\nreturn False\n", prefix, suffix, sure=True) == "return False\n"  # once


@pytest.mark.parametrize("code,language", [
    ("import os\n\n\ndef main():\n    ", "python"),
    ("class A:\n    def f(self):\n        return self.x\n", "python"),
    ("function f(x) {\n  if (x) {\n    return 1;\n  }\n}\n", None),
    ("int main(void) {\n    return 0;\n}\n", None),
    ("x = 1\n", None),          # too little to tell
])
def test_the_language_is_inferred_from_the_code(code, language):
    assert infer_language(code, "") == language


@pytest.fixture(scope="module")
def url(tiny_model_dir, tmp_path_factory):
    srv, thread, base = start_server(tiny_model_dir, tmp_path_factory.mktemp("showing") / "s.sqlite")
    yield base
    stop_server(srv, thread)


def test_an_unsure_completion_is_withheld_with_its_score(url):
    body = {"prompt": BLANK_LINE[0], "suffix": BLANK_LINE[1], "max_tokens": 16}
    shown = httpx.post(url + "/v1/completions", json=body, headers=AUTH, timeout=60).json()["choices"][0]
    assert shown["quicksilver"]["withheld"] is False and 0 <= shown["quicksilver"]["confidence"] <= 1
    hidden = httpx.post(url + "/v1/completions", json={**body, "min_confidence": 1.0}, headers=AUTH,
                        timeout=60).json()["choices"][0]
    assert hidden["text"] == "" and hidden["quicksilver"]["withheld"] is True
    assert hidden["quicksilver"]["confidence"] == shown["quicksilver"]["confidence"] < 1.0


def test_infill_withholds_by_default_like_an_editor_should(url):
    body = {"input_prefix": BLANK_LINE[0], "input_suffix": BLANK_LINE[1], "n_predict": 128}
    default = httpx.post(url + "/infill", json=body, headers=AUTH, timeout=60).json()
    floor = EDITOR_MIN_CONFIDENCE if default["calibrated"] else UNCALIBRATED_MIN_CONFIDENCE   # (tiny model: none)
    assert default["withheld"] == (default["confidence"] < floor) and not default["calibrated"]
    assert default["content"] == "" or not default["withheld"]
    everything = httpx.post(url + "/infill", json={**body, "min_confidence": 0}, headers=AUTH, timeout=60).json()
    assert everything["withheld"] is False and everything["confidence"] == default["confidence"]


DOC = "def add(a, b):\n    return a + b\n\n\nprint(add(1, 2))\n"
BODY = "    return a + b\n"


@pytest.mark.parametrize("text,refused", [
    ("", "delete most"),                          # an empty rewrite would delete the function body
    ("    r\n", "delete most"),
    ("    return (a +\n", "compile"),             # would break a file that parses
    ("    return b + a\n", None),
    ("    total = a + b\n    return total\n", None),
])
def test_an_edit_that_would_do_harm_is_not_offered(text, refused):
    """runtime/verify.py's verdict, as the engine asks for it (a rewrite); what it changes, either way."""
    from runtime.showing import harm
    req = Request(prefix=DOC[:DOC.index(BODY)], suffix=DOC[DOC.index(BODY) + len(BODY):], mode="edit",
                  existing=BODY, language="python")
    verdict = harm(req, text)
    assert verdict.ok if refused is None else (not verdict.ok and refused in verdict.why)
    assert harm(Request(prefix="x = ", suffix=""), "1") is None   # a completion is not an edit


def test_a_session_never_offers_a_harmful_edit(url):
    """Whatever the tiny model writes, what is offered keeps most of the block and keeps the file parsing."""
    import ast
    import json
    from websockets.sync.client import connect
    with connect(url.replace("http://", "ws://") + "/v1/sessions", additional_headers=AUTH) as ws:
        ws.send(json.dumps({"type": "open", "document": {"text": DOC, "language": "python"}}))
        json.loads(ws.recv(timeout=30))
        start = DOC.index(BODY)
        for i, kind in enumerate(["edit", "repair", "edit"]):
            ws.send(json.dumps({"type": kind, "request_id": f"e{i}", "range": {"start": start, "end": start + len(BODY)}}))
            while (msg := json.loads(ws.recv(timeout=60)))["type"] == "frame":
                pass
            assert msg["request_id"] == f"e{i}" and msg["type"] in ("result", "error")
            if msg["type"] == "result":
                ast.parse(DOC[:start] + msg["text"] + DOC[start + len(BODY):])
                assert len(msg["text"].strip()) >= 0.5 * len(BODY.strip())
            else:   # refused, or nothing the model is sure of
                assert "not offered" in msg["message"] or msg["message"] == "the model found nothing to change"


def test_a_character_cut_between_byte_tokens_is_never_shown():
    """U+FFFD is what decoding writes for byte tokens that are not a whole character (a user's probe saw
    '"中\ufffd"' offered): the text before it is kept, unless the file itself holds one."""
    assert clean_completion('"中\ufffd"', "s = ", "\n", single_line=True) == '"中'
    assert clean_completion("\ufffd\ufffd", "s = ", "\n") == ""
    assert cut_broken_character('x = "\ufffd"', 'bad = "\ufffd"\n', "") == 'x = "\ufffd"'   # the file has one
    assert cut_broken_character("print('中文')", "", "") == "print('中文')"


@pytest.mark.parametrize("text, shown", [
    ("inventory() inventory() inventory()", ""),               # a user's probe saw it shown
    ("total = 0\nself.x self.x self.x\n", "total = 0\n"),     # the lines before the one that loops stay
    ("x = [0, 0, 0, 0]", "x = [0, 0, 0, 0]"),                 # short repeats are code
    ("return foo(a) + foo(b) + foo(c)", "return foo(a) + foo(b) + foo(c)"),
])
def test_a_line_that_says_the_same_word_three_times_is_not_shown(text, shown):
    from runtime.postprocess import clean_completion
    assert clean_completion(text, "def f(self):\n    ", "\n") == shown


def test_a_short_snippet_with_one_python_line_reads_as_python():
    from runtime.syntax import infer_language
    assert infer_language("from shop.models import Stock\n\nstock = Stock()\nstock.re", "\n") == "python"
    assert infer_language("x = 1\ny = 2\nz = ", "") is None            # nothing Python-only in it
    assert infer_language('import React from "react";\n', "") is None   # braces and semicolons: not Python
    six = "let a = 1\nlet b = 2\nlet c = 3\nlet d = 4\nlet e = 5\nif x {\n"
    assert infer_language(six, "") is None   # a longer text needs two lines that read as Python

"""The README's examples give the answers it prints: each request is sent as written to a real server with the
shipped model, and its output compared with the block after it."""
from __future__ import annotations

import contextlib
import io
import json
import re
import shlex

import httpx
import pytest

from tests.conftest import ROOT, SHIPPED, start_server, stop_server

MARKER = "<!-- readme-example -->"
README_URL = "http://127.0.0.1:8000"
FENCE = re.compile(r"```(\w*)\n(.*?)```", re.S)


def examples(text: str) -> list[tuple[str, str, str]]:
    """(language, request, expected output) for each marked example: the fenced block after the marker, then the
    fenced block after that."""
    out = []
    for part in text.split(MARKER)[1:]:
        (lang, request), (_, expected) = [m.groups() for m in FENCE.finditer(part)][:2]
        out.append((lang, request, expected))
    return out


EXAMPLES = examples((ROOT / "README.md").read_text())


def jq(value, path: str):
    """The value at a jq path such as `.choices[0].text` (the only jq the README uses)."""
    for key, index in re.findall(r"\.(\w+)|\[(\d+)\]", path):
        value = value[key] if key else value[int(index)]
    return value


def shell_words(command: str) -> list[str]:
    return shlex.split(command.replace("\\\n", " "))


def run_curl(command: str, base: str) -> str:
    """`curl -s URL -H H -d BODY | jq -r PATH` as written, sent with httpx to the test server."""
    words = shell_words(command)
    pipe = words.index("|")
    curl, filt = words[:pipe], words[pipe + 1:]
    assert curl[0] == "curl" and filt[:2] == ["jq", "-r"], command
    url = next(w for w in curl if w.startswith(README_URL)).replace(README_URL, base)
    headers = dict(curl[i + 1].split(": ", 1) for i, w in enumerate(curl) if w == "-H")
    body = curl[curl.index("-d") + 1]
    r = httpx.post(url, content=body.encode(), headers=headers, timeout=120)
    assert r.status_code == 200, r.text
    return str(jq(r.json(), filt[2]))


def run_python(code: str, base: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(code.replace(README_URL, base), {})
    return out.getvalue()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv, thread, base = start_server(SHIPPED, tmp_path_factory.mktemp("readme") / "db.sqlite", api_key=None)
    yield base
    stop_server(srv, thread)


def test_the_readme_has_examples():
    assert len(EXAMPLES) >= 2 and {lang for lang, _, _ in EXAMPLES} == {"sh", "python"}
    for lang, request_text, _ in EXAMPLES:
        if lang == "sh":   # a body that is JSON as written, sent as JSON
            words = shell_words(request_text)
            assert json.loads(words[words.index("-d") + 1]) and "Content-Type: application/json" in words


@pytest.mark.parametrize("lang,request_text,expected", EXAMPLES, ids=[f"example-{i}" for i in range(len(EXAMPLES))])
def test_a_readme_example_gives_the_answer_it_shows(server, lang, request_text, expected):
    run = run_curl if lang == "sh" else run_python
    assert run(request_text, server).rstrip("\n") == expected.rstrip("\n")


def test_the_readme_is_a_five_minute_read_and_the_project_names_no_work_session():
    import re
    import subprocess
    assert len((ROOT / "README.md").read_text().split()) <= 1500
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True).stdout.split()
    texts = {p: (ROOT / p).read_text(errors="replace") for p in tracked
             if p.endswith((".py", ".md", ".txt", ".tsv", ".toml", ".lua", ".ts")) and (ROOT / p).exists()}
    named = [p for p, text in texts.items() if re.search(r"\b[Ss]essions? \d+\b", text)]
    assert not named, named

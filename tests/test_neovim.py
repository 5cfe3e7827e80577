"""A real editor: headless Neovim (Debian's package) loads lsp/clients/neovim, starts `quicksilver lsp` on a
Python buffer through its own LSP client, requests a completion as its omnifunc does (<C-x><C-o>: an explicit
request, no context) and receives the shipped model's text — an item even where ghost text would abstain."""
import pytest
import json
import os
import subprocess
import sys

from tests.conftest import ROOT, program

SOURCE = 'import os\n\n\ndef read(path):\n    """Return the text of a file."""\n    \n\nprint(read("x"))\n'
PALINDROME = 'def is_palindrome(text: str) -> bool:\n    """Return True if text reads the same backwards."""\n    return \n'


@pytest.mark.parametrize("source, line, char, args", [
    (SOURCE, 5, 4, "--min-confidence 0"),
    (PALINDROME, 2, 11, ""),            # the editors' default floor: asked for, it still answers
])
def test_neovim_gets_a_completion_from_the_language_server(tmp_path, source, line, char, args):
    nvim = program("nvim", package="neovim")
    src = tmp_path / "example.py"
    src.write_text(source)
    out = tmp_path / "out.json"
    env = {**os.environ, "QS_OUT": str(out), "QS_ROOT": str(ROOT), "QS_PYTHON": sys.executable, "QS_FILE": str(src),
           "QS_LINE": str(line), "QS_CHAR": str(char), "QS_ARGS": args}
    proc = subprocess.run([nvim, "--headless", "-u", "NONE", "-i", "NONE", "-n", "-c",
                           f"luafile {ROOT / 'tests' / 'neovim_drive.lua'}"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert out.exists(), f"neovim wrote nothing: {proc.stdout[-1000:]} {proc.stderr[-1000:]}"
    result = json.loads(out.read_text())
    assert "error" not in result, result
    assert result["items"], f"no completion items: {result}"
    item = result["items"][0]
    assert item["detail"].startswith("quicksilver · confidence") and item["textEdit"]["newText"].strip()
    assert item["textEdit"]["range"]["start"] == {"line": line, "character": char}
    assert "tokens in" in (tmp_path / "out.json.log").read_text()  # logs go to the file, never to the protocol

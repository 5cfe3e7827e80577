"""A real editor: headless Neovim (Debian's package) loads lsp/clients/neovim, starts `quicksilver lsp` on a
Python buffer through its own LSP client, requests a completion and receives the shipped model's text."""
import json
import os
import subprocess
import sys

from tests.conftest import ROOT, program

SOURCE = 'import os\n\n\ndef read(path):\n    """Return the text of a file."""\n    \n\nprint(read("x"))\n'


def test_neovim_gets_a_completion_from_the_language_server(tmp_path):
    nvim = program("nvim", package="neovim")
    src = tmp_path / "example.py"
    src.write_text(SOURCE)
    out = tmp_path / "out.json"
    env = {**os.environ, "QS_OUT": str(out), "QS_ROOT": str(ROOT), "QS_PYTHON": sys.executable, "QS_FILE": str(src)}
    proc = subprocess.run([nvim, "--headless", "-u", "NONE", "-i", "NONE", "-n", "-c",
                           f"luafile {ROOT / 'tests' / 'neovim_drive.lua'}"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert out.exists(), f"neovim wrote nothing: {proc.stdout[-1000:]} {proc.stderr[-1000:]}"
    result = json.loads(out.read_text())
    assert "error" not in result, result
    assert result["items"], f"no completion items: {result}"
    item = result["items"][0]
    assert item["detail"] == "quicksilver" and item["textEdit"]["newText"].strip()
    assert item["textEdit"]["range"]["start"] == {"line": 5, "character": 4}
    assert "tokens in" in (tmp_path / "out.json.log").read_text()  # logs go to the file, never to the protocol

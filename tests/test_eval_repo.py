"""quicksilver eval repo's cases: each cursor sits right before a name its module imports from another module of
the same held-out package, and its last chunk (the one the server puts nearest the file) defines that name."""
import ast
import re

import pytest


def test_cross_file_cursors_and_their_chunks():
    from evals.repo import CHUNKS, cross_file_cursors
    cursors = cross_file_cursors(12, seed=0)
    if not cursors:
        pytest.skip("the held-out packages are not installed here")
    assert len(cursors) == 12
    for c in cursors:
        assert c["expected"].startswith(c["name"]) and c["module"] != c["source"]
        assert c["package"] == c["source"].split(".")[0] == c["module"].split(".")[0]
        imported = {a.name for n in ast.walk(ast.parse(open(c["file"]).read())) if isinstance(n, ast.ImportFrom)
                    for a in n.names}
        assert c["name"] in imported   # the file imports it
        *similar, defining = c["chunks"]
        assert len(c["chunks"]) == CHUNKS and re.search(
            rf"^(def|class|async def) {c['name']}\b|^{c['name']}\s*[:=]", defining["text"], re.M)
        assert all(ch["filename"].endswith(".py") and ch["text"] for ch in c["chunks"])

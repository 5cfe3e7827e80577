"""The request contract: every default a request has is defined once, in runtime/request.py, and runtime/ has no
import cycle (a newcomer changes "where a completion stops" or "the editors' floor" in one file)."""
import ast
import re
from pathlib import Path

import pytest

from tests.conftest import ROOT

DEFAULTS = ["MAX_NEW_TOKENS", "OPENAI_MAX_TOKENS", "DEFAULT_MAX_NEW_TOKENS", "DEFAULT_CONTEXT_TOKENS", "WINDOWS",
            "EDITOR_TOKENS", "EDITOR_WINDOW_MULTIPLE", "EDITOR_MIN_CONFIDENCE", "UNCALIBRATED_MIN_CONFIDENCE",
            "THRESHOLD", "EOM_BIAS", "MAX_HEALED_CHARS", "EDIT_GROWTH", "EDIT_CONTEXT_TOKENS", "EXTRA_TOKENS", "EXTRA_MIN_TOKENS"]
FRONT_ENDS = ["runtime", "server", "lsp"]


def assigned_constants(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {t.id for node in tree.body if isinstance(node, ast.Assign) for t in node.targets
            if isinstance(t, ast.Name) and t.id.isupper()}


def test_every_request_default_is_defined_once_in_the_request_module():
    import runtime.request as request
    for name in DEFAULTS:
        assert hasattr(request, name), name
    elsewhere = {p: assigned_constants(p) & set(DEFAULTS) for d in FRONT_ENDS for p in (ROOT / d).rglob("*.py")
                 if p.name != "request.py"}
    assert not any(elsewhere.values()), {str(p): n for p, n in elsewhere.items() if n}


def test_front_ends_write_no_token_cap_or_ceiling_of_their_own():
    """A literal cap (32, 16, 96) or the 1024 ceiling in a route, a session or the language server is a second
    definition of a default."""
    for d in ("server", "lsp"):
        for p in (ROOT / d).rglob("*.py"):
            src = p.read_text()
            assert not re.search(r"(le|max_new_tokens|n_predict|max_tokens)\s*=\s*(16|32|96|1024)\b", src), p
            assert not re.search(r"Field\((16|32|96)\b", src), p


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module
            and n.module.startswith("runtime.")}


def test_runtime_has_no_import_cycle():
    graph = {f"runtime.{p.stem}": imports_of(p) for p in (ROOT / "runtime").glob("*.py")}

    def reaches(a: str, b: str, seen=()) -> bool:
        return any(n == b or (n not in seen and reaches(n, b, (*seen, n))) for n in graph.get(a, ()))
    cycles = [m for m in graph if reaches(m, m)]
    assert not cycles, cycles


@pytest.mark.parametrize("module, most", [("engine", 350), ("sampler", 375)])   # a repair's infill: +20
def test_the_engine_and_the_sampler_stay_short(module, most):
    assert len((ROOT / "runtime" / f"{module}.py").read_text().splitlines()) <= most


def test_completion_results_stay_current_across_a_revision_that_changed_edits_only():
    from runtime import COMPLETIONS_SINCE, DECODING_REVISION, current
    assert COMPLETIONS_SINCE <= DECODING_REVISION
    assert current(COMPLETIONS_SINCE) and current(DECODING_REVISION)
    assert not current(COMPLETIONS_SINCE - 1) and not current(None) and not current(DECODING_REVISION + 1)

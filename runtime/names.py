"""Names that exist: at a member access (`inventory.re▮`, `os.path.▮`) or an import (`from collections import ▮`)
jedi — the analysis library behind IPython's and python-lsp-server's completions — says which names exist there,
and the sampler spells only one of them (runtime/policies.py `narrow`), as monitor-guided decoding does (Agrawal
et al., NeurIPS 2023). Where analysis cannot say — jedi knows no attribute of the object (an unknown type, a
module it cannot load), the object answers any attribute (`__getattr__`), or the analysis ran past its time
budget — nothing is constrained.

Analysis runs in a thread of its own with a time budget: jedi answers in 20–40 ms once it has loaded what the code
imports, but loading a large module the first time can take seconds; past the budget the request decodes
unconstrained while the analysis goes on, and jedi keeps what it loaded for the next request. Such a request says
so (`stats.names == "timeout"`): with typing through a kept answer, the one case where the same request can get
another answer later. `warm()` loads jedi and the builtins' stubs in the background when an engine starts.
"""
from __future__ import annotations

import re
import threading
from concurrent.futures import ThreadPoolExecutor, TimeoutError

BUDGET_S = 2.0           # how long a request waits for the analysis (jedi answers in 20–40 ms once warm; the first
                         # analysis of a file that imports a large package can take seconds on this CPU)
MAX_CODE_CHARS = 200_000   # a larger file is not analysed (jedi's parse grows with it)
KEPT = 256               # analyses remembered (the same cursor asked again, typing through a name)
MEMBER = re.compile(r"(?<![\w.])(?:[A-Za-z_]\w*\.)+(\w*)$")                      # obj.attr, pkg.mod.attr
FROM_IMPORT = re.compile(r"^\s*from\s+[\w.]+\s+import\s+(?:\(\s*)?(?:\w+(?:\s+as\s+\w+)?\s*,\s*)*(\w*)$")
ANY_ATTRIBUTE = {"__getattr__", "__getattribute__"}   # an object defining these answers names jedi cannot list

_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="names")
_lock = threading.Lock()
_kept: dict[tuple, tuple[str, ...] | None] = {}


_warming: list = []


def warm() -> None:
    """Load jedi and the builtins' stubs in the analysis thread, once per process, without waiting for it."""
    with _lock:
        if not _warming:
            _warming.append(_pool.submit(_analyse, "import os\nos.path.", 2, 8))


def site(prefix: str) -> str | None:
    """The typed start of the name at the cursor when it is a member access or an imported name, else None."""
    line = prefix[prefix.rfind("\n") + 1:]
    if "#" in line or line.count('"') % 2 or line.count("'") % 2:   # in a comment or a string, probably
        return None
    m = MEMBER.search(line) or FROM_IMPORT.match(line)
    return m.group(1) if m else None


def _analyse(code: str, line: int, column: int, path: str | None = None,
             root: str | None = None) -> tuple[str, ...] | None:
    """Every name jedi completes at (line, column) — before the typed start, so all of them; None when it knows
    none, or the object defines __getattr__ (any name may exist). With the file's `path` and the repository's
    `root`, the repository's own modules are read too (`from shop.models import Inventory`, `from .models …`)."""
    import jedi
    try:
        project = jedi.Project(root) if root else None
        completions = jedi.Script(code=code, path=path, project=project).complete(line, column)
    except Exception:   # jedi's own failure on odd code: no analysis, never an error for the request
        return None
    if any(c.name in ANY_ATTRIBUTE and not (c.full_name or "").startswith("builtins.") for c in completions):
        return None
    return tuple(dict.fromkeys(c.name for c in completions if c.type != "keyword")) or None


def existing_names(prefix: str, suffix: str, budget_s: float = BUDGET_S, path: str | None = None,
                   root: str | None = None) -> tuple[str, tuple[str, ...]] | str:
    """(typed start, the names that exist at the cursor starting with it), or why there are none to keep to:
    'not a name site', 'unknown' (analysis cannot say), 'timeout'."""
    typed = site(prefix)
    if typed is None or len(prefix) + len(suffix) > MAX_CODE_CHARS:
        return "not a name site"
    line, column = prefix.count("\n") + 1, len(prefix) - prefix.rfind("\n") - 1 - len(typed)
    key = (prefix[:len(prefix) - len(typed)] + "\x00" + suffix, line, column, path, root)   # typing on a name: the same
    with _lock:
        known = key in _kept
        names = _kept.get(key)
    if not known:
        future = _pool.submit(_analyse, prefix + suffix, line, column, path, root)
        try:
            names = future.result(timeout=budget_s)
        except TimeoutError:
            return "timeout"
        with _lock:
            if len(_kept) >= KEPT:
                _kept.clear()
            _kept[key] = names
    if names is None:
        return "unknown"
    return typed, tuple(n for n in names if n.startswith(typed))

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
MEMBER = re.compile(r"(?:(?<![\w.])(?:[A-Za-z_]\w*\.)+|[)\]]\.)(\w*)$")   # obj.attr, pkg.mod.attr, Inventory().attr
FROM_IMPORT = re.compile(r"^\s*from\s+[\w.]+\s+import\s+(?:\(\s*)?(?:\w+(?:\s+as\s+\w+)?\s*,\s*)*(\w*)$")
STRINGS = re.compile(r"""[rbfu]*("[^"\n]*"|'[^'\n]*')""", re.I)   # one-line strings, for `keyword_site`
KEYWORD_LINES = 30       # how far back a call's parenthesis is looked for
UNPACKING = ("**",)      # what may stand at a keyword argument's place besides a keyword (`*args` may too, but a
                         # bare `*` then `, key=…` is what the model wrote: a syntax error in a call)
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
    """The typed start of the name at the cursor when it is a member access, an imported name or a keyword
    argument (`keyword_site`), else None."""
    return found[1] if (found := _site(prefix)) else None


def _site(prefix: str) -> tuple[str, str] | None:
    """('member' | 'import' | 'keyword', the typed start) at a name site, else None."""
    line = prefix[prefix.rfind("\n") + 1:]
    if "#" in line or line.count('"') % 2 or line.count("'") % 2:   # in a comment or a string, probably
        return None
    if m := MEMBER.search(line) or FROM_IMPORT.match(line):
        return ("member" if m.re is MEMBER else "import"), m.group(1)
    return None if (typed := keyword_site(prefix)) is None else ("keyword", typed)


def keyword_site(prefix: str) -> str | None:
    """The typed start of a call's argument that can only be a keyword one (or `*`/`**` unpacking): one that
    follows a keyword argument (`f(x, key=1, ▮`), where Python takes no positional argument. Read on the call's
    last KEYWORD_LINES lines with strings and comments blanked; None where that does not show it."""
    text = "\n".join(re.sub(r"#.*", "", STRINGS.sub('""', ln)) for ln in prefix.rsplit("\n", KEYWORD_LINES)[-KEYWORD_LINES:])
    if not (m := re.search(r",\s*(\w*)$", text)):
        return None
    depth, at = 0, len(text)
    while at > 0 and depth >= 0:   # back to the call's open parenthesis
        at -= 1
        depth += {")": 1, "]": 1, "}": 1, "(": -1, "[": -1, "{": -1}.get(text[at], 0)
    head, args = text[:at].rstrip(), text[at + 1:]
    if depth >= 0 or not re.search(r"[\w)\]]$", head) or re.search(r"\b(?:def|class|lambda)\s+\w*$", head):
        return None   # not in a call's parentheses (a definition's, a tuple's)
    level, parts = 0, [""]
    for ch in args:   # the arguments before the cursor's, at the call's own level
        level += {"(": 1, "[": 1, "{": 1, ")": -1, "]": -1, "}": -1}.get(ch, 0)
        parts[-1:] = [parts[-1], ""] if ch == "," and level == 0 else [parts[-1] + ch]
    keyword = re.compile(r"\s*(?:\w+\s*=(?!=)|\*\*)")
    return m.group(1) if len(parts) > 1 and any(keyword.match(a) for a in parts[:-1]) else None


def in_use(prefix: str, suffix: str, names: tuple[str, ...]) -> tuple[str, ...]:
    """Of the names that exist at the cursor, those the file uses elsewhere: after a dot for a member access (the
    same attribute read or written on some object), anywhere below for an import (the imported name is used).
    The model prefers them (runtime/policies.py `narrow`), as an IDE's completion ranks what the code already uses."""
    kind, typed = _site(prefix) or ("", "")
    if kind == "keyword":
        return ()
    if kind == "import":
        seen = set(re.findall(r"\w+", suffix))
    else:
        seen = set(re.findall(r"\.(\w+)", prefix[:len(prefix) - len(typed)] + suffix))
    return tuple(n for n in names if n in seen)


def offered(prefix: str, suffix: str, typed: str, names: tuple[str, ...]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(the names the sampler may spell at the cursor, those of them it prefers), of the `names` that exist there
    starting with `typed`: a private name (`_x`, `__x__`) only where the typed start is one, the object is `self`
    or `cls`, or the file uses it — IDEs list those last; all of them where nothing else is left. Preferred: the
    names the file uses elsewhere (`in_use`). (An import line for names the file lacks is answered by analysis
    alone: `missing`, runtime/engine.py `import_line`.)"""
    used = in_use(prefix, suffix, names)
    receiver = re.search(r"(\w*)\.\w*$", prefix)
    if not typed.startswith("_") and not (receiver and receiver.group(1) in ("self", "cls")):
        names = tuple(n for n in names if not n.startswith("_") or n in used) or names
    return names, tuple(n for n in used if n in names)


def missing(prefix: str, suffix: str, names: tuple[str, ...]) -> tuple[str, ...]:
    """At an import (`from typing import ▮`), those of `names` (what the module has) the file uses while nothing
    in it binds them — pyflakes' undefined names of the file with the cursor's line left out — in isort's order
    (constants, classes, then the rest; each alphabetical). () elsewhere, or where the file does not compile."""
    if (_site(prefix) or ("",))[0] != "import":
        return ()
    from runtime.verify import analyse
    line = prefix[prefix.rfind("\n") + 1:]
    rest = suffix.split("\n", 1)[1] if "\n" in suffix else ""
    if (a := analyse(prefix[:len(prefix) - len(line)] + line[:len(line) - len(line.lstrip())] + "pass\n" + rest)) is None:
        return ()
    undefined = {n for kind, n in a.names if kind == "undefined"}
    return tuple(sorted((n for n in names if n in undefined), key=isort_order))


def isort_order(name: str) -> tuple[int, str]:
    """isort's (and ruff's) order of the names one `from … import` takes: CONSTANTS, Classes, then the rest."""
    bare = name.lstrip("_")
    return (0 if bare.isupper() and len(bare) > 1 else 1 if bare[:1].isupper() else 2), bare.lower()


def names_one(text: str, rests: tuple[str, ...]) -> bool:
    """Whether text's first name is one of `rests` (a name the window cut short, `variant` of `variants`, is not)."""
    word = re.match(r"\w*", text).group(0)
    return any(re.match(r"\w*", r).group(0) == word for r in rests)


def _analyse(code: str, line: int, column: int, path: str | None = None, root: str | None = None,
             keyword: bool = False) -> tuple[str, ...] | None:
    """Every name jedi completes at (line, column) — before the typed start, so all of them; None when it knows
    none, or the object defines __getattr__ (any name may exist). At a keyword argument, the keywords the call
    still takes (`key=`), and unpacking; None where the callee is unknown or takes any keyword (`**kwargs`).
    With the file's `path` and the repository's `root`, the repository's own modules are read too
    (`from shop.models import Inventory`, `from .models …`)."""
    import jedi
    try:
        script = jedi.Script(code=code, path=path, project=jedi.Project(root) if root else None)
        completions = script.complete(line, column)
        signatures = script.get_signatures(line, column) if keyword else []
    except Exception:   # jedi's own failure on odd code: no analysis, never an error for the request
        return None
    if keyword:
        if not signatures or any(p.kind.name == "VAR_KEYWORD" for s in signatures for p in s.params):
            return None
        keywords = tuple(dict.fromkeys(c.name for c in completions if c.type == "param" and c.name.endswith("=")))
        return keywords + UNPACKING if keywords else None
    if any(c.name in ANY_ATTRIBUTE and not (c.full_name or "").startswith("builtins.") for c in completions):
        return None
    return tuple(dict.fromkeys(c.name for c in completions if c.type != "keyword")) or None


def existing_names(prefix: str, suffix: str, budget_s: float | None = None, path: str | None = None,
                   root: str | None = None) -> tuple[str, tuple[str, ...]] | str:
    """(typed start, the names that exist at the cursor starting with it), or why there are none to keep to:
    'not a name site', 'unknown' (analysis cannot say), 'timeout'."""
    if (found := _site(prefix)) is None or len(prefix) + len(suffix) > MAX_CODE_CHARS:
        return "not a name site"
    kind, typed = found
    line, column = prefix.count("\n") + 1, len(prefix) - prefix.rfind("\n") - 1 - len(typed)
    key = (prefix[:len(prefix) - len(typed)] + "\x00" + suffix, line, column, path, root)   # typing on a name: the same
    with _lock:
        known = key in _kept
        names = _kept.get(key)
    if not known:
        future = _pool.submit(_analyse, prefix + suffix, line, column, path, root, kind == "keyword")
        try:
            names = future.result(timeout=BUDGET_S if budget_s is None else budget_s)
        except TimeoutError:
            return "timeout"
        with _lock:
            if len(_kept) >= KEPT:
                _kept.clear()
            _kept[key] = names
    if names is None:
        return "unknown"
    line = prefix[prefix.rfind("\n") + 1:]
    listed = set(re.findall(r"\w+", line.split(" import ", 1)[1])) - {"as"} if kind == "import" else set()
    return typed, tuple(n for n in names if n.startswith(typed) and n not in listed)   # not one the line imports

"""Names that exist (runtime/names.py, policies `names_left` / `narrow`): at a member access or an import, the
model spells only a name analysis says exists there; where analysis cannot say, nothing is constrained."""
import re

import numpy as np
import pytest

from runtime.names import existing_names, in_use, isort_order, keyword_site, missing, offered, site
from runtime.policies import USED_BONUS, names_left, narrow
from runtime.vocab import SpecialIds

CODE = '''import json
from collections import OrderedDict


class Inventory:
    def __init__(self):
        self.items = {}

    def remove(self, sku):
        del self.items[sku]

    def count(self, sku):
        return self.items.get(sku, 0)


class Anything:
    def __getattr__(self, name):
        return name


inventory = Inventory()
anything = Anything()


def ship(sku, count=1, *, express=False, carrier=None):
    pass


def log(message, **fields):
    pass


def restock(sku, unknown):
    '''


@pytest.mark.parametrize("typed, expected", [
    ("inventory.re", ("re", ("remove",))),
    ("inventory.co", ("co", ("count",))),
    ("json.du", ("du", ("dump", "dumps"))),
    ("from collections import Ord", ("Ord", ("OrderedDict",))),
    ("unknown.re", "unknown"),         # an untyped parameter: analysis cannot say
    ("anything.fo", "unknown"),        # __getattr__: any name may exist
    ("ship(sku, count=2, ", ("", ("carrier=", "express=", "**"))),   # only a keyword may follow one
    ("ship(sku, count=2, ex", ("ex", ("express=",))),
    ("ship(sku, count=2, express=True, carrier=None, ", "unknown"),   # every keyword given: nothing to keep to
    ("log('x', level=1, ", "unknown"),   # **fields: any keyword
    ("unknown(1, level=1, ", "unknown"),
    ("ship(sku, ", "not a name site"),   # a positional argument may stand here
    ("Inventory().re", ("re", ("remove",))),   # a call's result
    ("from json import dumps, du", ("du", ("dump",))),   # not a name the line already imports
    ("x = 1", "not a name site"),
    ("print('inventory.re", "not a name site"),   # in a string
    ("# see inventory.re", "not a name site"),
])
def test_what_analysis_says_exists(typed, expected):
    assert existing_names(CODE + typed, "\n", budget_s=30) == expected


def test_a_cursor_typing_through_a_name_reuses_the_analysis_and_a_slow_one_times_out():
    assert site("x = inventory.rem") == "rem" and site("from a.b import (c, d") == "d"
    assert {"items", "remove", "count"} <= set(existing_names(CODE + "y = inventory.", "\n", budget_s=30)[1])
    assert existing_names(CODE + "y = inventory.rem", "\n", budget_s=0) == ("rem", ("remove",))   # kept: no wait
    assert existing_names(CODE + "import os\nz = os.path.", "\n", budget_s=0) == "timeout"


@pytest.mark.parametrize("prefix, typed", [
    ("f(x, key=1, ", ""), ("f(x, key=1, ot", "ot"), ("f(**options, ", ""),
    ('f(key="a, b",\n  other=[1, 2],  # a, b\n  ', ""),   # strings, lists and comments on the call's lines
    ("f(x, ", None), ("def f(a=1, ", None), ("x = (a, b=1, ", None), ("f(g(a=1), ", None),
    ("f(a == 1, ", None), ('print("a=1, ", ', None), ("d = {a: 1, ", None),
])
def test_a_keyword_site_is_an_argument_after_a_keyword_one(prefix, typed):
    assert keyword_site(prefix) == typed


def test_names_the_file_uses_elsewhere_are_the_ones_preferred():
    names = ("count", "items", "remove")
    assert in_use("x = inventory.", "\ny = inventory.remove(1)\nz = other.items\n", names) == ("items", "remove")
    assert in_use("from shop import ", "\nInventory()\ncount = 1\n", ("Inventory", "Order", "count")) == \
        ("Inventory", "count")
    assert in_use("ship(sku, count=2, ", ")\n", ("express=", "*")) == ()


TYPED = """

if TYPE_CHECKING:
    from collections.abc import Iterator

T = TypeVar("T")


def first(items: list[T]) -> T | None:
    return cast(T, items[0]) if items else None


def keys(d: dict[str, Any]) -> Iterator[str]:
    yield from d
"""
TYPING = ("Any", "Optional", "TYPE_CHECKING", "TypeVar", "cast", "overload")


def test_an_import_line_is_offered_the_names_the_file_uses_and_lacks_in_isorts_order():
    assert missing("from typing import ", TYPED, TYPING) == ("TYPE_CHECKING", "Any", "TypeVar", "cast")
    # the names the line imports already are not asked again (existing_names leaves them out)
    assert missing("from typing import TYPE_CHECKING, ", TYPED, ("Any", "TypeVar", "cast")) == ("Any", "TypeVar", "cast")
    # in an indented block too; a file that does not compile, or a member access, has none
    assert missing("if True:\n    from typing import ", "\nx: Any = 1\n", TYPING) == ("Any",)
    assert missing("from typing import ", "\nx: Any = (\n", TYPING) == ()
    assert missing("import typing\ntyping.", "\nx: Any = 1\n", TYPING) == ()
    assert sorted(["cast", "Any", "TYPE_CHECKING", "_private", "T"], key=isort_order) == \
        ["TYPE_CHECKING", "Any", "T", "cast", "_private"]


def test_the_engine_completes_an_import_line_with_what_the_file_lacks():
    from runtime.engine import Engine
    from runtime.request import Request
    from runtime.session import load
    from tests.conftest import SHIPPED
    engine = Engine(load(SHIPPED, threads=1))
    done = engine.complete(Request(prefix="from typing import ", suffix=TYPED, language="python"))
    assert done.text == "TYPE_CHECKING, Any, TypeVar, cast" and done.stats["answered_by"] == "analysis"
    assert done.stats["forward_passes"] == 0 and done.stats["confidence"] == 1.0
    typed = engine.complete(Request(prefix="from typing import T", suffix=TYPED, language="python"))
    assert typed.text == "YPE_CHECKING, TypeVar"   # the typed start narrows them
    short = engine.complete(Request(prefix="from typing import ", suffix=TYPED, language="python", max_new_tokens=5))
    assert short.text in ("TYPE_CHECKING", "TYPE_CHECKING, Any")   # whole names only, within max_tokens
    more = engine.complete(Request(prefix="from typing import TYPE_CHECKING, ", suffix=TYPED, language="python"))
    assert more.text == "Any, TypeVar, cast"   # never one the line imports already
    assert done.stats["names"] == str(len(existing_names("from typing import ", TYPED, budget_s=30)[1]))


def test_private_names_are_offered_where_asked_for():
    names = ("__class__", "_cache", "path", "sep")
    assert offered("import os\nos.", "\n", "", names) == (("path", "sep"), ())
    assert offered("import os\nos._", "\n", "_", ("__class__", "_cache")) == (("__class__", "_cache"), ())
    assert offered("import os\nos.", "\nos._cache = 1\n", "", names) == (("_cache", "path", "sep"), ("_cache",))
    assert offered("    self.", "\n", "", names)[0] == names   # an object's own
    assert offered("import os\nos.", "\n", "", ("__class__",)) == (("__class__",), ())   # nothing else left


SPECIAL = SpecialIds(mask=0, eom=1, ends=(1,), banned=(0,),
                     texts=["", "", "re", "move", "mo", "ve", "set", "(", "moved", " x", "count", "rem", "o"])
TOKEN = {t: i for i, t in enumerate(SPECIAL.texts) if t}


def allowed(rests, skip=0, healed_to=None, used=()):
    row = np.zeros(len(SPECIAL.texts))
    row[0] = -np.inf
    if healed_to is not None:   # healing left only these
        row[[i for t, i in TOKEN.items() if t not in healed_to]] = -np.inf
        row[1] = -np.inf
    narrow(row, rests, SPECIAL, skip, used)
    return {SPECIAL.texts[i] or "<end>" for i in np.flatnonzero(np.isfinite(row))}


def test_a_name_the_file_uses_gains_over_one_it_does_not():
    row = np.zeros(len(SPECIAL.texts))
    row[TOKEN["co"] if "co" in TOKEN else TOKEN["count"]] = 1.0   # the model prefers "count" ...
    narrow(row, ("move", "count"), SPECIAL, 0, ("move",))    # ... the file uses "remove"
    assert row[TOKEN["mo"]] == row[TOKEN["move"]] == USED_BONUS and row[TOKEN["count"]] == 1.0
    assert not np.isfinite(row[TOKEN["set"]])


def test_narrow_lets_a_slot_only_go_on_spelling_a_name_or_end_a_complete_one():
    assert names_left("", ("move", "unt")) == ("move", "unt") and names_left("mo", ("move",)) == ("ve",)
    assert names_left("mo(", ("move",)) is None and names_left("x", ("move",)) is None
    # a keyword goes on to its `=`, unpacking to its second `*`; past them, nothing is constrained
    assert names_left("key", ("key=", "**")) == ("=",) and names_left("*", ("key=", "**")) == ("*",)
    assert names_left("key=", ("key=",)) is None and names_left("**", ("**",)) is None
    assert allowed(("move",)) == {"mo", "move", "o"} - {"o"}   # never "moved" (a name that does not exist)
    assert allowed(("ve",)) == {"ve"}
    assert allowed(("",)) == {"(", " x", "<end>"}   # complete: anything that starts no name may follow
    # healing "re" (the typed start) while spelling "remove": a token past the typed text must go on with "move"
    assert allowed(("move",), skip=2, healed_to={"re", "rem", "set"}) == {"re", "rem"}


def test_the_engine_spells_only_names_that_exist(tiny_engine):
    from runtime.engine import Engine
    from runtime.request import editor_request
    for typed in ("x = inventory.", "if inventory.co", "from collections import ", "ship(sku, count=2, "):
        found = existing_names(CODE + typed, "\n", budget_s=30)   # (kept: the engine's own budget never runs out)
        c = tiny_engine.complete(editor_request(CODE + typed, "\n", "python", True))
        assert c.stats["names"] == str(len(found[1])) and 0 < c.stats["names_ms"] <= c.stats["tokenize_ms"]
        if c.text.strip():
            name = found[0] + re.match(r"\w*", c.text).group(0)
            assert name in {re.match(r"\w*", n).group(0) for n in found[1]}, (typed, c.text)
            assert not typed.endswith(", ") or c.text.startswith(("**", name + "=")), c.text   # a keyword, then =
    assert Engine.names


def test_a_class_from_another_file_of_the_repository_is_known_with_its_root_and_path(tmp_path):
    (tmp_path / "shop").mkdir()
    (tmp_path / "shop" / "__init__.py").write_text("")
    (tmp_path / "shop" / "models.py").write_text(
        "class Stock:\n    def remove(self, sku):\n        pass\n\n    def restock(self, sku):\n        pass\n")
    absolute = "from shop.models import Stock\n\nstock = Stock()\nstock.re"
    assert existing_names(absolute, "\n", budget_s=30, root=str(tmp_path)) == ("re", ("remove", "restock"))
    relative = "from .models import Stock\n\nstock = Stock()\nstock.re"
    path = str(tmp_path / "shop" / "app.py")
    assert existing_names(relative, "\n", budget_s=30, path=path, root=str(tmp_path)) == ("re", ("remove", "restock"))
    assert existing_names(relative, "\n", budget_s=30) == "unknown"   # without them: nothing to keep to


def test_a_workspace_gives_its_requests_their_root(tmp_path):
    from runtime.request import Request
    from runtime.workspace import Workspace
    (tmp_path / "a.py").write_text("def helper():\n    return 1\n")
    ws = Workspace(tmp_path)
    try:
        ws.refresh()
        assert ws.ground(Request(prefix="x = helper")).root == str(tmp_path.resolve())
        assert ws.ground(Request(prefix="x = 1", root="/elsewhere")).root == "/elsewhere"
    finally:
        ws.close()


def test_a_name_the_window_cuts_short_is_never_the_answer(tiny_engine):
    """With room for one token, a name that takes more is cut: the answer is then nothing, never its start."""
    from runtime.request import Request
    seen = set()
    for typed in ("x = inventory.", "y = inventory.r", "z = json.", "w = json.du", "from collections import O"):
        found = existing_names(CODE + typed, "\n", budget_s=30)   # (kept: the engine's own budget never runs out)
        for seed in range(4):
            c = tiny_engine.complete(Request(prefix=CODE + typed, suffix="\n", max_new_tokens=1, language="python",
                                             temperature=1.0, seed=seed))
            first = found[0] + re.match(r"\w*", c.text).group(0)
            assert not c.text or first in found[1], (typed, c.text)
            seen.add("whole" if c.text else "cut" if c.raw.strip() else "nothing")
    # the model spelled something each time it could: a whole name in one token, or the start of one (withheld);
    # which of the two depends on how the tiny model trained
    assert seen & {"whole", "cut"}, seen

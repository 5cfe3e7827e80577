"""runtime/fixes.py: a misspelled name or attribute that analysis can fix is fixed, the one defined name it most
resembles; nothing is proposed where analysis is not sure; the engine offers the fix as a repair (shipped model,
no pass) and what it offers passes runtime/verify.py."""
import pytest

from runtime.fixes import name_fix

GREET = "def greet(name):\n    message = 'Hello, ' + name\n    return mesage\n"
CART = ("class Cart:\n    def __init__(self):\n        self.items = []\n\n    def add(self, item):\n"
        "        self.items.append(item)\n\n    def count(self):\n        return len(self.itmes)\n")


@pytest.mark.parametrize("source, block, fixed", [
    (GREET, "    return mesage\n", "    return message\n"),                                  # a misspelled local
    (CART, "        return len(self.itmes)\n", "        return len(self.items)\n"),            # an attribute
    ("def f(values):\n    total = 0\n    for v in valeus:\n        total += v\n    return total\n",
     "    for v in valeus:\n", "    for v in values:\n"),                                     # a parameter
    ("def f(x):\n    return undefined_thing(x)\n", "    return undefined_thing(x)\n", None),  # nothing alike
    ("def f(ab, ac):\n    return ad\n", "    return ad\n", None),                               # too short
    ("def f(data, date):\n    return dat\n", "    return dat\n", None),                      # two alike: unsure
    ("def f(x):\n    return 'mesage'\n", "    return 'mesage'\n", None),                      # strings untouched
    ("def f(value):\n    x = (valeu\n", "    x = (valeu\n", None),                        # does not parse: no fix
    ("def f(s):\n    s = s.rstrip()\n    return s.strip()\n", "    return s.strip()\n", None),   # a str method
    ("class A:\n    def counter(self):\n        return countr(1)\n", "        return countr(1)\n", None),   # a method
    ("import m\nclass A:\n    def lists(self):\n        return m.list_(1)\n", "        return m.list_(1)\n", None),
])
def test_a_name_analysis_can_fix_is_fixed_and_nothing_else(source, block, fixed):
    at = source.index(block)
    assert name_fix(source[:at], block, source[at + len(block):], "python") == fixed
    assert name_fix(source[:at], block, source[at + len(block):], None) is None   # no analysis without a language


def test_the_engine_offers_the_fix_as_a_repair_without_a_pass():
    from runtime.engine import Engine
    from runtime.request import Request
    from runtime.session import load
    from tests.conftest import SHIPPED
    engine = Engine(load(SHIPPED, threads=1))
    block = "    return mesage\n"
    at = GREET.index(block)
    c = engine.complete(Request(prefix=GREET[:at], suffix="", mode="edit", existing=block, edit="repair",
                                language="python"))
    assert c.text == "    return message\n" and c.stats["fixed_by"] == "analysis" and c.stats["forward_passes"] == 0
    assert c.stats["change"] == "mesage → message" and not c.stats.get("refused")


def test_another_objects_misspelled_attribute_is_fixed_where_analysis_knows_its_type(monkeypatch):
    monkeypatch.setattr("runtime.names.BUDGET_S", 60.0)   # a cold jedi on a busy machine: the answer, not the budget
    prefix = "import os\n\n\nclass Stock:\n    def remove(self, sku):\n        pass\n\n\ndef f(stock: Stock, p):\n"
    fixed = name_fix(prefix, "    stock.remve(p)\n    return os.path.exsts(p)\n", "", "python")
    assert fixed == "    stock.remove(p)\n    return os.path.exists(p)\n"
    # an object analysis cannot type, or an attribute it has: left alone
    assert name_fix("def f(thing, p):\n", "    return thing.remve(p)\n", "", "python") is None
    assert name_fix(prefix, "    return os.path.join(p)\n", "", "python") is None


def test_a_misspelled_dataclass_field_read_through_self_is_fixed():
    prefix = ("from dataclasses import dataclass\n\n\n@dataclass\nclass Entry:\n    comment: str = ''\n"
              "    size: int = 0\n\n    def describe(self):\n")
    assert name_fix(prefix, "        return self.commeent\n", "", "python") == "        return self.comment\n"


def test_a_model_repair_refills_code_only():
    from runtime.fixes import code_tokens
    from runtime.session import load
    from tests.conftest import SHIPPED
    tok = load(SHIPPED, threads=1).tokenizer
    block = '    def greet(self, name):  # say it\n        return "Hello, " + name.title()\n'
    ids = tok.encode(block)
    may = code_tokens(tok, block, "python")
    assert len(may) == len(ids)
    code = "".join(tok.decode([i]) for i, m in zip(ids, may) if m).split()
    assert code == ["def(self,", "name):", "return", "+", "name.title()"]   # no string, comment, indent, def name
    assert code_tokens(tok, block, None) is None and code_tokens(tok, "    x = (\n", "python") is None


def _dataclass(name: str) -> str:
    fields = ("name", "value", "comment")
    lines = "".join(f'        if self.{f} is not None:\n            data["{f}"] = self.{f}\n' for f in fields[1:])
    return (f"@dataclass\nclass {name}:\n" + "".join(f"    {f}: str | None = None\n" for f in fields) +
            f'\n    def asdict(self) -> dict[str, str]:\n        data = {{"name": self.name}}\n{lines}'
            "        return data\n\n\n")


def test_a_model_repair_is_an_infill_that_may_insert_and_is_offered_only_when_sure(monkeypatch):
    """A method whose siblings return `data` ends with a bare `data`: analysis says where (a pointless statement
    ends it), the model fills one slot there as an infill (`return`), in one pass; offered only at runtime/repair.py ACCEPT."""
    import runtime.repair
    from runtime.engine import Engine
    from runtime.request import Request
    from runtime.session import load
    from tests.conftest import SHIPPED
    source = "from dataclasses import dataclass\n\n\n" + "".join(map(_dataclass, ("Cookie", "Header", "Query")))
    source = source.rstrip("\n") + "\n"
    at = source.rindex("    def asdict")
    block = source[at:].replace("return data", "data")
    engine = Engine(load(SHIPPED, threads=1))
    ask = Request(prefix=source[:at], suffix="", mode="edit", existing=block, edit="repair", language="python")
    monkeypatch.setattr(runtime.repair, "ACCEPT", 0.0)
    c = engine.complete(ask)
    assert c.text == source[at:] and c.stats["change"] == "data → return data" and "fixed_by" not in c.stats
    assert c.stats["forward_passes"] == 1
    sure = c.stats["confidence"]
    monkeypatch.setattr(runtime.repair, "ACCEPT", sure + 1e-3)   # just short of sure: given back unchanged
    c = engine.complete(ask)
    assert c.text == "" and c.stats["refused"] == "the model found nothing to change"


@pytest.mark.parametrize("block, where", [
    ("def f(x):\n    y = x + 1\n    y\n", "y\n"),                                   # a name ends the function
    ("def f(x):\n    if x:\n        x.value\n    return 0\n", "x.value"),           # or a branch in it
    ("def f(a, b):\n    a is b or a == b\n", "a is b"),                               # a test
    ('def f(x):\n    """doc"""\n', None), ("def f(x):\n    ...\n", None),          # a docstring, an ellipsis
    ("def f(x):\n    print(x)\n", None), ("async def f(x):\n    await x\n", None),  # calls and awaits act
    ("def f(x) -> int:\n    int(x)\n", "int(x)"),                                 # unless it should return
    ("def f(x):\n    if x:\n        return 1\n    g(x)\n", "g(x)"),                 # a value, as elsewhere
    ("def f(x) -> None:\n    g(x)\n", None), ("def f(x) -> int:\n    yield 1\n    g(x)\n", None),
    ("def f(x):\n    return x if x else (yield)\n", None),
    ("def f(x):\n    y = x if x else 0\n    y if y else x\n", "y if y"),                 # a conditional
    ("x = 1\nx\n", None),                                                              # not in a function
    ("def f(x):\n    x\n    return x\n", None),                                      # not the last statement
    ("def f(x):\n    x +\n", None),                                                   # does not compile
])
def test_analysis_says_where_a_return_seems_missing(block, where):
    from runtime.fixes import pointless_end
    at = pointless_end("", block, "", "python")
    assert (None if at is None else block[at:at + len(where)]) == where


def test_a_repair_of_code_that_is_not_python_is_refused_with_why():
    """The model learnt Python, and only Python's edits can be checked: a repair of JavaScript once deleted `let`
    from a correct function (`let sum = 0;` → `sum = 0;`, at 0.97)."""
    from runtime.engine import Engine
    from runtime.request import Request
    from runtime.session import load
    from tests.conftest import SHIPPED
    engine = Engine(load(SHIPPED, threads=1))
    js = "function total(xs) {\n  let sum = 0;\n  for (const x of xs) sum += x;\n  return sum;\n}\n"
    for language in ("javascript", "rust"):
        with pytest.raises(ValueError, match=f"repair reads Python only, not {language}"):
            engine.complete(Request(prefix="", suffix="", mode="edit", existing=js, edit="repair", language=language))

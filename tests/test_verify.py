"""runtime/verify.py: an edit that breaks parsing, adds an undefined name, renames a used name, changes a signature,
comments out or deletes code, or is too big for a repair is never offered; real fixes are, with a summary that
reads right; random token edits never pass with a file that no longer compiles."""
import ast
import io
import tokenize

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runtime.verify import REPAIR_MAX_TOKENS, SUMMARY_CHARS, Verdict, check_edit, describe

PREFIX = '''"""Shopping cart helpers."""
import math


class Cart:
    def __init__(self, items):
        self.items = list(items)
        self.message = ""

'''
BLOCK = '''    def total(self, scale, rate=0.1):
        if not self.items:
            return 0
        result = 0
        for price in self.items:
            result += price * scale
        self.message = f"{len(self.items)} items"
        return math.ceil(result * (1 + rate))
'''
SUFFIX = '''
    def last(self):
        return self.items[len(self.items) - 1]


def main():
    cart = Cart([1, 2, 3])
    print(cart.total(2), cart.last(), cart.message)
'''


def verdict(new: str, kind: str = "repair", old: str = BLOCK, language: str | None = "python") -> Verdict:
    return check_edit(PREFIX, old, new, SUFFIX, language, kind)


def edit(*pairs: tuple[str, str], block: str = BLOCK) -> str:
    for a, b in pairs:
        assert block.count(a) == 1, a
        block = block.replace(a, b)
    return block


# a planted bug and the block with it: the fix (the original back) is offered
BUGS = {
    "misspelled local": ("return math.ceil(result *", "return math.ceil(reslt *"),
    "wrong variable": ("result += price * scale", "result += price * rate"),
    "flipped operator": ("result += price * scale", "result += price + scale"),
    "missing return": ("return 0\n", "0\n"),
    "misspelled attribute": ("self.message = f", "self.mesage = f"),
}


@pytest.mark.parametrize("kind", sorted(BUGS))
def test_a_fix_of_a_planted_bug_is_offered(kind):
    buggy = edit(BUGS[kind])
    v = verdict(BLOCK, old=buggy)
    assert v.ok and v.why is None, v


def test_an_off_by_one_fix_is_offered_and_says_so():
    old = "    def last(self):\n        return self.items[len(self.items)]\n"
    new = "    def last(self):\n        return self.items[len(self.items) - 1]\n"
    v = check_edit(PREFIX + BLOCK, old, new, "\n", "python")
    assert v.ok
    assert v.summary == "return self.items[len(self.items)] → return self.items[len(self.items) - 1]"


@pytest.mark.parametrize("new, why", [
    # breaks the file
    (edit(("        if not self.items:\n", "    if not self.items:\n")), "break a file"),
    (edit(("return 0", "return 0 +")), "break a file"),
    (edit(("(self, scale, rate=0.1)", "(self, scale, scale=0.1)")), "break a file"),   # compiles no more
    # an undefined name
    (edit(("return math.ceil(result *", "return math.ceil(reslt *")), "`reslt`, which is not defined"),
    (edit(("price * scale", "price * scaled")), "`scaled`, which is not defined"),
    # renames a name used elsewhere, or the function and its signature
    (edit(("def total(", "def totl(")), "renames or removes the function `total`"),
    (edit(("def total(", "async def total(")), "signature of `total`"),
    (edit(("rate=0.1)", "rate)")), "signature of `total`"),
    (edit(("self.message = f", "self.mesage = f")), "`message`, which the rest of the file uses"),
    # drops a value a statement computed: the lost `return`
    (edit(("return math.ceil(", "math.ceil(")), "drops a `return`"),
    # the guard deleted or commented out
    (edit(("            return 0\n", "            pass\n")), "deletes a statement"),
    (edit(("        if not self.items:\n            return 0\n", "")), "deletes a statement"),
    (edit(("        if not self.items:\n            return 0\n",
           "        # if not self.items:\n        #     return 0\n")), "comments out code (if not self.items:)"),
    (edit(("        if not self.items:\n            return 0\n", "        if not self.items: pass\n")),
     "deletes a statement"),
    # too much for a repair
    (edit(("result += price * scale", "result = result + price * scale * 2")),
     f"a repair changes at most {REPAIR_MAX_TOKENS}"),
    # nothing to offer
    (BLOCK, "nothing to change"),
    (edit(("result = 0\n", "result = 0  # start\n")), "only whitespace or comments"),
])
def test_a_harmful_repair_is_not_offered(new, why):
    v = verdict(new)
    assert not v.ok and why in v.why, v
    assert "\n" not in v.why


def test_a_misspelled_attribute_the_file_never_uses_is_not_offered():
    old = "    def last(self):\n        return self.items.copy()\n"
    v = check_edit(PREFIX + BLOCK, old, old.replace(".items.", ".itmes."), "\n\nx = Cart([]).items\n", "python")
    assert not v.ok and "`.itmes`" in v.why


def test_a_statement_deleted_by_a_repair_is_not_offered():
    old = "def f(items):\n    items.sort()\n    return items\n"
    v = check_edit("", old, "def f(items):\n    return items\n", "", "python")
    assert not v.ok and "deletes a statement" in v.why


def test_a_repair_of_a_string_s_text_is_not_offered_but_one_of_an_f_string_s_names_is():
    old = 'def kind(node):\n    return _except("String")\n'
    v = check_edit("def _except(x):\n    return x\n\n\n", old, old.replace("String", "Float"), "", "python")
    assert not v.ok and "text of a string" in v.why
    old = 'def label(item):\n    return f"{item.nmae}: {item.price}"\n'
    assert check_edit("", old, old.replace("nmae", "name"), "", "python").ok


def test_a_value_computed_and_dropped_is_not_offered():
    old = "def f(items):\n    return items[0] + 1\n"
    v = check_edit("", old, "def f(items):\n    items[0] + 1\n", "", "python", "rewrite")
    assert not v.ok and "computes a value and drops it" in v.why


def test_a_rewrite_may_change_more_but_never_breaks_or_renames():
    bigger = edit(("        result = 0\n        for price in self.items:\n            result += price * scale\n",
                   "        result = sum(price * scale for price in self.items)\n"))
    assert verdict(bigger, "rewrite").ok
    assert not verdict(bigger, "repair").ok
    assert "signature" in verdict(edit(("def total(", "async def total(")), "rewrite").why
    assert "delete most" in verdict("    def total(self, scale, rate=0.1):\n        return 0\n", "rewrite").why


def test_a_file_that_did_not_compile_is_judged_by_the_block():
    broken_prefix = "def oops(:\n\n"
    old = "def f(items):\n    return len(items)\n"
    assert check_edit(broken_prefix, old, old.replace("len(items)", "len(items) - 1"), "", "python").ok
    v = check_edit(broken_prefix, old, old.replace("len(items)", "len(items"), "", "python")
    assert not v.ok and "break a block" in v.why
    v = check_edit(broken_prefix, old, old.replace("len(items)", "len(itms)"), "", "python")
    assert not v.ok and "`itms`" in v.why


@pytest.mark.parametrize("language", [None, "markdown", "rust"])
def test_other_languages_get_the_size_rules_only(language):
    old = "fn area(w: u32, h: u32) -> u32 {\n    w * h\n}\n"
    assert check_edit("", old, old.replace("w * h", "w + h"), "", language).ok
    assert check_edit("", old, old.replace("w * h", "w + h +"), "", language).ok     # no parser: not judged
    assert "at most" in check_edit("", old, old.replace("w * h", "(w + 1) * (h + 1) / 2"), "", language).why
    assert "delete most" in check_edit("", old, "fn a() {}\n", "", language, "rewrite").why
    assert "nothing to change" in check_edit("", old, old + "\n", "", language).why


def test_an_unknown_kind_fails_loudly():
    with pytest.raises(ValueError, match="kind must be one of"):
        verdict(BLOCK, "fix")


@pytest.mark.parametrize("old, new, summary", [
    ("print(mesage)\n", "print(message)\n", "mesage → message"),
    ("a = mesage + mesage\n", "a = message + message\n", "mesage → message (2×)"),
    ("    return 2 * (width + height)\n", "    return 2 * (width * height)\n",
     "return 2 * (width + height) → return 2 * (width * height)"),
    ("    total / count\n", "    return total / count\n", "total / count → return total / count"),
    ("if not items: return items\nitems.sort()\n", "items.sort()\n", "- if not items: return items"),
    ("x = 1\n", "x = 1\ny = 2\n", "+ y = 2"),
    ("a = 1\nb = 2\n", "a = 3\nc = 4\nd = 5\n", "+ 3 lines, − 2 lines"),
    ("x = 1\n", "x  =  1\n", "whitespace only"),
    ("x = 1\n", "x = 1\n", "no change"),
    ("if a:\n    b()\nc()\n", "if a:\n    b()\n    c()\n", "indentation of c()"),
])
def test_summaries_read_right(old, new, summary):
    assert describe(old, new) == summary


def test_a_long_line_is_summarised_around_its_change():
    old = "    value = compute_the_total(first_argument, second_argument, third_argument) + offset_value\n"
    s = describe(old, old.replace(") + offset", ") - offset"))
    assert len(s) <= SUMMARY_CHARS and "+ offset_value" in s and "- offset_value" in s and "→" in s


def test_every_verdict_carries_a_short_summary():
    v = verdict(edit(("price * scale", "price + scale")))
    assert v.ok and len(v.summary) <= SUMMARY_CHARS and "→" in v.summary


# --- random token edits never pass with a file that no longer compiles ----------------------------------
def compiles(text: str) -> bool:
    try:
        compile(text, "<t>", "exec", dont_inherit=True)
        return True
    except (SyntaxError, ValueError):
        return False


SPANS = [(t.start, t.end) for t in tokenize.generate_tokens(io.StringIO(BLOCK).readline)
         if t.type not in (tokenize.NEWLINE, tokenize.NL, tokenize.INDENT, tokenize.DEDENT, tokenize.ENDMARKER)]
LINES = BLOCK.split("\n")
PIECES = ["", " ", "x", "self", "(", ")", ":", "return", "1", "+", "-", "*", "\n", "    ", "reslt", "not", ",",
          "async ", "def", "#", "'", '"', "[", "]", "=", "==", "lambda", "result", "."]


def offset(pos: tuple[int, int]) -> int:
    return sum(len(l) + 1 for l in LINES[:pos[0] - 1]) + pos[1]


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.lists(st.tuples(st.integers(0, len(SPANS) - 1), st.sampled_from(PIECES)), min_size=1, max_size=3),
       st.sampled_from(["repair", "rewrite"]))
def test_random_token_edits_never_pass_with_a_file_that_no_longer_compiles(changes, kind):
    new = BLOCK
    for i, piece in sorted(set(changes), reverse=True):   # from the end, so earlier offsets hold
        s, e = offset(SPANS[i][0]), offset(SPANS[i][1])
        new = new[:s] + piece + new[e:]
    v = check_edit(PREFIX, BLOCK, new, SUFFIX, "python", kind)
    if v.ok:
        assert compiles(PREFIX + new + SUFFIX)
        assert ast.dump(ast.parse(PREFIX + new + SUFFIX)) != ast.dump(ast.parse(PREFIX + BLOCK + SUFFIX)) or \
            kind == "rewrite"

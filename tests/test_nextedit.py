"""Next edits (runtime/nextedit.py): a name renamed at its binding is renamed at its other uses in the same scope,
never elsewhere; a use renamed alone, any other edit, or a result that would break the file offers nothing."""
import pytest

from runtime.nextedit import apply, from_history, propagation, renamed

BEFORE = '''import os

count = 10


def total(items, scale):
    count = 0
    for it in items:
        count += it * scale if "é" else scale   # columns are characters, not UTF-8 bytes
    def inner():
        return count
    return count


def other():
    return count + 1
'''


def test_one_renamed_token_is_found_and_anything_else_is_not():
    assert renamed(BEFORE, BEFORE.replace("    count = 0", "    acc = 0")) == ("count", "acc", 7)
    assert renamed(BEFORE, BEFORE.replace("    count = 0", "    count = 1")) is None   # a number, not a name
    assert renamed(BEFORE, BEFORE.replace("    count = 0", "    acc = 0").replace("scale):", "k):")) is None
    assert renamed(BEFORE, BEFORE.replace("import os", "import sys")) == ("os", "sys", 1)
    assert renamed(BEFORE, BEFORE.replace("    count = 0", "    for = 0")) is None   # a keyword
    assert renamed(BEFORE, BEFORE + "x = (") is None   # does not tokenize


@pytest.mark.parametrize("old, new, expected_uses", [
    ("    count = 0\n", "    acc = 0\n", [(9, 8), (11, 15), (12, 11)]),        # a local: the function and inner()
    ("def total(items, scale):", "def total(items, k):", [(9, 22), (9, 40)]),  # a parameter, after an é
    ("count = 10\n", "limit = 10\n", [(16, 11)]),                             # module level: not total's local
])
def test_the_other_uses_of_the_binding_are_renamed_and_only_those(old, new, expected_uses):
    after = BEFORE.replace(old, new, 1)
    r = propagation(BEFORE, after)
    assert r is not None and r.uses == expected_uses
    done = apply(after, r)
    assert done.count(r.old) == after.count(r.old) - len(expected_uses)
    compile(done, "<t>", "exec")


def test_nothing_is_proposed_for_a_renamed_use_or_a_name_without_other_uses():
    assert propagation(BEFORE, BEFORE.replace("        return count\n", "        return acc\n")) is None
    assert propagation(BEFORE, BEFORE.replace("def other():", "def another():")) is None


def test_the_rename_is_found_after_typing_it_one_keystroke_at_a_time():
    versions, typed = [BEFORE], ""
    for word in ("coun", "cou", "co", "c", "", "a", "ac", "acc"):
        versions.append(BEFORE.replace("    count = 0", f"    {word} = 0"))
    found = from_history(versions[:-1], versions[-1])
    assert found is not None and found.title == "Rename the other 3 uses of count to acc"
    assert "acc += it * scale" in found.after and "return count + 1" in found.after


def test_the_renamed_document_is_checked_before_it_is_offered():
    code = "def f(a, b):\n    x = a\n    return x + b\n"
    found = from_history([code], code.replace("    x = a", "    y = a"))
    assert found is not None and found.after == "def f(a, b):\n    y = a\n    return y + b\n"
    # a rename to a name that makes another use undefined-looking is still a rename of the binding; a document that
    # does not parse after it never gets one
    assert from_history([code], code.replace("    x = a", "    y = a") + "def (") is None


def test_a_renamed_parameter_is_renamed_where_calls_pass_it_by_keyword():
    before = ("def area(width, height=1):\n    return width * height\n\n\n"
              "print(area(2, height=3), area(width=1))\n\nclass Box:\n    def area(self, height):\n        pass\n")
    after = before.replace("height=1", "tall=1", 1)
    found = from_history([before], after)   # two functions named `area`: which one a call reaches is unknown,
    assert found.after == after.replace("width * height", "width * tall")   # so only the function's own uses follow
    before = before[:before.index("class Box")]
    after = before.replace("height=1", "tall=1", 1)
    found = from_history([before], after)
    assert found.after == before.replace("height", "tall") and len(found.edits) == 2


REMOVAL = '''def area(width, height, unit):
    return f"{width * height} {unit}"


class Room:
    def scaled(self, factor, unit):
        return area(factor, factor, unit)

    def show(self):
        return self.scaled(2, "m"), self.scaled(3, unit="ft"), other.scaled(4, "m")


print(area(1, 2, "m"), area(3, height=4, unit="cm"), area(*(1, 2, 3)))
'''


def test_a_removed_parameter_is_removed_from_the_calls_that_pass_it():
    versions = [REMOVAL]   # deleting ", unit" a keystroke at a time
    for k in range(len(", unit") - 1, -1, -1):
        versions.append(REMOVAL.replace("def area(width, height, unit)", "def area(width, height" + ", unit"[:k] + ")"))
    found = from_history(versions[:-1], versions[-1])
    assert found.title == "Remove the unit argument from 3 calls of area"   # not the `*(...)` one: unknown
    assert 'area(factor, factor)' in found.after and 'area(1, 2), area(3, height=4), area(*(1, 2, 3))' in found.after
    # a method's calls through an attribute: `self` is not passed
    now = REMOVAL.replace("def scaled(self, factor, unit):", "def scaled(self, factor):")
    found = from_history([REMOVAL], now)
    assert found.title == "Remove the unit argument from 2 calls of scaled"
    assert 'self.scaled(2), self.scaled(3), other.scaled(4, "m")' in found.after   # not another object's


def test_no_removal_is_proposed_for_a_change_that_is_not_one_parameter_less():
    assert from_history([REMOVAL], REMOVAL.replace("height, unit)", "height, unit, extra=1)")) is None
    assert from_history([REMOVAL], REMOVAL.replace("def area(width, height, unit)", "def area(height, width)")) is None
    assert from_history([REMOVAL], REMOVAL.replace("print(area(1, 2, \"m\")", "print(area(1, 2)")) is None


def test_an_argument_in_parentheses_goes_with_them():
    code = "def f(a, b, c):\n    pass\n\n\nf(1, (2 if a else 3), c=4)\nf((1), 2)\n"
    found = from_history([code], code.replace("def f(a, b, c)", "def f(a, c)"))
    assert found.after.endswith("f(1, c=4)\nf((1))\n")


@pytest.mark.parametrize("new", ["total", "limit", "n", "print", "math", "g"])
def test_a_rename_into_a_name_the_scope_already_has_is_never_proposed(new):
    """Merging two things into one compiles and adds no undefined name, yet changes what the code does: the
    scope's other variable, a parameter, a nested function's own variable, a builtin or module it uses."""
    code = ("import math\n\n\ndef f(items, limit):\n    total = 10\n    count = 0\n    for item in items:\n"
            "        if item and count < limit:\n            count += 1\n    def g():\n        n = 5\n"
            "        return n + count\n    print(count, total, math.pi, g())\n    return count\n")
    assert from_history([code], code.replace("    count = 0", f"    {new} = 0")) is None
    assert from_history([code], code.replace("    count = 0", "    tally = 0")) is not None   # a fresh name is


LOGGING = '''import logging
log = logging.getLogger()


def check(x, y):
    log.warn("x is %s", x)
    if x == None:
        log.warn("no x")
    if y == None:
        return log.warn
    return x == None
'''


def test_the_same_change_is_made_on_the_other_lines_that_have_what_the_edited_line_had():
    # typed a keystroke at a time: the versions in between (`log.warni(`) are passed over for the first whole one
    now = LOGGING.replace('log.warn("x', 'log.warning("x')
    typing = [LOGGING.replace('log.warn("x', 'log.warn' + "ing"[:k] + '("x') for k in range(3)]
    edit = from_history(typing, now)
    assert edit.title == "Make the same change on 2 other lines: log.warn → log.warning"
    assert edit.after == LOGGING.replace("log.warn", "log.warning")
    assert [now[a:b] for a, b, _ in edit.edits] == ["log.warn", "log.warn"]
    # an operator with a token of context on each side: `x == None`, not `y == None`
    now = LOGGING.replace("if x == None", "if x is None")
    edit = from_history([LOGGING, LOGGING.replace("if x == None", "if x  None")], now)
    assert edit.after == now.replace("return x == None", "return x is None")


def test_no_repeated_change_for_a_bare_name_a_pattern_twice_on_the_line_or_no_other_line():
    assert from_history([LOGGING], LOGGING.replace("return x ==", "return y ==")) is None   # a name: a rename's
    two = "def f(a):\n    g(a.b, a.b)\n    g(a.b)\n"
    assert from_history([two], two.replace("g(a.b, a.b)", "g(a.c, a.b)")) is None
    assert from_history([LOGGING], LOGGING.replace('"no x"', '"x missing"')) is None

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
    assert found is not None and (found[0].old, found[0].new) == ("count", "acc")
    assert "acc += it * scale" in found[1] and "return count + 1" in found[1]


def test_the_renamed_document_is_checked_before_it_is_offered():
    code = "def f(a, b):\n    x = a\n    return x + b\n"
    found = from_history([code], code.replace("    x = a", "    y = a"))
    assert found is not None and found[1] == "def f(a, b):\n    y = a\n    return y + b\n"
    # a rename to a name that makes another use undefined-looking is still a rename of the binding; a document that
    # does not parse after it never gets one
    assert from_history([code], code.replace("    x = a", "    y = a") + "def (") is None

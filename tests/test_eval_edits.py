"""evals/edits.py without a server: each planting makes one change of its named kind that still compiles, the
cases are drawn deterministically and evenly by kind, the frozen list is well formed, and answers are judged
fixed, harmed or refused as the eval says."""
import difflib
import re

import numpy as np
import pytest

from evals.edits import (BINOPS, BOOLEAN, COMPARE, EDIT_FILES, KINDS, PACKAGES, cases, compiles, functions, judge,
                         local_names, plant)

SOURCE = '''"""Inventory helpers."""
import math


class Stock:
    def __init__(self, items, limit=10):
        self.items = list(items)
        self.limit = limit

    def restock(self, count, price):
        """Add `count` items at `price`; never above the limit."""
        total = 0
        for index in range(len(self.items)):
            if self.items[index] < self.limit and count > 0:
                self.items[index] += 1
                count -= 1
                total += price * 2
        return math.ceil(total / 3)


def spread(values, width):
    if not values:
        return []
    step = width // len(values)
    return [value * step for value in values]
'''
OPERATORS = {(a, b) for a, b in list(BINOPS.values()) + list(COMPARE.values()) + list(BOOLEAN.values())}
OPERATORS |= {(a + "=", b + "=") for a, b in BINOPS.values()} | {("not", ""), ("", "not")}   # `is` ⇄ `is not`


def function(name: str) -> dict:
    return next(f for f in functions("demo", "demo.py", SOURCE) if f["name"] == name)


def changed_words(a: str, b: str) -> list[tuple[str, str]]:
    x, y = re.findall(r"\w+|[^\w\s]+", a), re.findall(r"\w+|[^\w\s]+", b)
    ops = difflib.SequenceMatcher(None, x, y, autojunk=False).get_opcodes()
    return [(" ".join(x[i1:i2]), " ".join(y[j1:j2])) for op, i1, i2, j1, j2 in ops if op != "equal"]


def check_kind(kind: str, fn: dict, case: dict) -> None:
    buggy = case["buggy_file"][case["start"]:case["end"]]
    (old, new), = changed_words(case["original"], buggy)
    names = local_names(fn)
    if kind == "misspelled-local":
        assert old in names and not re.search(rf"\b{new}\b", SOURCE)
        assert difflib.SequenceMatcher(None, old, new).ratio() >= 0.6
    elif kind == "wrong-variable":
        assert old in names and new in names and old != new
    elif kind == "flipped-operator":
        assert (old, new) in OPERATORS, (old, new)
    elif kind == "off-by-one":
        one_more = old.isdigit() and new.isdigit() and abs(int(old) - int(new)) == 1
        assert one_more or re.sub(r"\s", "", new).replace("-1", "", 1) == re.sub(r"\s", "", old), (old, new)
    elif kind == "missing-return":
        assert old == "return" and new == ""
    elif kind == "misspelled-attribute":
        at = case["buggy_file"].index(new, case["start"])
        assert case["buggy_file"][at - 1] == "." and not re.search(rf"\b{new}\b", SOURCE)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_each_planting_makes_one_change_of_its_kind_that_still_compiles(kind, seed):
    fn = function("restock")
    case = plant(kind, fn, np.random.default_rng(seed))
    assert case is not None
    buggy_file = case["buggy_file"]
    assert compiles(buggy_file) and buggy_file != SOURCE
    assert buggy_file[:case["start"]] == SOURCE[:fn["start"]]                # nothing outside the function moved
    assert buggy_file[case["end"]:] == SOURCE[fn["end"]:]
    assert case["original"] == SOURCE[fn["start"]:fn["end"]] and case["original"].startswith("    def restock")
    check_kind(kind, fn, case)


def test_a_function_without_a_site_of_the_kind_gets_no_bug():
    fn = function("__init__")
    assert plant("missing-return", fn, np.random.default_rng(0)) is None
    assert plant("off-by-one", fn, np.random.default_rng(0)) is None


def test_cases_are_even_by_kind_interleaved_and_the_same_for_a_seed():
    files = [("demo", "demo.py", SOURCE), ("other", "other.py", SOURCE.replace("Stock", "Shelf"))]
    first, again = cases(files, 1, seed=3), cases(files, 1, seed=3)
    assert [c["kind"] for c in first] == list(KINDS)
    assert [(c["file"], c["buggy_file"]) for c in first] == [(c["file"], c["buggy_file"]) for c in again]


def test_the_frozen_list_names_only_the_chosen_packages():
    rows = [l.split("\t") for l in EDIT_FILES.read_text().splitlines() if l and not l.startswith("#")]
    assert rows and all(len(r) == 3 and re.fullmatch(r"[0-9a-f]{40}", r[2]) for r in rows)
    assert {r[0] for r in rows} == set(PACKAGES)
    assert all(r[1].startswith(r[0] + "/") and r[1].endswith(".py") for r in rows)


@pytest.mark.parametrize("answer, outcome", [
    (None, "refused"),
    ("original", "fixed"),
    ("buggy", "refused"),
    ("    def restock(self, count, price):\n        return 0\n", "harmed"),
    ("    def restock(self, count, price):\n  return (\n", "harmed"),
])
def test_answers_are_judged_fixed_harmed_or_refused(answer, outcome):
    case = plant("flipped-operator", function("restock"), np.random.default_rng(0))
    text = {"original": case["original"], "buggy": case["buggy_file"][case["start"]:case["end"]]}.get(answer, answer)
    row = judge(case, text, "the range is too long" if answer is None else None)
    assert row["outcome"] == outcome
    if outcome == "harmed":
        assert row["verdict"] != "offered"    # the verifier would not have offered either

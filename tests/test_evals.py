"""Evals: task counts, the pass@k estimator, sandbox containment, and a tiny-model run of the infill command."""
import json
import os
import subprocess
import sys
from pathlib import Path
from math import comb

import pytest

from evals.metrics import pass_at_k
from evals.sandbox import run_program
from evals.tasks import infill_tasks, load_problems
from tests.conftest import ROOT


def test_task_counts():
    problems = load_problems()
    assert len(problems) == 164
    assert len(infill_tasks("single-line", problems)) == 1033
    assert len(infill_tasks("multi-line", problems)) == 5815  # Bavarian et al.'s count
    assert len(infill_tasks("random-span", problems)) == 1640
    again = infill_tasks("random-span", problems)
    assert again == infill_tasks("random-span", problems)  # deterministic


def test_tasks_reassemble_the_canonical_solution():
    p = load_problems()[3]
    for t in infill_tasks("single-line", [p]) + infill_tasks("random-span", [p]):
        assert t.prefix + t.middle + t.suffix == p["prompt"] + p["canonical_solution"]


@pytest.mark.parametrize("n,c,k", [(10, 0, 1), (10, 10, 5), (10, 3, 1), (20, 5, 10), (5, 1, 5)])
def test_pass_at_k_matches_the_combinatorial_definition(n, c, k):
    assert pass_at_k(n, c, k) == pytest.approx(1 - comb(n - c, k) / comb(n, k))


def test_pass_at_k_needs_enough_samples():
    with pytest.raises(ValueError):
        pass_at_k(2, 1, 5)


HOSTILE = {
    "infinite loop": "while True:\n    pass",
    "fork bomb": "import os\nwhile True:\n    os.fork()",
    "unbounded memory": "x = []\nwhile True:\n    x.append(' ' * 10**7)",
    "exit before the tests": "import sys\nsys.exit(0)",
    "os._exit": "import os\nos._exit(0)",
    "kill the parent": "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)",
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_sandbox_contains_hostile_code(name):
    if name == "kill the parent" and os.geteuid() != 0:
        pytest.skip("the sandbox drops to an unprivileged user only when started as root (as in CI)")
    outcome = run_program(HOSTILE[name], timeout=5)
    assert not outcome.passed


def test_sandbox_cannot_touch_the_project(tmp_path):
    victim = tmp_path / "precious.txt"
    victim.write_text("keep me")
    victim.parent.chmod(0o755)
    outcome = run_program(f"import os\nos.remove({str(victim)!r})")
    assert not outcome.passed and victim.read_text() == "keep me"


def test_sandbox_has_no_network():
    code = "import socket\ns = socket.create_connection(('127.0.0.1', 22), timeout=2)"
    assert not run_program(code).passed


def test_sandbox_passes_correct_code():
    assert run_program("assert sum(range(4)) == 6").passed


def test_infill_command_on_the_tiny_model(tiny_model_dir, tmp_path):
    out = tmp_path / "r.json"
    proc = subprocess.run([sys.executable, "-m", "runtime.cli", "eval", "infill", "--model", str(tiny_model_dir),
                           "--precision", "fp32", "--set", "single-line", "--length", "oracle", "--limit", "3",
                           "--workers", "2", "--json", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads(out.read_text())
    assert summary["tasks"] == 3 and 0 <= summary["pass@1"] <= 1 and summary["model_sha256"]
    assert {"set", "mode", "exact_match", "tokens_per_forward", "p50_ms", "p95_ms"} <= set(summary)
    assert len(out.with_suffix(".tasks.jsonl").read_text().splitlines()) == 3


def test_bench_cold_editor_requests_on_the_tiny_model(tiny_model_dir):
    from evals.bench import cold_requests
    out = cold_requests(tiny_model_dir, per_kind=2, contexts=(128, 256), against=tiny_model_dir)
    assert out["cursors"] == 6 and set(out["contexts"]) == set(out["against"]["contexts"]) == {"128", "256"}
    for shapes in (*out["contexts"].values(), *out["against"]["contexts"].values()):
        assert sum(m["requests"] for m in shapes.values()) == 6
        assert all(m["p50_ms"] > 0 and m["passes_p50"] >= 1 for m in shapes.values())
    assert out["against"]["model"] == str(tiny_model_dir)


def test_bench_on_the_tiny_model(tiny_model_dir):
    from evals.bench import CONTEXTS, REQUESTS_PER_STREAM, SHAPES, STREAMS, bench
    results = bench(tiny_model_dir, "fp32")
    assert len(results["cases"]) == 2 * len(CONTEXTS) * len(SHAPES) * len(STREAMS)
    assert {c["kv_cache"] for c in results["cases"]} == {True, False}
    assert len(results["repeat"]) == len(CONTEXTS) and all(r["repeat_p50_ms"] > 0 for r in results["repeat"])
    assert all(c["p50_ms"] > 0 and c["requests"] == c["streams"] * REQUESTS_PER_STREAM for c in results["cases"])
    assert results["matmul_flops"] > 1e9
    assert all(c["engine_flops"] > 0 and 0 < c["matmul_fraction"] < 10 for c in results["cases"])
    floor = results["full_pass_floor_ms"]
    assert 0 < floor[str(CONTEXTS[0])] < floor[str(CONTEXTS[-1])]


def test_load_test_against_the_real_server(tiny_model_dir):
    from evals.loadtest import run_against_server
    r = run_against_server(tiny_model_dir, http_clients=4, ws_sessions=2, per_client=2)
    assert r["http_requests"] == 8 and r["ws_requests"] == 4
    assert r["http_errors"] == 0 and r["ws_errors"] == 0 and r["http_p50_ms"] > 0


def test_humaneval_command_on_the_tiny_model(tiny_model_dir, tmp_path):
    out = tmp_path / "h.json"
    proc = subprocess.run([sys.executable, "-m", "runtime.cli", "eval", "humaneval", "--model", str(tiny_model_dir),
                           "--precision", "fp32", "--limit", "2", "--samples", "2", "--temperature", "0.8",
                           "--max-tokens", "16", "--block", "8", "--workers", "2", "--json", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads(out.read_text())
    assert summary["tasks"] == 2 and summary["samples"] == 2 and summary["decoder"] == "diffusion"
    assert 0 <= summary["pass@1"] <= 1 and "pass@10" not in summary and summary["model_sha256"]
    rows = [json.loads(line) for line in out.with_suffix(".tasks.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and {r["sample"] for r in rows} == {0, 1} and all("outcome" in r for r in rows)


def test_humaneval_program_runs_the_canonical_solution():
    from evals.humaneval import program
    from evals.tasks import load_problems
    problems = load_problems()[:3]
    assert all(run_program(program(p, p["canonical_solution"])).passed for p in problems)
    assert not run_program(program(problems[0], "    return None\n")).passed


def test_compare_command_on_the_tiny_models(tiny_model_dir, tiny_twin_dir, tmp_path):
    out, png = tmp_path / "c.json", tmp_path / "c.png"
    proc = subprocess.run([sys.executable, "-m", "runtime.cli", "eval", "compare", "--model", str(tiny_model_dir),
                           "--twin", str(tiny_twin_dir), "--precision", "fp32", "--set", "single-line",
                           "--length", "unknown", "--limit", "3", "--thresholds", "0.9,0.3", "--workers", "2",
                           "--json", str(out), "--plot", str(png)], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = json.loads(out.read_text())
    assert [r["decoder"] for r in results] == ["diffusion", "diffusion", "autoregressive"]
    assert [r["threshold"] for r in results] == [0.9, 0.3, None]
    assert all(r["tasks"] == 3 and r["tokens_per_s"] >= 0 and r["p95_ms"] >= r["p50_ms"] > 0 for r in results)
    assert results[2]["tokens_per_forward"] <= 1.0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_infill_command_runs_the_twin(tiny_twin_dir):
    from evals.infill import evaluate
    summary, rows = evaluate(tiny_twin_dir, "random-span", "oracle", 2, 2, precision="fp32")
    assert summary["decoder"] == "autoregressive" and summary["tasks"] == 2 and len(rows) == 2


def test_typing_replay_on_the_tiny_model(tiny_model_dir, tmp_path):
    import asyncio
    from evals.typing import record, replay
    session = record("def f(x):\n    \n", 14, "return x\n")
    r = asyncio.run(replay(session, tiny_model_dir, tmp_path / "lsp.log"))
    assert r["keystrokes"] == 9 and r["answered"] + r["superseded"] == 9 and r["cache_hits"] is not None
    assert r["answered"] == 0 or r["p95_ms"] >= r["p50_ms"] > 0
    assert session["keys"][-1] == {"text": "\n", "delay_ms": 800}


def test_report_reads_the_committed_results(tmp_path):
    import shutil
    from evals.report import report
    from tests.conftest import SHIPPED
    for path in (ROOT / "evals" / "results").glob("*.json"):
        shutil.copy(path, tmp_path / path.name)
    text = report(tmp_path, SHIPPED)
    assert "| single-line | oracle | 1033 |" in text and "unknown / oracle pass@1" in text
    assert "## Engine speed" in text and "## Typing in an editor" in text
    assert all(f"## {part}" in text for part in ("Cross-file cursors", "Names that exist", "Repair of planted bugs",
                                                  "Next edits"))
    assert (tmp_path / "learning-curve.png").read_bytes()[:4] == b"\x89PNG"
    old = json.loads((tmp_path / "single-line-unknown.json").read_text())
    old["model_sha256"] = "0" * 64  # made with a model that is no longer shipped: marked, and left out of ratios
    (tmp_path / "single-line-unknown.json").write_text(json.dumps(old))
    text = report(tmp_path, SHIPPED)
    assert "| **earlier model** 00000000 |" in text and "single-line: unknown / oracle" not in text
    old.pop("model_sha256")
    old["model_sha256"], old["decoding_revision"] = json.loads((tmp_path / "single-line-oracle.json").read_text())[
        "model_sha256"], 0
    (tmp_path / "single-line-unknown.json").write_text(json.dumps(old))
    assert "| **earlier decoding** " in report(tmp_path, SHIPPED)
    from runtime import DECODING_REVISION
    old["decoding_revision"], old["window"] = DECODING_REVISION, 99  # a deliberate other window: its command says so
    (tmp_path / "single-line-unknown.json").write_text(json.dumps(old))
    text = report(tmp_path, SHIPPED)
    assert "| single-line | unknown (99 slots) |" in text and "--window 99" in text
    assert "single-line: unknown / oracle" not in text and "| **earlier window** " not in text
    old.pop("window")  # made before results recorded their window: the 32 slots of then
    (tmp_path / "single-line-unknown.json").write_text(json.dumps(old))
    text = report(tmp_path, SHIPPED)
    assert "| single-line | unknown (32 slots) |" in text and "| **earlier window** " in text


def test_an_interrupted_infill_run_resumes_where_it_stopped(tiny_model_dir, tmp_path, monkeypatch):
    import evals.infill as infill
    journal = tmp_path / "r.partial.jsonl"
    real, calls, killed = infill.generate, [], []

    def flaky(engine, task, *args):
        calls.append(task.task_id)
        if len(calls) == 3 and not killed:
            killed.append(task.task_id)
            raise RuntimeError("killed")  # the run is stopped during its third task
        return real(engine, task, *args)

    monkeypatch.setattr(infill, "generate", flaky)
    with pytest.raises(RuntimeError, match="killed"):
        infill.evaluate(tiny_model_dir, "single-line", "oracle", 5, 2, precision="fp32", journal=journal)
    assert len(journal.read_text().splitlines()) == 1 + 2  # the settings, then the two finished generations
    with journal.open("a") as f:
        f.write('{"task_id": "HumanEval/9')  # a row cut short when the process was killed
    calls.clear()
    summary, rows = infill.evaluate(tiny_model_dir, "single-line", "oracle", 5, 2, precision="fp32",
                                    journal=journal, resume=True)
    assert len(calls) == 3 and summary["tasks"] == 5 and len({r["task_id"] for r in rows}) == 5
    with pytest.raises(SystemExit, match="other settings"):  # another mode must not pick up these generations
        infill.evaluate(tiny_model_dir, "single-line", "unknown", 5, 2, precision="fp32", journal=journal, resume=True)


def test_generating_in_several_processes_gives_the_same_rows(tiny_model_dir, tmp_path):
    import evals.infill as infill
    one, rows1 = infill.evaluate(tiny_model_dir, "multi-line", "unknown", 4, 2, precision="fp32", window=16)
    two, rows2 = infill.evaluate(tiny_model_dir, "multi-line", "unknown", 4, 2, precision="fp32", window=16,
                                 procs=2, journal=tmp_path / "r.partial.jsonl")
    assert [r["task_id"] for r in rows2] == [r["task_id"] for r in rows1]  # the set's order, whatever finished first
    assert [r["completion"] for r in rows2] == [r["completion"] for r in rows1]
    assert one["procs"] == 1 and two["procs"] == 2 and two["tasks"] == 4
    assert len((tmp_path / "r.partial.jsonl").read_text().splitlines()) == 1 + 4  # journalled as they came back


def test_heldout_lines_with_a_fixed_window(tiny_model_dir, tiny_corpus):
    from evals.heldout import evaluate
    fixed = evaluate(tiny_model_dir, tiny_corpus, 6, 0, 2.0, 0.9, "int8", window=5)
    oracle = evaluate(tiny_model_dir, tiny_corpus, 6, 0, 0.0, 0.9, "int8")
    assert fixed["mode"] == "5 slots" and oracle["mode"] == "oracle"
    assert fixed["tasks"] == oracle["tasks"] == 6  # the same lines: the sampling of rows does not depend on the window


def test_report_names_a_run_without_syntax_guidance_and_keeps_it_out_of_ratios(tmp_path):
    from evals.report import report
    from tests.conftest import SHIPPED
    from runtime import DECODING_REVISION
    from runtime.session import read_card
    card = read_card(SHIPPED)
    sha = card["files"]["model.int8.onnx"]
    row = {"tasks": 1033, "set": "single-line", "exact_match": 0.1, "tokens_per_forward": 1.0, "p50_ms": 1.0,
           "p95_ms": 2.0, "model": "model/default", "model_file": "model.int8.onnx", "model_sha256": sha,
           "decoding_revision": DECODING_REVISION}
    (tmp_path / "single-line-oracle.json").write_text(json.dumps({**row, "mode": "oracle", "pass@1": 0.2, "syntax": True}))
    unguided = {**row, "mode": "unknown", "window": 12, "pass@1": 0.1, "syntax": False}
    (tmp_path / "single-line-unknown-no-syntax.json").write_text(json.dumps(unguided))
    text = report(tmp_path, SHIPPED)
    assert "| unknown (12 slots), no syntax guidance |" in text
    assert "--no-syntax --json evals/results/single-line-unknown-no-syntax.json" in text
    assert "unknown / oracle" not in text
    (tmp_path / "single-line-unknown.json").write_text(json.dumps({**unguided, "syntax": True, "procs": 2}))
    text = report(tmp_path, SHIPPED)
    assert "single-line: unknown / oracle pass@1 = **0.50**" in text  # a run in several processes counts
    assert "--length unknown --procs 2 --json evals/results/single-line-unknown.json" in text


def test_report_records_the_shipped_models_full_run_scores_in_its_card(tmp_path):
    import shutil
    from evals.report import card_scores
    from runtime import DECODING_REVISION
    from tests.conftest import SHIPPED
    card = json.loads((SHIPPED / "card.json").read_text())
    sha = card["files"]["model.int8.onnx"]
    row = {"set": "single-line", "mode": "unknown", "tasks": 1033, "window": 12, "pass@1": 0.15, "exact_match": 0.1,
           "model": "model/default", "model_file": "model.int8.onnx", "model_sha256": sha,
           "decoding_revision": DECODING_REVISION, "syntax": True}
    (tmp_path / "single-line-unknown.json").write_text(json.dumps(row))
    (tmp_path / "single-line-unknown-no-syntax.json").write_text(json.dumps({**row, "syntax": False}))
    (tmp_path / "single-line-oracle-limited.json").write_text(json.dumps({**row, "mode": "oracle", "tasks": 200}))
    (tmp_path / "random-span-oracle.json").write_text(json.dumps({**row, "set": "random-span", "mode": "oracle",
                                                                  "tasks": 1640, "model_sha256": "0" * 64}))
    scores = card_scores(tmp_path, card)
    assert scores == {"single-line/unknown": {"pass@1": 0.15, "exact_match": 0.1, "tasks": 1033,
                                              "result": "single-line-unknown.json"},
                      "decoding_revision": DECODING_REVISION}
    (tmp_path / "none").mkdir()
    assert card_scores(tmp_path / "none", card) == {}                     # nothing known: nothing recorded


@pytest.mark.parametrize("command", [["api", "--set", "single-line", "--limit", "3"],
                                     ["editor", "--per-kind", "2", "--clients", "completions-64,infill-llama.vim,lsp"]])
def test_the_product_path_evals_on_the_tiny_model(tiny_model_dir, tmp_path, command):
    """The evals that ask a real server as clients do: every answer recorded with what was measured."""
    out = tmp_path / "out.json"
    proc = subprocess.run([sys.executable, "-m", "runtime.cli", "eval", *command, "--model", str(tiny_model_dir),
                           "--json", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    if command[0] == "api":
        assert result["tasks"] == 3 and len(result["rows"]) == 3 and 0 <= result["pass@1"] <= 1
        assert result["route"] == "/v1/completions" and result["language"] is None
    else:
        assert result["cursors"] == 6 and set(result["clients"]) == {"completions-64", "infill-llama.vim", "lsp"}
        assert len([r for r in result["rows"] if r["client"] == "lsp"]) == 6
        assert all("confidence" in r and "degenerate" in r for r in result["rows"])
        assert result["curve"] is None   # the curve is drawn from completions-128


def test_heldout_cursor_files_come_from_the_frozen_list(tmp_path, monkeypatch):
    """Installing a package (the dev extra's transformers) must not change the cursors the thresholds were chosen
    on: the files come from evals/heldout-files.tsv (those this machine has with the same content), and only a
    machine with too few of them scans its own."""
    import hashlib
    import sysconfig

    import evals.editor as editor
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    some = sorted(stdlib.glob("*.py"))[:editor.MIN_LISTED + 2]
    rows = [f"stdlib\t{p.name}\t{hashlib.sha1(p.read_bytes()).hexdigest()}" for p in some]
    rows[0] = rows[0][:-40] + "0" * 40   # changed since it was listed: skipped
    listed = tmp_path / "list.tsv"
    listed.write_text("# header\n" + "\n".join(rows) + "\n")
    monkeypatch.setattr(editor, "HELDOUT_LIST", listed)
    assert editor.heldout_files() == some[1:]
    listed.write_text("\n".join(rows[:3]) + "\n")   # another machine: too few of the listed files
    monkeypatch.setattr(editor, "scan_heldout", lambda roots=None: ["scanned"])
    assert editor.heldout_files() == ["scanned"]


def test_bench_typing_replay_types_each_line_against_a_second_model(tiny_model_dir, tmp_path, monkeypatch):
    import argparse

    import runtime.names
    monkeypatch.setattr(runtime.names, "BUDGET_S", 600)   # a slow first analysis would make the first way differ
    from evals.bench import add_arguments, run
    p = argparse.ArgumentParser()
    add_arguments(p)
    out_path = tmp_path / "replay.json"
    run(p.parse_args(["--typing", "--model", str(tiny_model_dir), "--against", str(tiny_model_dir), "--lines", "1",
                      "--json", str(out_path)]))
    out = json.loads(out_path.read_text())
    t = out["typing"]
    modes = ["now", "decoded every keystroke", f"now, {tiny_model_dir.name}"]
    assert list(t["modes"]) == modes and t["lines"] == 1
    assert t["modes"][modes[1]]["typed_through"] == 0   # only the engine as shipped types through
    counts = {m: t["modes"][m]["keystrokes"] for m in modes}
    assert len(set(counts.values())) == 1 and counts["now"] >= 3   # every mode typed the same line
    assert t["models"][modes[2]] == str(tiny_model_dir) and "--against" in out["command"]
    # the same model and decoding on its own server: the same answers at every keystroke
    rows = {m: [(r["passes"], r["right"]) for r in t["rows"] if r["mode"] == m] for m in modes}
    assert rows["now"] == rows[modes[2]]


def test_bench_thresholds_asks_the_typing_keystrokes_at_each_threshold(tiny_model_dir, tmp_path):
    """bench --thresholds: each threshold an engine of its own, the same keystrokes in turn; the lower threshold
    commits at least as many tokens a pass in no more passes."""
    import argparse
    from evals.bench import add_arguments, run
    p = argparse.ArgumentParser()
    add_arguments(p)
    out_path = tmp_path / "thresholds.json"
    run(p.parse_args(["--thresholds", "1,0.01", "--model", str(tiny_model_dir), "--lines", "1",
                      "--json", str(out_path)]))
    out = json.loads(out_path.read_text())
    strict, loose = out["typing_thresholds"]["thresholds"]["1.0"], out["typing_thresholds"]["thresholds"]["0.01"]
    assert strict["keystrokes"] == loose["keystrokes"] >= 3 and strict["same_text_as_first"] == 1.0
    assert loose["tokens_per_pass"] >= strict["tokens_per_pass"] and loose["passes_p50"] <= strict["passes_p50"]
    assert out["command"].startswith("quicksilver bench --thresholds 1,0.01")


def test_the_editors_threshold_is_the_highest_that_shows_a_quarter_of_the_cursors():
    from evals.editor import SHOWN_TARGET, chosen, curve
    rows = [{"shown": True, "confidence": c, "exact": c > 0.5, "degenerate": False} for c in (0.9, 0.6, 0.3, 0.2)] \
        + [{"shown": False, "confidence": 0.95, "exact": False, "degenerate": False}] * 4   # 8 cursors, 4 shown
    points = curve(rows)
    assert SHOWN_TARGET == 0.25 and chosen(points) == 0.6    # 0.6 shows 2 of 8; above it, only 1
    assert next(p for p in points if p["threshold"] == 0.6)["precision"] == 1.0
    assert chosen(curve(rows[:1] + rows[4:] * 2)) is None     # 1 of 9 shown at most: no threshold reaches a quarter


def test_the_repair_choice_table_counts_what_each_threshold_would_offer():
    from evals.repair_choice import table
    rows = [{"outcome": "fixed", "confidence": 0.95, "by_analysis": False, "located": True},
            {"outcome": "fixed", "confidence": 0.85, "by_analysis": False, "located": False},
            {"outcome": "harmed", "confidence": 0.6, "by_analysis": False, "located": False},
            {"outcome": "fixed", "confidence": 1.0, "by_analysis": True, "located": False},   # analysis's own
            {"outcome": "refused", "confidence": 0.99, "by_analysis": False, "located": False}]
    by = {line["threshold"]: line for line in table(rows)}
    assert (by[0.0]["model_fixed"], by[0.0]["model_harmed"], by[0.0]["located_fixed"]) == (2, 1, 1)
    assert (by[0.7]["model_fixed"], by[0.7]["model_harmed"]) == (2, 0)
    assert (by[0.9]["model_fixed"], by[0.9]["model_harmed"], by[0.9]["located_fixed"]) == (1, 0, 1)

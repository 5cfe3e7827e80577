"""quicksilver distill: the teacher's answers as sampler states, the certainty-forcing rows and loss, and the run
from a model directory to a distilled one (resumed, exported, served)."""
import argparse
import json

import numpy as np
import pytest
import torch

from model.distill import ROW_TOKENS, add_arguments, answer, end_at_line, worth_learning, crop, distill_rows, load_answers, run
from model.objective import certainty_forcing_loss
from runtime.engine import Engine
from runtime.request import Request
from runtime.session import load
from tests.conftest import SHIPPED

CURSOR = {"kind": "partial-line", "file": "x.py", "line": 3, "expected": "    return total / len(values)",
          "prefix": "def mean(values):\n    total = sum(values)\n    return tot",
          "suffix": "\n\n\ndef median(values):\n    values = sorted(values)\n    return values[len(values) // 2]\n"}


def distill_args(*argv: str) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    add_arguments(p)
    return p.parse_args(list(argv))


def test_the_sampler_records_the_step_that_committed_each_slot(tiny_engine):
    d = tiny_engine.denoiser(Request(prefix="def f(x):\n    ret", suffix="\n", max_new_tokens=24, threshold=0.5))
    given = ~d.masked.copy()
    steps = []
    while not d.done:
        d.advance(tiny_engine.forward_batch([d])[0])
        steps.append(d.step_of.copy())
    assert given.any()   # the typed 'def f(x):' line's pieces are written in, not decoded
    assert (d.step_of[given] == 0).all()
    assert ((d.step_of > 0) == (~d.masked & ~given)).all()
    assert (d.step_of[d.masked] == -1).all() and d.step_of.max() <= d.stats.steps
    for k, s in enumerate(steps, 1):   # a slot keeps the step that committed it
        assert ((s == k) | (s < k)).all() and ((steps[-1][s > 0]) == s[s > 0]).all()


def test_an_answer_is_its_final_sampler_state():
    engine = Engine(load(SHIPPED))   # whether an answer is degenerate is the model's behaviour
    r = answer(engine, CURSOR)
    ids, a, b = r["ids"], r["start"], r["end"]
    assert len(r["step_of"]) == b - a and a > 0 and r["passes"] >= 1
    decoded = r["step_of"] > 0
    assert decoded.any() and not (ids[a:b][decoded] == engine.tok.mask_id).any()
    assert (ids[a:b][r["step_of"] < 0] == engine.tok.mask_id).all()
    assert engine.tok.decode(ids[a:b][r["step_of"] >= 0].tolist()).startswith("\n    return tot")


def test_degenerate_empty_and_refused_answers_are_not_learned():
    from runtime.frames import Completion
    ok = Completion("a", "total / len(values)", "total / len(values)\n", {})
    assert worth_learning(CURSOR, ok)
    assert not worth_learning(CURSOR, Completion("a", "", " \n", {}))
    assert not worth_learning(CURSOR, Completion("a", "", "total / len(values)", {"refused": "would break"}))
    # the shown text is one line, but the window it was cut from repeats a line: every slot of it is a target
    raw = "total / len(values)\n    return total / len(values)\n    return total / len(values)\n"
    assert not worth_learning(CURSOR, Completion("a", "total / len(values)", raw, {}))
    suffix_line = "values = sorted(values)"   # re-writes a line just below the cursor
    assert not worth_learning(CURSOR, Completion("a", "x\n" + suffix_line, "x\n" + suffix_line, {}))


def test_rows_mask_each_decoded_slot_in_exactly_one_of_the_pair():
    rng = np.random.default_rng(0)
    mask_id, pad_id = 7, 0
    rows = []
    for n in (40, 300, 600):
        ids = rng.integers(10, 100, size=n)
        a = n // 2
        step_of = np.array([0, 0, 1, 2, 2, 3, 4, 5, -1, -1])
        ids[a:a + 10][step_of < 0] = mask_id
        rows.append({"ids": ids, "start": a, "end": a + 10, "step_of": step_of})
    noisy, targets, masked, keys = distill_rows(rows, mask_id, pad_id, rng)
    assert noisy.shape[0] == 6 and noisy.shape[1] <= ROW_TOKENS
    for i, r in enumerate(rows):
        cut, a, b, step_of = crop(r)
        assert (cut[a:b] == r["ids"][r["start"]:r["end"]]).all() and len(cut) <= ROW_TOKENS
        one, two = masked[2 * i, a:b], masked[2 * i + 1, a:b]
        assert ((one ^ two) == (step_of > 0)).all()               # every decoded slot a target exactly once
        for row in (2 * i, 2 * i + 1):
            n = len(cut)
            assert keys[row, :n].all() and not keys[row, n:].any()
            assert (targets[row, :n] == cut).all()
            assert (noisy[row, a:b][step_of < 0] == mask_id).all()   # never decoded: masked, no target
            assert (noisy[row, a:b][step_of == 0] == cut[a:b][step_of == 0]).all()   # written in: visible
            outside = np.r_[0:a, b:n]
            assert (noisy[row, outside] == cut[outside]).all() and not masked[row, outside].any()
            assert (noisy[row, a:b][masked[row, a:b]] == mask_id).all()


def test_certainty_forcing_adds_entropy_only_where_the_prediction_is_right():
    torch.manual_seed(0)
    logits = torch.randn(2, 6, 11)
    targets = torch.randint(0, 11, (2, 6))
    masked = torch.zeros(2, 6, dtype=torch.bool)
    masked[:, 2:5] = True
    plain, parts = certainty_forcing_loss(logits, targets, masked, 0.0, 0.5)
    assert plain.item() == pytest.approx(parts["ce"])
    wrong = targets.clone()   # targets the argmax never hits: no entropy term
    wrong[:, 1:] = (logits[:, :-1].argmax(-1) + 1) % 11
    loss, parts = certainty_forcing_loss(logits, wrong, masked, 2.0, 0.5)
    assert parts["right"] == 0 and loss.item() == pytest.approx(parts["ce"])
    right = targets.clone()
    right[:, 1:] = logits[:, :-1].argmax(-1)
    loss, parts = certainty_forcing_loss(logits, right, masked, 2.0, 0.5)
    assert parts["right"] == 1 and parts["entropy"] > 0
    assert loss.item() == pytest.approx(parts["ce"] + 2.0 * parts["entropy"], rel=1e-5)


def test_distill_collects_trains_resumes_and_exports_a_model_that_serves(int8_dir, tiny_corpus, tmp_path):
    out = tmp_path / "work"
    common = ["--out", str(out), "--model", str(int8_dir), "--corpus", str(tiny_corpus), "--parts", "2",
              "--batch", "4", "--replay", "2", "--lr", "3e-3", "--warmup", "2", "--threads", "2"]
    run(distill_args(*common, "--steps", "12"))
    answers = load_answers(out / "answers")
    assert len(answers) >= 4 and len(list((out / "answers").glob("part-*.npz"))) == 2
    state = json.loads((out / "ckpt" / "state.json").read_text())
    assert state["step"] == 12 and state["distill"]["answers"] == len(answers)
    before, after = state["history"][0], state["history"][-1]
    assert after["teacher_ce"] < before["teacher_ce"]   # it learns its own answers (and grows sure of them)
    run(distill_args(*common, "--steps", "15", "--phase", "train"))   # resumes, collects nothing new
    state = json.loads((out / "ckpt" / "state.json").read_text())
    assert state["step"] == 15 and state["tokens"] > 0
    run(distill_args(*common, "--phase", "export"))
    model = load(out / "model")
    assert model.card["distilled"]["answers"] == len(answers) and model.card["distill_history"][-1]["step"] == 15
    c = Engine(model).complete(Request(prefix="def f(x):\n    return ", suffix="\n", max_new_tokens=8))
    assert c.stats["forward_passes"] >= 1


def test_distill_refuses_a_folder_without_answers(int8_dir, tiny_corpus, tmp_path):
    with pytest.raises(SystemExit, match="no answers"):
        run(distill_args("--out", str(tmp_path / "w"), "--model", str(int8_dir), "--corpus", str(tiny_corpus),
                         "--phase", "train", "--steps", "1"))


def test_eval_parallel_compares_two_models_on_the_same_editor_cursors(tiny_model_dir, int8_dir):
    from evals.parallel import evaluate
    out = evaluate([tiny_model_dir, int8_dir], per_kind=1, seed=1)
    assert out["cursors"] == 3 and len(out["models"]) == 2
    for m in out["models"]:
        assert m["tokens_per_pass"] > 0 and m["passes_median"] >= 1 and 0 <= m["shown_precision"] <= 1
    assert 0 <= out["same_text"] <= 1 and set(out["tokens_per_pass_by_kind"]) == {
        "partial-line", "blank-line", "missing-line"}


def test_a_line_answer_ends_at_its_line_break():
    breaks = np.zeros(50, bool)
    breaks[[3, 4]] = True   # tokens 3 and 4 write a newline
    eom, mask = 9, 8
    win = [3, 20, 21, 22, 4, 23, mask, mask]   # the break before the line, the line, its break, a next line's start
    step_of = np.array([0, 1, 2, 3, 3, 3, -1, -1])
    r = {"ids": np.array([30, 31] + win + [40, 41]), "start": 2, "end": 10, "step_of": step_of}
    out = end_at_line(r, breaks, eom)
    assert out["ids"].tolist() == [30, 31, 3, 20, 21, 22, 4, eom, eom, eom, 40, 41]
    assert out["step_of"].tolist() == [0, 1, 2, 3, 3, 3, 3, 3]   # padding committed with the break
    assert end_at_line(out, breaks, eom)["ids"].tolist() == out["ids"].tolist()   # once is enough
    unbroken = {**r, "ids": np.array([30, 31, 3, 20, 21, 22, 23, 24, mask, mask, 40, 41])}
    assert end_at_line(unbroken, breaks, eom) is unbroken   # no break: nothing to end


def test_the_oracle_commit_rule_keeps_answers_in_no_more_passes(tiny_model_dir):
    from evals.parallel import decode, oracle
    from runtime.engine import Engine
    from runtime.request import Request
    from runtime.session import load
    out = oracle(tiny_model_dir, per_kind=2, seed=0)
    assert out["cursors"] == 6 and 0 < out["same_answer"] <= 1
    for shape in ("line", "block"):
        if shape in out:
            m = out[shape]
            assert m["oracle_tokens_per_pass"] >= m["tokens_per_pass"] > 0
            assert m["oracle_passes_median"] <= m["passes_median"]
    # the hook itself: a rule that commits every predicted slot ends decoding in a pass or two (the first may heal
    # the blank line before the window); threshold 1 without it commits one slot a pass
    engine = Engine(load(tiny_model_dir, prefer="fp32", threads=1))
    req = lambda: Request(prefix="def add(a, b):\n", max_new_tokens=6, window=6, threshold=1.0, eom_bias=-100.0)
    every = decode(engine, req(), lambda step: np.ones(len(step.slots), bool))
    assert every.done and every.stats.steps <= 2 < decode(engine, req()).stats.steps   # steps: passes add the context

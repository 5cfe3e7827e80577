"""Each of the sampler's policies alone (runtime/policies.py) and its commit rule (runtime/sampler.py), on a toy
vocabulary: no model, no tokenizer."""
import numpy as np
import pytest

from runtime.policies import GUARD_TRIES, ended_text, fill_line, guard_end, heal, pad_after_end, refused_break
from runtime.repair import Plan, repair_refill, repair_span, span_to_refill
from runtime.sampler import commit_rule
from runtime.vocab import SpecialIds

MASK, EOM, EOS, PAD = 0, 1, 2, 3
TEXTS = ["", "", "", "", "re", "ret", "return", "return x", "x", "\n", "\n    ", " = ", "y\n", "  \n"]
ID = {t: i for i, t in enumerate(TEXTS) if t}
SPECIAL = SpecialIds(mask=MASK, eom=EOM, ends=(EOM, EOS), banned=(MASK, PAD), texts=list(TEXTS))


def allowed(row: np.ndarray) -> set[str]:
    return {TEXTS[i] or f"<{i}>" for i in np.flatnonzero(np.isfinite(row))}


def test_heal_keeps_only_tokens_that_agree_with_the_typed_text():
    row = np.zeros(len(TEXTS), np.float32)
    heal(row, "retu", SPECIAL)
    assert allowed(row) == {"re", "ret", "return", "return x"}   # a prefix of it, or all of it and more
    row = np.zeros(len(TEXTS), np.float32)
    heal(row, "zz", SPECIAL)                                       # nothing agrees: untouched
    assert np.isfinite(row).all()


def test_fill_line_bars_ends_and_line_breaks_on_a_blank_line():
    row = np.zeros(len(TEXTS), np.float32)
    fill_line(row, "", SPECIAL)
    assert not allowed(row) & {"\n", "\n    ", "  \n", "<1>", "<2>"}
    assert {"x", "y\n", "return"} <= allowed(row)                  # text first, a break after it is fine
    row = np.zeros(len(TEXTS), np.float32)
    fill_line(row, "\n", SPECIAL)                                   # healing "\n": what a token spells past it
    assert "\n" in allowed(row) and "\n    " in allowed(row)        # ("\n" and "\n    " write no break past it)
    row = np.full(len(TEXTS), -np.inf, np.float32)
    row[ID["\n"]] = row[EOM] = 1.0                                  # nothing else left: untouched
    fill_line(row, "", SPECIAL)
    assert allowed(row) == {"\n", "<1>"}


def test_ended_text_is_where_a_token_would_end_the_result():
    assert ended_text("x = 1", EOM, ("\n",), SPECIAL) == "x = 1"
    assert ended_text("x = ", ID["y\n"], ("\n",), SPECIAL) == "x = y\n"   # a stop: just past it
    assert ended_text("x", ID[" = "], ("\n",), SPECIAL) is None


def test_guard_end_draws_again_while_the_end_is_refused():
    row = np.zeros(len(TEXTS), np.float32)
    draws = iter([EOS, ID["x"]])
    token, conf = guard_end(row, EOM, 0.9, "return", ("\n",), lambda text: text != "return",
                            lambda r: (next(draws), 0.5), SPECIAL)
    assert (token, conf) == (ID["x"], 0.5)                           # EOM refused, EOS refused, then x
    seen = []

    def draw(r):   # always offers an end: after GUARD_TRIES refusals no ending token may be drawn
        seen.append(allowed(r))
        return (EOM, 0.5) if len(seen) <= GUARD_TRIES else (int(np.flatnonzero(np.isfinite(r))[0]), 0.1)
    token, _ = guard_end(row, EOM, 0.9, "r", ("\n",), lambda text: False, draw, SPECIAL)
    assert not seen[-1] & {"<1>", "<2>", "\n", "\n    ", "y\n", "  \n"} and token not in SPECIAL.ends_set
    assert guard_end(row, ID["x"], 0.7, "r", ("\n",), lambda text: False, draw, SPECIAL) == (ID["x"], 0.7)


def test_refused_break_hands_back_a_stop_the_guard_refuses_once_its_lead_is_filled():
    win = np.array([ID["x"], ID["y\n"], MASK])
    text = lambda k: "".join(TEXTS[t] for t in win[:k])
    assert refused_break(win, np.array([False, False, True]), ("\n",), text, lambda t: False, SPECIAL) == 1
    assert refused_break(win, np.array([False, False, True]), ("\n",), text, lambda t: True, SPECIAL) is None
    assert refused_break(win, np.array([True, False, True]), ("\n",), text, lambda t: False, SPECIAL) is None
    assert refused_break(win, np.array([False, False, True]), ("\n",), lambda k: None, lambda t: False,
                         SPECIAL) is None                            # healing not finished: nothing to judge yet


def test_pad_after_end_fills_the_rest_with_padding():
    win, masked = np.array([ID["x"], EOS, MASK, ID["x"]]), np.array([False, False, True, False])
    assert pad_after_end(win, masked, SPECIAL) == 1
    assert win.tolist() == [ID["x"], EOM, EOM, EOM] and not masked.any()
    win, masked = np.array([ID["x"], MASK]), np.array([False, True])
    assert pad_after_end(win, masked, SPECIAL) is None and win.tolist() == [ID["x"], MASK]


@pytest.mark.parametrize("conf,is_end,leftmost,may,expected", [
    ([0.95, 0.5, 0.92], [0, 0, 0], [1, 0, 0], True, [1, 0, 1]),      # every confident slot
    ([0.3, 0.6, 0.2], [0, 0, 0], [1, 0, 0], True, [0, 1, 0]),        # none: the single most confident
    ([0.3, 0.2, 0.99], [0, 0, 1], [1, 0, 0], True, [1, 0, 0]),       # a lone confident end far right: not it
    ([0.99, 0.99, 0.2], [1, 0, 0], [1, 0, 0], True, [1, 1, 0]),      # an end at the leftmost slot, confident
    ([0.95, 0.98, 0.2], [0, 1, 0], [1, 0, 0], True, [1, 1, 0]),      # an end right after this step's content
    ([0.95, 0.9, 0.2], [0, 1, 0], [1, 0, 0], True, [1, 0, 0]),       # ... below the end threshold: a pass later
    ([0.95, 0.98, 0.2], [0, 1, 0], [1, 0, 0], False, [1, 0, 0]),     # ... where it may not end
])
def test_commit_rule(conf, is_end, leftmost, may, expected):
    commit = commit_rule(np.array(conf), np.array(is_end, bool), np.array(leftmost, bool), 0.9, 0.97,
                         lambda k, commit: may)
    assert commit.astype(int).tolist() == expected


def test_repair_span_is_the_least_likely_token_it_may_refill_and_its_unlikely_neighbours():
    scores = np.array([0.9, 0.05, 0.01, 0.08, 0.5, 0.02])
    may = np.array([True, True, True, True, True, False])
    assert repair_span(scores, may, 0.1, most=1) == (2, 3)
    assert repair_span(scores, may, 0.1, most=2) == (1, 3)   # the less likely neighbour first
    assert repair_span(scores, may, 0.1, most=5) == (1, 4)   # never past a likely token
    assert repair_span(scores, np.array([True, False, False, False, True, False]), 0.1) is None   # none it may


def test_repair_refill_makes_the_span_an_infill_between_the_block_around_it():
    # prefix [7], window: block [4, 5, 6, 8] then padding, suffix [9]; the least likely token (6) is re-filled
    ids = np.array([7, 4, 5, 6, 8, EOM, EOM, 9])
    scores = np.array([0.9, 0.8, 0.01, 0.9, 0.0, 0.0])   # padding is never repaired, however unlikely
    win = ids[1:7]
    assert span_to_refill(win, scores, Plan(), SPECIAL) == ((2, 3), 2)
    assert span_to_refill(win, scores, Plan(code=np.array([True, True, False, True])), SPECIAL) is None   # not code
    assert span_to_refill(win, np.ones(6), Plan(), SPECIAL) is None   # nothing unlikely
    refill, (head, was, tail) = repair_refill(ids, 1, 7, (2, 3), SPECIAL, slack=2)
    assert refill.tolist() == [7, 4, 5, MASK, MASK, MASK, 8, 9] and (head, was, tail) == ([4, 5], [6], [8])
    refill, around = repair_refill(ids, 1, 7, (3, 3), SPECIAL, slack=2)   # an insertion before token 8
    assert refill.tolist() == [7, 4, 5, 6, MASK, MASK, 8, 9] and around == ([4, 5, 6], [], [8])

"""Drafts from the context (runtime/drafts.py) and the sampler's rule for them: a draft commits, in one pass, the
leading slots whose predictions agree with it, and never a token the model does not predict there."""
import numpy as np

from runtime.drafts import MIN_MATCH, draft
from runtime.sampler import Denoiser, SamplerOptions
from runtime.vocab import SpecialIds

SPECIAL = SpecialIds(mask=0, eom=1, ends=(1, 2), banned=(0,), texts=[str(i) for i in range(64)])


def test_the_longest_nearest_recurrence_gives_the_draft():
    seq = [10, 11, 12, 13, 14, 15, 40, 41, 42, 5, 10, 11, 12, 13, 14, 15, 50, 51, 2, 9, 10, 11, 12, 13, 14, 15]
    assert draft(seq, 3, frozenset({2})) == (50, 51)   # the nearest of two equal matches; a file's end (2) stops the draft
    assert draft(seq, 1) == (50,) and draft(seq, 3) == (50, 51, 2)
    assert draft([7, 8, 9, 10, 11, 12, 30, 31] + [7, 8, 9], 4) == ()   # fewer than MIN_MATCH tokens recur
    assert draft(list(range(3, 3 + MIN_MATCH)) * 2, 4) == tuple(range(3, 3 + MIN_MATCH))[:4]
    assert draft([], 4) == () and draft([5] * 3, 4) == ()


def logits_for(tokens, conf, vocab=64):
    out = np.full((len(tokens), vocab), -20.0)
    for i, (t, c) in enumerate(zip(tokens, conf)):
        out[i, t] = np.log(c)
        out[i, (t + 1) % vocab if (t + 1) % vocab > 2 else 3] = np.log(1 - c)
    return out


def run_step(draft_tokens, predicted, conf):
    d = Denoiser([2, 20, 21], None, [22, 2], SamplerOptions(window=4, block=4, threshold=0.9, eom_bias=0.0,
                                                              draft=tuple(draft_tokens)), SPECIAL, str)
    d.advance(logits_for(predicted, conf))
    return d


def test_agreeing_slots_are_committed_in_one_pass_and_a_disagreeing_draft_commits_nothing_more():
    unsure = [0.5, 0.5, 0.5, 0.5]
    bare = run_step([], [30, 31, 32, 33], unsure)
    assert bare.masked.sum() == 3   # below the threshold: one slot a pass
    agreed = run_step([30, 31, 32], [30, 31, 32, 33], unsure)
    assert list(agreed.masked) == [False, False, False, True] and agreed.stats.drafted == 2
    assert list(agreed.ids[3:6]) == [30, 31, 32]
    wrong = run_step([30, 44, 32], [30, 31, 32, 33], unsure)   # agrees on the first slot only
    assert wrong.masked.sum() == 3 and 44 not in wrong.ids and wrong.stats.drafted == 0
    off = run_step([44, 45], [30, 31, 32, 33], unsure)
    assert off.masked.sum() == 3 and 44 not in off.ids


def test_a_model_that_judges_present_tokens_scores_a_repair_in_one_pass_with_nothing_masked():
    window = [30, 31, 32, 33]
    for stripes, passes in ((3, 3), (0, 1)):
        d = Denoiser([2, 20, 21], window, [22, 2], SamplerOptions(window=4, block=4, edit="repair", stripes=stripes),
                     SPECIAL, str)
        seen = 0
        while d.scoring:
            masked_now = int((d.inputs()[3:7] == SPECIAL.mask).sum())
            assert masked_now == (0 if stripes == 0 else len(np.flatnonzero(np.arange(4) % 3 == seen)))
            d.advance(logits_for([30, 31, 44, 33], [0.9, 0.9, 0.9, 0.9]))   # the model doubts slot 2's token
            seen += 1
        # the doubted token is re-filled as an infill's middle, with room to grow: the block around it is context
        assert seen == passes and d.around == ([30, 31], [32], [33]) and list(d.masked) == [True, True, True]
        assert d.inputs()[d.start - 2:d.end + 2].tolist() == [30, 31] + [SPECIAL.mask] * 3 + [33, 22]

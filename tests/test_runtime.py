"""The sampler, context windowing, healing and the engine, on the tiny model (real ONNX Runtime sessions)."""
import numpy as np
import pytest

from runtime.context import fit
from runtime.engine import Engine
from runtime.request import Request, suffix_echo
from runtime.postprocess import drop_suffix_overlap, heal, unheal_end
from runtime.frames import PLACEHOLDER
from runtime.policies import choose
from runtime.sampler import Denoiser, SamplerOptions, denoise

PREFIX = "import os\n\n\ndef read(path):\n    with open(path) as f:\n        "
SUFFIX = "\n    return data\n"


def test_choose_greedy_and_nucleus():
    logits = np.log(np.array([[0.1, 0.6, 0.3], [0.5, 0.25, 0.25]]))
    tokens, conf = choose(logits, 0.0, 1.0, np.random.default_rng(0))
    assert tokens.tolist() == [1, 0] and np.allclose(conf, [0.6, 0.5])
    rng = np.random.default_rng(0)
    draws = [choose(logits[:1], 1.0, 0.5, rng)[0][0] for _ in range(50)]
    assert set(draws) == {1}  # top_p 0.5 keeps only the 0.6 token
    with np.errstate(all="raise"):   # a temperature the API accepts (>= 0) but too small to divide by: greedy
        for t in (5e-324, 1e-40):
            assert choose(logits, t, 0.9, np.random.default_rng(0))[0].tolist() == [1, 0]
        assert choose(logits.astype(np.float32), 1.0, 2.2e-313, np.random.default_rng(0))[0].tolist() == [1, 0]


def test_sampler_options_reject_unknown_and_bad_values():
    with pytest.raises(ValueError, match="unknown sampler options"):
        SamplerOptions.from_dict({"window": 4, "steps": 3})
    with pytest.raises(ValueError):
        SamplerOptions(threshold=0)


def test_temperature_zero_is_deterministic_and_streams_frames(tiny_engine):
    req = Request(prefix=PREFIX, suffix=SUFFIX, max_new_tokens=12)
    frames = list(tiny_engine.stream(req))
    result = frames[-1]
    assert result.stats["steps"] == len(frames) - 1 >= 1   # a frame a step; passes add the context's own
    assert result.stats["forward_passes"] == result.stats["steps"] + (not result.stats["context_reused"])
    assert all(f.committed + f.masked >= 1 for f in frames[:-1])
    assert PLACEHOLDER in frames[0].text or frames[0].masked == 0
    assert tiny_engine.complete(Request(prefix=PREFIX, suffix=SUFFIX, max_new_tokens=12)).raw == result.raw
    assert result.stats["tokens_per_forward"] == pytest.approx(result.stats["tokens"] / result.stats["forward_passes"])


def test_seeded_sampling_repeats(tiny_engine):
    a = tiny_engine.complete(Request(prefix=PREFIX, temperature=1.0, seed=3, max_new_tokens=8))
    b = tiny_engine.complete(Request(prefix=PREFIX, temperature=1.0, seed=3, max_new_tokens=8))
    assert a.raw == b.raw


def test_threshold_one_commits_one_slot_per_step(tiny_engine):
    tok = tiny_engine.tok
    d = Denoiser([tok.eos_id], None, [], SamplerOptions(window=6, threshold=1.0, eom_bias=-100.0),
                 tiny_engine.special, tok.decode)
    frames = list(denoise(tiny_engine.model.forward, d))
    assert [f.committed for f in frames] == [1, 2, 3, 4, 5, 6]


def test_end_marker_pads_the_rest_of_the_window(tiny_engine):
    tok = tiny_engine.tok
    d = Denoiser([tok.eos_id], None, [], SamplerOptions(window=8, eom_bias=100.0), tiny_engine.special, tok.decode)
    frames = list(denoise(tiny_engine.model.forward, d))
    assert len(frames) == 1 and d.stats.stop_reason == "eom" and d.result().text == ""
    assert (d.ids[d.start:d.end] == tok.eom_id).all()


def test_forced_text_heals_the_cursor_line(tiny_engine):
    tok = tiny_engine.tok
    opts = SamplerOptions(window=10, forced="\n    ret", eom_bias=-100.0)
    d = Denoiser(tok.encode("def f():\n    x = 1"), None, [], opts, tiny_engine.special, tok.decode)
    for _ in denoise(tiny_engine.model.forward, d):
        pass
    assert tok.decode(d._tokens()).startswith("\n    ret")
    assert not d.result().text.startswith("\n")


def test_stop_sequence_ends_the_result(tiny_engine):
    res = tiny_engine.complete(Request(prefix=PREFIX, max_new_tokens=16, stop=("\n",), eom_bias=-100.0, threshold=1.0))
    assert "\n" not in res.text


def test_repair_keeps_a_block_the_model_likes(tiny_engine):
    block = "data = f.read()"
    res = tiny_engine.complete(Request(prefix=PREFIX, suffix=SUFFIX, mode="edit", existing=block, edit="repair"))
    assert res.stats["stop_reason"] in ("nothing to repair", "eom", "window")
    assert res.stats["forward_passes"] >= 3  # the scoring passes ran


def test_edit_all_rewrites_the_block(tiny_engine):
    res = tiny_engine.complete(Request(prefix=PREFIX, suffix=SUFFIX, mode="edit", existing="data = f.read()"))
    assert res.stats["forward_passes"] >= 1


def test_bad_requests_raise_clear_errors():
    with pytest.raises(ValueError, match="mode"):
        Request(prefix="x", mode="poem")
    with pytest.raises(ValueError, match="existing"):
        Request(prefix="x", mode="edit")
    with pytest.raises(ValueError, match="max_new_tokens"):
        Request(prefix="x", max_new_tokens=0)


def test_context_fits_budget_at_line_boundaries(tiny_engine):
    tok = tiny_engine.tok
    prefix = "".join(f"x{i} = {i}\n" for i in range(300))
    suffix = "".join(f"y{i} = {i}\n" for i in range(300))
    ctx = fit(tok, prefix, suffix, 200)
    assert len(ctx.prefix) + len(ctx.suffix) <= 200 and ctx.prefix_cut and ctx.suffix_cut
    assert tok.decode(ctx.prefix).startswith("x") and tok.decode(ctx.prefix).endswith("x299 = 299\n")
    assert tok.decode(ctx.suffix).startswith("y0 = 0\n") and tok.decode(ctx.suffix).endswith("\n")
    small = fit(tok, "a = 1\n", "b = 2\n", 200)
    assert small.prefix[0] == tok.eos_id and small.suffix[-1] == tok.eos_id


def test_heal_moves_boundaries_to_tokenizer_splits():
    assert heal("x = 1\n    re", "\n") == ("x = 1", "\n    re", "\n")
    assert heal("def f():\n", "    return 1\n") == ("def f():", "\n", " return 1\n")
    assert unheal_end("    y = 2\n   ", "    return 1\n") == "    y = 2\n"
    # after a blank line BPE spells "0\n\n    for" with one '\n\n   ' token: a prefix ending in a bare '\n' would
    # tell the model that a column-0 line follows, so the whole blank run moves into the window, on both sides
    assert heal("    x = 0\n\n", "    for c in s:\n") == ("    x = 0", "\n\n", " for c in s:\n")
    assert heal("    x = 0\n", "\n    for c in s:\n") == ("    x = 0", "\n", " for c in s:\n")
    assert unheal_end("    y = 2\n\n   ", "\n    return 1\n") == "    y = 2\n"
    assert heal("    x = 0\n", "\n\ndef g():\n") == ("    x = 0", "\n", "\n\ndef g():\n")  # column 0: bare newlines
    assert drop_suffix_overlap("a = 1\n    return x\n", "    return x\n") == "a = 1\n"


def test_suffix_echo_is_the_suffix_through_its_second_non_blank_line():
    assert suffix_echo("    return data\n\ndef g():\n    pass\n") == "    return data\n\ndef g():"
    assert suffix_echo(")\n    y = 2\n") == ")\n    y = 2"       # the cursor line's rest counts as a line
    assert suffix_echo("\n    return data\n") == ""             # one non-blank line: too little to be sure
    assert suffix_echo("") == ""


def test_a_middle_that_rewrites_the_suffix_is_cut_before_it(tiny_engine):
    tok = tiny_engine.tok
    suffix = "    return data\n\nprint(read)\n"
    target = tok.encode("    data = f.read()\n" + suffix + "x = 1\n")
    opts = SamplerOptions(window=len(target) + 4, stop=(suffix_echo(suffix),), eom_bias=-100.0)
    d = Denoiser(tok.encode("def read(path):\n"), None, tok.encode(suffix), opts, tiny_engine.special, tok.decode)

    def scripted(ids, mask, logits_from):  # a model that writes the middle, then the suffix again
        logits = np.zeros((1, ids.shape[1] - logits_from, tiny_engine.model.card["config"]["vocab_size"]), np.float32)
        for i, t in enumerate(target):
            logits[0, d.start - 1 - logits_from + i, t] = 50.0
        return logits

    frames = list(denoise(scripted, d))
    assert d.stats.stop_reason == "stop" and d.result().text == "    data = f.read()\n"
    assert len(frames) == 1
    # the one pass committed the whole window; what was cut with the text is not counted as generated, nor does
    # its probability enter the confidence
    kept = len(tok.encode("    data = f.read()\n" + suffix_echo(suffix)))
    assert kept < len(target) and abs(d.stats.tokens - kept) <= 1 and len(d.generated_probs) == d.stats.tokens


def test_engine_adds_the_echo_to_multi_line_infills_only(tiny_engine):
    suffix = "    return data\n\nprint(read)\n"
    echo = suffix_echo(suffix)
    assert echo in tiny_engine.denoiser(Request(prefix=PREFIX, suffix=suffix, stop=("#",))).opts.stop
    assert echo not in tiny_engine.denoiser(Request(prefix=PREFIX, suffix=suffix, single_line=True)).opts.stop
    assert tiny_engine.denoiser(Request(prefix=PREFIX, mode="completion")).opts.stop == ()


def test_a_blank_cursor_line_gets_a_line_before_the_middle_may_end(tiny_engine):
    tok, special = tiny_engine.tok, tiny_engine.special
    V = tiny_engine.model.card["config"]["vocab_size"]
    x = next(i for i, t in enumerate(special.texts) if t.strip() and "\n" not in t)
    newlines = np.array(["\n" in t for t in special.texts])

    def eager_to_end(ids, mask, logits_from):  # a model that would end at once, or else start another line
        logits = np.zeros((1, ids.shape[1] - logits_from, V), np.float32)
        logits[..., newlines] = 40.0
        logits[..., special.eom] = 50.0
        logits[..., x] = 30.0
        return logits

    def run(fill_line):
        opts = SamplerOptions(window=6, forced="\n", fill_line=fill_line)
        d = Denoiser(tok.encode("def f():"), None, tok.encode("    return y\n"), opts, special, tok.decode)
        for _ in denoise(eager_to_end, d):
            pass
        return d.result().text

    assert run(False).strip() == ""                 # the model's first choice: an empty middle
    first = run(True).split("\n")[0]
    assert first.strip() == special.texts[x].strip()  # the cursor's line got text before anything else

    engine_opts = lambda **kw: tiny_engine.denoiser(Request(**kw)).opts.fill_line
    assert engine_opts(prefix="def f():\n", suffix="    return y\n")
    assert engine_opts(prefix="def f():\n    ", mode="completion")
    assert not engine_opts(prefix="def f():\n    y = ", suffix="\n")
    assert not engine_opts(prefix="def f():\n", suffix="\n", mode="edit", existing="    y = 1\n")


def test_may_end_keeps_the_result_going_until_it_may_end(tiny_engine):
    tok, special = tiny_engine.tok, tiny_engine.special
    V = tiny_engine.model.card["config"]["vocab_size"]
    x = next(i for i, t in enumerate(special.texts) if t.strip() and "\n" not in t and len(t) > 1)
    nl = next(i for i, t in enumerate(special.texts) if t == "\n")
    xt = special.texts[x]

    def ends_early(ids, mask, logits_from):  # ends at once if it may, else writes x, and breaks the line at slot 2
        logits = np.zeros((1, ids.shape[1] - logits_from, V), np.float32)
        logits[..., special.eom] = 50.0
        logits[..., x] = 30.0
        logits[0, 2, nl] = 60.0
        return logits

    def run(may_end, stop=()):
        opts = SamplerOptions(window=8, may_end=may_end, stop=stop)
        d = Denoiser(tok.encode("def f():\n"), None, [], opts, special, tok.decode)
        for _ in denoise(ends_early, d):
            pass
        return d.result().text, d.stats.stop_reason

    assert run(None) == ("", "eom")
    seen = []
    text, reason = run(lambda t: seen.append(t) or t.count(xt) >= 2)
    assert text == xt + xt + "\n" and reason == "eom" and "" in seen   # refused at 0 and 1 x, then the line ends
    # the line break committed early at slot 2 (the model is surest there) is re-masked when it ends too soon
    text, reason = run(lambda t: t.count(xt) >= 3, stop=("\n",))
    assert text == xt * 3 and reason == "eom"
    text, reason = run(lambda t: t.count(xt) >= 2, stop=("\n",))
    assert text == xt * 2 and reason == "stop"                          # allowed: the early break stands
    assert run(lambda t: False)[1] == "window"                          # never allowed: the window fills

    guided = tiny_engine.denoiser(Request(prefix="def f():\n", suffix="    return 1\n", language="python")).opts
    assert guided.may_end is not None and tiny_engine.denoiser(Request(prefix="x")).opts.may_end is None




def test_a_healed_token_that_writes_past_the_typed_text_counts():
    """usage.completion_tokens / tokens_predicted: a completion that shows text has generated at least one token,
    also when its only token is the healed one that finishes the typed word ("retur" → "return", shipped model)."""
    from runtime.engine import Engine
    from runtime.session import load
    from tests.conftest import SHIPPED
    engine = Engine(load(SHIPPED, threads=1))
    c = engine.complete(Request(prefix="def f(x):\n    retur", suffix="\n", max_new_tokens=8, single_line=True))
    assert c.text.startswith("n") and c.stats["tokens"] >= 1
    for typed in ("import o", "x = le", "for i in ra"):
        c = engine.complete(Request(prefix=typed, suffix="\n", max_new_tokens=8, single_line=True))
        assert c.stats["tokens"] >= 1 or not c.text, (typed, c.text)


@pytest.mark.parametrize("cap", [1, 2, 3])
def test_a_result_never_holds_more_tokens_than_the_client_asked_for(cap):
    """max_tokens is the client's: a healed token that finishes the typed word and goes on counts as one, and the
    window's extra slots (rounded up for editors, or the healed ones) never add to it (a user's probe: max_tokens 2
    returned 4 tokens)."""
    from runtime.engine import Engine
    from runtime.session import load
    from tests.conftest import SHIPPED
    engine = Engine(load(SHIPPED, threads=1), type_through=False)
    for typed in ("def add(a, b):\n    ret", "import os\nimport sy", "for i in ran", "def f(x):\n    return x.spl"):
        for multiple in (1, 8):
            req = Request(prefix=typed, suffix="\n", max_new_tokens=cap, window_multiple=multiple)
            c = engine.complete(req)
            assert c.stats["tokens"] <= cap, (typed, multiple, c.text)
            assert len(engine.tok.encode(c.text)) <= cap + 1, (typed, c.text)   # the rest of the typed word, re-spelt
    # a harness's exact window is its own contract (an oracle length): the cap does not cut it
    assert engine.denoiser(Request(prefix="x = fo", max_new_tokens=cap, window=cap)).opts.max_tokens is None
    assert engine.denoiser(Request(prefix="x = fo", max_new_tokens=cap)).opts.max_tokens == cap


def writer(d, target: list[int], vocab: int, end: int):
    """A scripted model that writes `target` into the window, then ends it (wherever the window is now)."""
    def forward(ids, mask, logits_from):
        logits = np.zeros((1, ids.shape[1] - logits_from, vocab), np.float32)
        for i in range(d.end - d.start):
            logits[0, d.start - 1 - logits_from + i, target[i] if i < len(target) else end] = 50.0
        return logits
    return forward


def test_a_window_the_model_fills_ends_the_result_at_the_window(tiny_engine):
    """A window filled with content without the middle ending is the result (its length is the window's: the
    engine does not grow it; docs/history.md has why)."""
    tok, special = tiny_engine.tok, tiny_engine.special
    target = tok.encode("x = [" + ", ".join(map(str, range(40))) + "]")[:30]
    d = Denoiser(tok.encode("def f():\n"), None, tok.encode("\n    return x\n"), SamplerOptions(window=4, block=4),
                 special, tok.decode)
    for _ in denoise(writer(d, target, tiny_engine.model.card["config"]["vocab_size"], special.eom), d):
        pass
    assert d.stats.stop_reason == "window" and d.result().token_ids == target[:4]


def test_the_card_lists_the_calibrator_and_a_changed_one_is_refused(tmp_path):
    """Every file of the shipped model directory is in its card, the calibrator too (it changes what editors are
    shown); a modified one fails the load with a clear error."""
    import shutil
    from runtime.session import ModelError, read_card
    from tests.conftest import SHIPPED
    card = read_card(SHIPPED)
    assert set(card["files"]) == {p.name for p in SHIPPED.iterdir() if p.name != "card.json"}
    copy = tmp_path / "model"
    shutil.copytree(SHIPPED, copy)
    (copy / "calibrator.json").write_text((copy / "calibrator.json").read_text().replace("0", "1", 1))
    with pytest.raises(ModelError, match="calibrator.json does not match"):
        read_card(copy)

"""The autoregressive twin's decoder: its key/value cache gives the same tokens as recomputing the whole sequence,
fill-in-the-middle prompts, healing, stop sequences and the shared request checks (tiny twin, real ONNX Runtime)."""
import numpy as np
import pytest

from runtime.autoregressive import AutoregressiveEngine, make_engine
from runtime.engine import Engine
from runtime.request import Request
from runtime.session import ModelError, load

PREFIX = "import os\n\n\ndef read(path):\n    with open(path) as f:\n        "
SUFFIX = "\n    return data\n"


@pytest.fixture(scope="module")
def twin(tiny_twin_dir):
    return AutoregressiveEngine(load(tiny_twin_dir, prefer="fp32", threads=1))


def greedy_without_cache(engine: AutoregressiveEngine, req: Request) -> list[int]:
    """Reference decoding: the whole sequence through the graph at every token."""
    ids, forced, budget = engine.prompt(req)
    out = []
    for _ in range(budget):
        seq = np.array([ids + out])
        logits = engine.model.forward(seq, np.ones_like(seq, bool), seq.shape[1] - 1)[0, -1]
        logits[engine.special.banned] = -np.inf
        text = engine.tok.decode(out)
        if len(text) < len(forced):
            logits[~engine.special.agrees(forced[len(text):])] = -np.inf
        token = int(logits.argmax())
        if token in engine.special.ends_set:
            break
        out.append(token)
    return out


def test_cached_decoding_equals_recomputing(twin):
    for req in (Request(prefix=PREFIX, suffix=SUFFIX, max_new_tokens=12),
                Request(prefix="def add(a, b):\n", mode="completion", max_new_tokens=16)):
        res = twin.complete(req)
        ref = greedy_without_cache(twin, req)
        forced = twin.prompt(req)[1]
        assert res.raw == twin.tok.decode(ref)[len(forced):]
        # one pass per token after the prompt's; an <|eom|> costs the pass that chose it
        assert res.stats["forward_passes"] == len(ref) + (res.stats["stop_reason"] == "eom")


def test_infill_prompt_is_fill_in_the_middle(twin):
    ids, forced, budget = twin.prompt(Request(prefix=PREFIX, suffix=SUFFIX, max_new_tokens=8))
    tok = twin.tok
    # as in training (one file): its <|eos|> before <|fim_prefix|>, none between the suffix and <|fim_middle|>
    assert ids[:2] == [tok.eos_id, tok.fim_prefix_id] and ids[-1] == tok.fim_middle_id and tok.fim_suffix_id in ids
    assert ids[-2] != tok.eos_id and ids.count(tok.eos_id) == 1
    assert forced == "\n        " and budget == 8 + len(tok.encode(forced))
    ids, _, _ = twin.prompt(Request(prefix=PREFIX, suffix=SUFFIX, mode="completion"))
    assert tok.fim_prefix_id not in ids


def test_stop_sequences_frames_and_determinism(twin):
    req = Request(prefix=PREFIX, suffix=SUFFIX, max_new_tokens=24, stop=("\n",))
    items = list(twin.stream(req))
    res = items[-1]
    assert "\n" not in res.text and len(items) - 1 == res.stats["steps"]
    assert res.stats["tokens_per_forward"] <= 1.0
    assert twin.complete(req).raw == res.raw


def test_make_engine_picks_the_decoder(twin, tiny_model_dir, tiny_twin_dir):
    assert isinstance(make_engine(load(tiny_twin_dir, prefer="fp32")), AutoregressiveEngine)
    assert isinstance(make_engine(load(tiny_model_dir, prefer="fp32"), kv_cache=False), Engine)
    with pytest.raises(ModelError, match="diffusion"):
        AutoregressiveEngine(load(tiny_model_dir, prefer="fp32"))
    with pytest.raises(ValueError, match="edit"):
        twin.complete(Request(prefix=PREFIX, mode="edit", existing="x = 1"))


def test_the_twin_gets_the_same_syntax_guidance(twin, monkeypatch):
    import runtime.autoregressive as ar
    asked, eom = [], twin.special.eom

    def eager(logits, *args):  # a twin that would end the middle at once
        logits = logits.copy()
        logits[:, eom] += 100.0
        return ar.choose.__wrapped__(logits, *args)

    eager.__wrapped__ = ar.choose
    monkeypatch.setattr(ar, "choose", eager)
    monkeypatch.setattr(ar, "end_guard", lambda language, *_: language and (lambda text: asked.append(text) and False))
    plain = twin.complete(Request(prefix=PREFIX, suffix=SUFFIX, max_new_tokens=12, stop=("\n",), single_line=True))
    # unguided: ends at once — nothing past the healed token (whose text may run past the typed blank line, as
    # one trained tiny twin's did: 'None'), and the guard never asked
    assert (plain.stats["tokens"], plain.stats["stop_reason"], asked) == (0, "eom", [])
    assert "\n" not in plain.raw
    req = Request(prefix=PREFIX, suffix=SUFFIX, max_new_tokens=12, stop=("\n",), single_line=True, language="python")
    res = twin.complete(req)                                              # a guard that never lets it end
    # to the end of its budget (12 tokens past the typed text's own tokens; a twin that spells the typed text in one
    # token more than the tokenizer does has one fewer left: the tiny twins of two trainings differed so)
    assert res.stats["stop_reason"] == "window" and res.stats["tokens"] in (11, 12) and len(asked) >= 11
    assert "\n" not in res.raw


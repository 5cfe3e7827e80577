"""What a keystroke costs: healing writes the typed text into the window in one go (only the last, unfinished
piece is decoded), the healing constraint is a lookup, an end marker may be committed with the content before
it without cutting anything the one-at-a-time rule keeps, a long file is tokenized only as far as fits, and every
completion says where its time went. Behaviour of the shipped model where it is the model's."""
import time

import numpy as np
import pytest

import runtime.context as context
from runtime.engine import Engine
from runtime.request import Request
from runtime.postprocess import heal
from runtime.vocab import SpecialIds
from runtime.session import load

FILE = '''import json


class Store:
    def __init__(self, path):
        self.path = path
        self.rows = []

    def load(self):
        with open(self.path) as f:
            self.rows = json.load(f)
        return self.rows

    def count(self):
        return len(self.rows)
'''


@pytest.fixture(scope="module")
def shipped():
    return load(None)


@pytest.mark.parametrize("text", ["\n    ", " ", "self", " re", "\n", "x = fo", "\n        return", "é", "",
                                  "\n\n\n", " conversa", "(", "a\U0010ffff"])
def test_the_healing_constraint_is_the_vocabulary_scan(shipped, text):
    sp = SpecialIds.from_tokenizer(shipped.tokenizer)
    scan = np.array([bool(t) and bool(text) and (t.startswith(text) or text.startswith(t)) for t in sp.texts])
    np.testing.assert_array_equal(sp.agrees(text), scan)


@pytest.mark.parametrize("cut", ["        return len(self.ro", "            self.rows = json.lo", "        self.pa"])
def test_healing_writes_the_typed_pieces_as_the_file_spells_them_and_decodes_only_the_last(shipped, cut):
    at = FILE.index(cut) + len(cut)
    req = lambda: Request(prefix=FILE[:at], suffix=FILE[at:], max_new_tokens=16, stop=("\n",))
    engine, tok = Engine(shipped), shipped.tokenizer
    d = engine.denoiser(req())
    forced = heal(FILE[:at], FILE[at:])[1]
    fixed = tok.encode(forced[:tok.last_word_start(forced)])
    assert len(fixed) >= 3 and d.opts.forced == forced
    np.testing.assert_array_equal(d.ids[d.start:d.start + len(fixed)], fixed)   # committed before any pass
    assert not d.masked[:len(fixed)].any() and d.masked[len(fixed):].all()
    # ... and they are the tokens the whole file's tokenization has there (what the model was trained on)
    assert tok.encode(FILE[:at - (len(forced) - tok.last_word_start(forced))])[-len(fixed):] == fixed


CURSORS = [(FILE, "        self.rows = []"), (FILE, "        return self.rows"), (FILE, "import json"),
           (FILE, "        return len(self.rows)"), (FILE, "            self.rows = json.load(f)"),
           ("def add(a, b):\n    return a + b\n\n\ndef mul(a, b):\n    return a * b\n", "    return a * b"),
           ("for i in range(10):\n    print(i)\nprint('done')\n", "    print(i)"),
           ("def read(path):\n    with open(path) as f:\n        return f.read()\n", "        return f.read()")]


def test_ends_committed_with_their_content_never_cut_what_one_at_a_time_keeps(shipped):
    engine, saved, asked = Engine(shipped), 0, 0
    for code, line in CURSORS:
        at = code.index(line)
        for prefix, suffix in ((code[:at], code[at + len(line):]), (code[:at + len(line) // 2],
                                                                      code[at + len(line) // 2:])):
            out = {}
            for parallel in (True, False):
                engine.clear_cache()   # the same passes for both (a kept context's window pass differs slightly)
                req = Request(prefix=prefix, suffix=suffix, max_new_tokens=64)
                d = engine.denoiser(req)
                d.opts.parallel_ends = parallel
                while not d.done:
                    d.advance(engine.forward_batch([d])[0])
                out[parallel] = engine.finish(req, d)
            together, alone = out[True], out[False]
            assert not (alone.text.startswith(together.text) and len(alone.text) > len(together.text)), (prefix, suffix)
            assert together.stats["forward_passes"] <= alone.stats["forward_passes"]
            saved += alone.stats["forward_passes"] - together.stats["forward_passes"]
            asked += 1
    assert asked == 2 * len(CURSORS)


def test_a_long_file_is_tokenized_only_as_far_as_fits(shipped, monkeypatch):
    tok = shipped.tokenizer
    lines = [f"    value_{i} = compute({i}, {i * 7})\n" for i in range(5000)]
    prefix, suffix = "".join(lines[:3000]), "".join(lines[3000:])
    tok._line_counts = {}
    ctx = context.fit(tok, prefix, suffix, 300)
    assert len(tok._line_counts) < 200                         # not 5000 lines
    monkeypatch.setattr(context, "COUNT_CHUNK", 10 ** 9)       # every line counted: the same context
    tok._line_counts = {}
    whole = context.fit(tok, prefix, suffix, 300)
    assert (ctx.prefix, ctx.suffix, ctx.prefix_cut, ctx.suffix_cut) == \
        (whole.prefix, whole.suffix, whole.prefix_cut, whole.suffix_cut)
    assert len(ctx.prefix) + len(ctx.suffix) <= 300 and ctx.prefix_cut and ctx.suffix_cut


def test_every_completion_says_where_its_time_went(shipped):
    engine = Engine(shipped)
    at = FILE.index("        return len(self.ro") + len("        return len(self.ro")
    t0 = time.perf_counter()
    c = engine.complete(Request(prefix=FILE[:at], suffix=FILE[at:], max_new_tokens=16, stop=("\n",)))
    wall = 1000 * (time.perf_counter() - t0)
    parts = [c.stats[k] for k in ("tokenize_ms", "pass_ms", "sample_ms", "post_ms")]
    assert all(p > 0 for p in parts) and sum(parts) <= wall
    assert c.stats["pass_ms"] > c.stats["sample_ms"]   # a forward pass costs more than the sampler's step


def test_line_counts_survive_the_memory_filling_up(shipped, monkeypatch):
    monkeypatch.setattr(context, "COUNTS_KEPT", 8)     # cleared on almost every call
    tok = shipped.tokenizer
    lines = [f"x{i} = {i}\n" for i in range(40)]
    for _ in range(3):
        assert context._count(tok, lines[:20] + lines[10:30]) == [len(tok.encode(l)) for l in lines[:20] + lines[10:30]]


@pytest.mark.parametrize("line", ["    data = [" + ", ".join(f"'item{i}'" for i in range(400)) + ", 'ite",
                                  "x = " + "a" * 4996])
def test_a_huge_cursor_line_is_not_healed_in_the_window(shipped, line):
    c = Engine(shipped).complete(Request(prefix="import os\n" + line, suffix="\n", max_new_tokens=32, stop=("\n",)))
    # an answer (maybe empty) in a few passes: not an IndexError, nor a pass for every token of the line
    assert c.stats["stop_reason"] and c.stats["forward_passes"] <= 40

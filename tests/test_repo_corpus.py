"""Training rows with cross-file context (model/repo_corpus.py): other files of a package before the file, in the
engine's layout, only the file masked; a tiny model trained on them runs end to end."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

from model.objective import Examples
from model.repo_corpus import build, load_rows
from model.tokenizer import TOKENIZER_FILE, CodeTokenizer
from tests.conftest import STDLIB, train_args


@pytest.fixture(scope="module")
def repo_rows(tiny_corpus, tmp_path_factory):
    src = tmp_path_factory.mktemp("packages")
    for name in ("json", "email"):
        shutil.copytree(STDLIB / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "test*"))
    out = tmp_path_factory.mktemp("repo")
    meta = build(out, [src], tiny_corpus / TOKENIZER_FILE, seq=128, max_rows=400, workers=1, seed=0,
                 files_per_package=20)
    return out, meta


def test_rows_hold_other_files_of_the_package_before_the_file(repo_rows):
    out, meta = repo_rows
    tok = CodeTokenizer.load(out / TOKENIZER_FILE)
    rows, starts = load_rows(out, "train")
    assert rows.shape[1] == 128 and len(rows) == len(starts) == meta["rows"]["train"] > 20
    assert 0.5 < np.mean(starts > 0) < 1   # most rows have other files before them; some (plain) have none
    for row, start in zip(rows, starts):
        if start:
            assert row[0] == tok.bos_id   # each snippet starts as a file does, as the engine lays them out
            head = tok.decode(row[1:start].tolist())
            assert head.startswith("# json/") or head.startswith("# email/")


def test_only_the_file_part_is_masked(repo_rows, tiny_corpus):
    out, _ = repo_rows
    rows, starts = load_rows(out, "train")
    tok = CodeTokenizer.load(tiny_corpus / TOKENIZER_FILE)
    rng = np.random.default_rng(0)
    raw, s = np.asarray(rows[:32], dtype=np.int64), np.asarray(starts[:32])
    clean, region = Examples(tok).diffusion(raw, rng, s)
    for r in range(len(raw)):
        assert not region[r, :s[r]].any() and region[r, s[r]:].any()
        assert (clean[r, :s[r]] == raw[r, :s[r]]).all()   # the context is given, unchanged


def test_a_tiny_model_trained_with_cross_file_context_completes_with_it(repo_rows, tmp_path):
    from model.export import export
    from model.train import train
    from runtime.engine import Engine
    from runtime.request import Request
    from runtime.session import load
    out, _ = repo_rows
    state = train(train_args("--corpus", str(out), "--out", str(tmp_path / "ckpt"), "--size", "tiny", "--steps", "4",
                             "--batch", "4", "--warmup", "1", "--threads", "2", "--ckpt-minutes", "100"))
    assert state["step"] == 4 and state["config"]["max_len"] == 128 and np.isfinite(state["heldout"]["masked_ce@0.5"])
    export(tmp_path / "ckpt", tmp_path / "model", precision="fp32")
    engine = Engine(load(tmp_path / "model", prefer="fp32", threads=1))
    c = engine.complete(Request(prefix="def dumps(obj):\n    return ", extra=("# json/encoder.py\nclass JSONEncoder:\n",),
                                max_new_tokens=4))
    assert c.stats["extra_chunks"] == 1 and c.stats["extra_tokens"] > 0

"""Training machinery on the tiny model: learning, exact resume, warm start, DDP with two processes."""
import argparse
import json
import os
import shutil
import subprocess
import sys

import pytest

from model.corpus import humaneval_path
from model.train import Trainer, train
from tests.conftest import ROOT, train_args


def test_loss_falls_within_seconds(tiny_corpus, tmp_path):
    args = train_args("--corpus", str(tiny_corpus), "--out", str(tmp_path / "run"), "--size", "tiny",
                      "--steps", "60", "--batch", "8", "--warmup", "5", "--lr", "3e-3", "--threads", "2",
                      "--objective", "autoregressive")
    tr = Trainer(args)
    first = sum(tr.step() for _ in range(5)) / 5
    for _ in range(50):
        tr.step()
    last = sum(tr.step() for _ in range(5)) / 5
    assert last < first - 0.6, (first, last)  # from ln(vocab) ≈ 6.9 towards the unigram entropy and below


@pytest.mark.parametrize("objective", ["diffusion", "autoregressive"])
def test_resume_reproduces_the_next_step_exactly(tiny_corpus, tmp_path, objective):
    args = train_args("--corpus", str(tiny_corpus), "--out", str(tmp_path / "run"), "--size", "tiny",
                      "--steps", "20", "--batch", "4", "--warmup", "3", "--threads", "1", "--objective", objective)
    tr = Trainer(args)
    for _ in range(4):
        tr.step()
    tr.save(1.0)
    expected = [tr.step() for _ in range(2)]
    resumed = Trainer(args)
    assert resumed.state["step"] == 4
    assert [resumed.step() for _ in range(2)] == expected


def test_diffusion_warm_starts_from_autoregressive(tiny_corpus, tiny_ckpt, tmp_path):
    ar = tmp_path / "ar"
    train(train_args("--corpus", str(tiny_corpus), "--out", str(ar), "--size", "tiny", "--steps", "3",
                     "--batch", "4", "--objective", "autoregressive", "--threads", "1"))
    state = train(train_args("--corpus", str(tiny_corpus), "--out", str(tmp_path / "d"), "--steps", "2",
                             "--batch", "4", "--init-from", str(ar), "--threads", "1"))
    assert state["config"]["causal"] is False and state["init_tokens"] == 3 * 4 * 128
    assert state["tokens_total"] == state["tokens"] + state["init_tokens"]
    from model.export import phases  # the card lists both phases, each with its own held-out numbers
    ph = phases(state)
    assert [p["objective"] for p in ph] == ["autoregressive", "diffusion"] and [p["steps"] for p in ph] == [3, 2]
    assert "next_token_ce" in ph[0]["heldout"] and "masked_ce@0.5" in ph[1]["heldout"]


def test_the_twin_warm_starts_from_an_exported_model_directory(tiny_corpus, int8_dir, tmp_path):
    """`--objective autoregressive --init-from MODEL_DIR`: the shipped model's twin is re-created from the repository
    (its int8 training weights), with the same size and the diffusion model's tokens counted as its start."""
    card = json.loads((int8_dir / "card.json").read_text())
    state = train(train_args("--corpus", str(tiny_corpus), "--out", str(tmp_path / "twin"), "--steps", "2",
                             "--batch", "4", "--init-from", str(int8_dir), "--objective", "autoregressive",
                             "--threads", "1"))
    assert state["config"]["causal"] is True and state["objective"] == "autoregressive"
    assert {k: v for k, v in state["config"].items() if k != "causal"} == \
        {k: v for k, v in card["config"].items() if k != "causal"}
    assert state["init_tokens"] == card["training"]["tokens"] and state["step"] == 2
    assert state["init_from"] == str(int8_dir)                  # the model directory, not the scratch checkpoint
    other = tmp_path / "other-corpus"                           # a corpus in another tokenization is refused
    shutil.copytree(tiny_corpus, other)
    (other / "tokenizer.json").write_text((other / "tokenizer.json").read_text() + " ")
    with pytest.raises(SystemExit, match="tokenization"):
        train(train_args("--corpus", str(other), "--out", str(tmp_path / "twin2"), "--steps", "1", "--batch", "4",
                         "--init-from", str(int8_dir), "--objective", "autoregressive", "--threads", "1"))


def test_two_process_ddp_on_cpu(tiny_corpus, tmp_path):
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "runtime.cli", "train", "--corpus", str(tiny_corpus), "--out", str(out), "--size", "tiny",
           "--steps", "3", "--batch", "2", "--threads", "1"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    state = json.loads((out / "state.json").read_text())
    assert state["step"] == 3 and state["tokens"] == 3 * 2 * 128 * 2  # two processes' batches per step


def test_gpu_recipe_rehearsal_on_cpu(tmp_path):
    """The device tool's exact command at tiny size: what comes back fits its limits (8 files, 16 MiB each, 64 MiB)."""
    out = tmp_path / "OUT"
    cmd = [sys.executable, "-m", "model.gpu_recipe", "--out", str(out), "--minutes", "1", "--size", "tiny",
           "--device", "cpu", "--max-mb", "2", "--batch", "4", "--work", str(tmp_path / "work"),
           "--tokenizer", str(ROOT / "model" / "default" / "tokenizer.json"), "--humaneval", str(humaneval_path())]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    files = [p for p in out.rglob("*") if p.is_file()]
    assert {p.name for p in files} >= {"ar-state.json", "state.json", "model-00000.safetensors"}
    assert len(files) <= 8 and all(p.stat().st_size <= 16 * 2**20 for p in files)
    assert sum(p.stat().st_size for p in files) <= 64 * 2**20
    state = json.loads((out / "diffusion" / "state.json").read_text())
    assert state["objective"] == "diffusion" and state["init_tokens"] > 0

    # a second lease continues from the first one's weights, packed small enough to carry
    import torch

    from model.checkpoint import load_model
    from model.gpu_recipe import pack, unpack
    packed = pack(out / "diffusion", tmp_path / "carry" / "init")
    assert sum(p.stat().st_size for p in packed.iterdir()) < 0.6 * sum(
        p.stat().st_size for p in (out / "diffusion").glob("model-*.safetensors"))
    before, _ = load_model(out / "diffusion")
    after, _ = load_model(unpack(packed, tmp_path / "unpacked"))
    for (name, a), b in zip(before.state_dict().items(), after.state_dict().values()):
        assert torch.allclose(a.float(), b.float(), atol=0.01 * a.abs().max().item() + 1e-6), name
    out2 = tmp_path / "OUT2"
    cmd2 = cmd[:cmd.index("--out")] + ["--out", str(out2), "--minutes", "0.5", "--init-from", str(packed),
                                       "--init-label", "runs/first-lease"] + cmd[cmd.index("--size"):]
    proc = subprocess.run(cmd2, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not (out2 / "ar-state.json").exists()
    cont = json.loads((out2 / "diffusion" / "state.json").read_text())
    assert cont["init_from"] == "runs/first-lease" and cont["init_tokens"] == state["tokens_total"]
    assert cont["tokens_total"] > state["tokens_total"] and cont["step"] > 0


def test_gpu_recipe_certainty_runs_side_by_side_on_cpu(int8_dir, tmp_path):
    """--init-from a model directory with --certainty 0 2: two continued runs from the same start, each back packed
    in parts under 16 MB that join and unpack into a checkpoint; the state says which weight each ran with."""
    import torch

    from model.checkpoint import load_model
    from model.gpu_recipe import join_parts, unpack
    out = tmp_path / "OUT"
    cmd = [sys.executable, "-m", "model.gpu_recipe", "--out", str(out), "--minutes", "1.2", "--size", "tiny",
           "--device", "cpu", "--max-mb", "2", "--batch", "4", "--work", str(tmp_path / "work"),
           "--tokenizer", str(int8_dir / "tokenizer.json"), "--humaneval", str(humaneval_path()),
           "--init-from", str(int8_dir), "--init-label", str(int8_dir), "--certainty", "0", "2"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    files = [p for p in out.rglob("*") if p.is_file()]
    assert len(files) <= 8 and all(p.stat().st_size <= 16 * 2**20 for p in files)
    weights = []
    for w in ("0", "2"):
        folder = out / f"c{w}"
        state = json.loads((folder / "state.json").read_text())
        assert state["certainty"] == float(w) and state["init_from"] == str(int8_dir) and state["step"] > 0
        assert not (folder / "weights.int8.safetensors").exists() and (folder / "weights.int8.safetensors.part0").exists()
        join_parts(folder)
        model, _ = load_model(unpack(folder, tmp_path / f"ckpt{w}"))
        weights.append(model.state_dict())
    assert any(not torch.equal(a, b) for a, b in zip(weights[0].values(), weights[1].values()))
    # exported, the card chains the start's phases (a model directory's card) and this one, with its weight
    from model.export import export
    shutil.copy(int8_dir / "tokenizer.json", tmp_path / "ckpt2" / "tokenizer.json")
    export(tmp_path / "ckpt2", tmp_path / "exported", precision="int8")
    before = json.loads((int8_dir / "card.json").read_text())["training"]["phases"]
    after = json.loads((tmp_path / "exported" / "card.json").read_text())["training"]["phases"]
    assert after[:-1] == before and after[-1]["certainty"] == 2.0


def test_certainty_term_adds_the_entropy_of_right_predictions(tiny_corpus, tiny_ckpt, tmp_path):
    """train --certainty W: the training loss is the masked cross-entropy plus W × the entropy of the masked slots
    already predicted right; held-out evaluation stays plain cross-entropy."""
    import numpy as np
    import torch

    from model.objective import ENTROPY_TEMPERATURE, certainty_forcing_loss
    losses, evals = {}, {}
    for w in (0.0, 5.0):
        args = train_args("--corpus", str(tiny_corpus), "--out", str(tmp_path / f"w{w}"), "--init-from",
                          str(tiny_ckpt), "--steps", "1", "--batch", "4", "--threads", "2", "--certainty", str(w))
        tr = Trainer(args)
        raw = tr.examples.windows(tr.train_data, 32, tr.cfg.max_len, np.random.default_rng(0))   # enough rows that the tiny model gets some masked slot right
        tr.rng = np.random.default_rng(1)
        with torch.no_grad():
            losses[w] = tr.loss_on(raw, torch.Generator().manual_seed(0)).item()
            evals[w] = tr.evaluate()
        assert tr.state["certainty"] == w
    assert losses[5.0] > losses[0.0] + 1e-3     # the same rows and masks: the difference is 5 × the entropy term
    assert evals[5.0] == evals[0.0]
    logits = torch.tensor([[[3.0, 0.0], [0.0, 3.0], [0.0, 0.0]]])   # shifted: slot 1 predicted right, slot 2 wrong
    clean, masked = torch.tensor([[0, 0, 0]]), torch.tensor([[False, True, True]])
    loss, parts = certainty_forcing_loss(logits, clean, masked, 1.0, ENTROPY_TEMPERATURE)
    p = torch.softmax(torch.tensor([3.0, 0.0]) / ENTROPY_TEMPERATURE, -1)
    assert parts["right"] == 0.5 and abs(parts["entropy"] + (p * p.log()).sum().item()) < 1e-5


def test_fill_in_the_middle_rows_keep_the_whole_middle_and_its_end(tiny_corpus):
    import numpy as np

    from model.objective import Examples
    from model.tokenizer import CodeTokenizer
    tok = CodeTokenizer.load(tiny_corpus / "tokenizer.json")
    data = np.fromfile(tiny_corpus / "train.bin", dtype=np.uint16)
    ex = Examples(tok)
    rng = np.random.default_rng(0)
    raw = ex.windows(data, 512, 128, rng)   # ~300 middles: the share below is ~70 %, far from a coin flip
    rows = ex.autoregressive(raw, rng)
    fim = [(r, w) for r, w in zip(rows, raw) if (r == tok.fim_prefix_id).any()]
    assert len(fim) > 10 and all(r.shape == (128,) for r in rows)
    lengths, newline_first = [], []
    for r, w in fim:  # undo every packed example: the row's text comes back
        text, i, r = [], 0, r.tolist()
        while i < len(r):
            if r[i] != tok.fim_prefix_id:
                text.append(r[i])
                i += 1
                continue
            s, m, e = (r.index(x, i) for x in (tok.fim_suffix_id, tok.fim_middle_id, tok.eom_id))
            assert i < s < m < e and tok.eos_id not in r[i:e]  # one file's text in each example
            assert e + 1 == len(r) or r[e + 1] in (tok.eos_id, tok.fim_prefix_id) or tok.fim_prefix_id not in r[e:]
            text += r[i + 1:s] + r[m + 1:e] + r[s + 1:m]
            lengths.append(e - i)
            newline_first.append("\n" in tok.decode([r[m + 1]]))
            i = e + 1
        assert text == w[:len(text)].tolist() and len(text) >= 128 - 4 * len(lengths)
    assert min(lengths) < 64 and max(lengths) > 64  # short contexts and long ones
    assert sum(newline_first) > len(newline_first) / 2  # whole-line middles start with their newline, as when healed


def test_infill_windows_start_at_the_newline_token_as_a_healed_window_does(tiny_corpus):
    import numpy as np

    from model.objective import Examples, Mixture
    from model.tokenizer import CodeTokenizer
    tok = CodeTokenizer.load(tiny_corpus / "tokenizer.json")
    data = np.fromfile(tiny_corpus / "train.bin", dtype=np.uint16)
    ex = Examples(tok, Mixture(0, 1, 0))
    rng = np.random.default_rng(0)
    raw = ex.windows(data, 64, 128, rng)
    clean, region = ex.diffusion(raw, rng)
    starts_newline, padded = 0, 0
    for c, g, w in zip(clean, region, raw):
        a = int(np.flatnonzero(g)[0])
        eom = np.flatnonzero(c == tok.eom_id)
        padded += len(eom) > 0
        body = [t for t in c[a:] if t != tok.eom_id]
        assert body == w[a:a + len(body)].tolist()  # the padding only pushes the suffix right
        starts_newline += "\n" in tok.decode([int(c[a])])
    assert starts_newline > 64 / 2 and padded > 64 / 2


def test_eval_only_reproduces_the_checkpoints_held_out_loss(tiny_corpus, tiny_ckpt):
    state = json.loads((tiny_ckpt / "state.json").read_text())
    before = sorted(p.name for p in tiny_ckpt.iterdir())
    got = train(train_args("--corpus", str(tiny_corpus), "--out", str(tiny_ckpt), "--batch", "8", "--eval-only",
                           "--threads", "1"))
    assert got["heldout"] == pytest.approx(state["heldout"], rel=1e-3)
    assert sorted(p.name for p in tiny_ckpt.iterdir()) == before and json.loads(
        (tiny_ckpt / "state.json").read_text()) == state  # nothing written

    # weights brought back from a lease carry no optimiser state: they evaluate all the same
    bare = tiny_ckpt.parent / "bare"
    shutil.copytree(tiny_ckpt, bare)
    (bare / "optim.safetensors").unlink()
    again = train(train_args("--corpus", str(tiny_corpus), "--out", str(bare), "--batch", "8", "--eval-only",
                             "--threads", "1"))
    assert again["heldout"] == got["heldout"]


def test_gpu_recipe_distill_mode_rehearsal_on_cpu(tiny_ckpt, tiny_corpus, tmp_path):
    """--distill: distill's training phase on the device from carried answers; the weights come back."""
    from model.distill import add_arguments, run
    from model.export import export
    base = tmp_path / "base"
    export(tiny_ckpt, base, precision="int8")
    p = argparse.ArgumentParser()
    add_arguments(p)
    run(p.parse_args(["--out", str(tmp_path / "local"), "--model", str(base), "--corpus", str(tiny_corpus),
                      "--parts", "1", "--phase", "answers", "--threads", "2"]))
    out = tmp_path / "OUT"
    cmd = [sys.executable, "-m", "model.gpu_recipe", "--out", str(out), "--minutes", "0.6", "--size", "tiny",
           "--device", "cpu", "--max-mb", "2", "--batch", "4", "--work", str(tmp_path / "work"),
           "--tokenizer", str(base / "tokenizer.json"), "--humaneval", str(humaneval_path()),
           "--distill", str(tmp_path / "local" / "answers"), "--distill-model", str(base)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    state = json.loads((out / "distilled" / "state.json").read_text())
    assert state["step"] > 0 and state["distill"]["answers"] > 0 and state["history"]
    assert not (out / "diffusion").exists()


def test_corruption_replaces_only_visible_region_tokens_and_never_with_a_special_one():
    import torch
    from model.objective import corrupt_tokens
    g = torch.Generator().manual_seed(0)
    clean = torch.randint(7, 500, (8, 64), generator=g)
    region = torch.zeros(8, 64, dtype=torch.bool)
    region[:, 16:] = True
    masked = region & (torch.rand(8, 64, generator=g) < 0.3)
    noisy = torch.where(masked, torch.ones_like(clean), clean)
    out, corrupted = corrupt_tokens(noisy, clean, region, masked, 0.2, 7, 500, g)
    changed = out != noisy
    assert torch.equal(changed, corrupted) and not (corrupted & (masked | ~region)).any()
    assert (out[corrupted] >= 7).all() and 0.1 < corrupted.sum() / (region & ~masked).sum() < 0.3


def test_a_tiny_model_learns_to_judge_present_tokens(tiny_corpus, tmp_path):
    """With --corrupt, the loss covers masked and replaced tokens (and keeps the rest); it trains end to end and
    its state says so."""
    args = train_args("--corpus", str(tiny_corpus), "--out", str(tmp_path / "run"), "--size", "tiny", "--steps", "40",
                      "--batch", "8", "--warmup", "5", "--lr", "3e-3", "--threads", "2", "--corrupt", "0.15")
    tr = Trainer(args)
    first = sum(tr.step() for _ in range(5)) / 5
    for _ in range(30):
        tr.step()
    last = sum(tr.step() for _ in range(5)) / 5
    assert last < first - 0.3, (first, last)
    assert tr.state["corrupt"] == 0.15

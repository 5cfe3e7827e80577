"""Training machinery on the tiny model: learning, exact resume, warm start, DDP with two processes."""
import json
import os
import subprocess
import sys

import pytest

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
    assert last < first - 1.0, (first, last)


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

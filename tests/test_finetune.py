"""quicksilver finetune: from an exported model directory to an adapted one, with a before/after report."""
import argparse
import json
import shutil

from model.export import export
from model.finetune import add_arguments, finetune
from runtime.session import load
from tests.conftest import STDLIB


def test_finetune_a_small_repository(tiny_ckpt, tmp_path):
    base = tmp_path / "base"
    export(tiny_ckpt, base, precision="int8")
    repo = tmp_path / "repo"
    shutil.copytree(STDLIB / "json", repo, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(STDLIB / "logging", repo / "logging", ignore=shutil.ignore_patterns("__pycache__"))
    p = argparse.ArgumentParser()
    add_arguments(p)
    args = p.parse_args([str(repo), "--model", str(base), "--out", str(tmp_path / "mine"), "--passes", "0.5",
                         "--seq", "128", "--batch", "4", "--work", str(tmp_path / "work")])
    report = finetune(args)
    assert report["files"]["heldout"] >= 1 and report["steps_planned"] >= 4
    assert 0 <= report["heldout_line_exact_before"] <= 1 and 0 <= report["heldout_line_exact_after"] <= 1
    assert json.loads((tmp_path / "mine" / "finetune.json").read_text()) == report
    card = load(tmp_path / "mine").card
    if report["kept"]:
        assert report["heldout_loss_best"] < report["heldout_loss_before"]
        assert report["heldout_line_exact_after"] >= report["heldout_line_exact_before"]
        assert card["finetuned_on"] == str(repo.resolve())
        assert card["training"]["tokens"] > json.loads((base / "card.json").read_text())["training"]["tokens"]
    else:
        assert card == json.loads((base / "card.json").read_text())


def test_a_finetune_that_makes_the_model_worse_returns_the_start(tiny_ckpt, tmp_path):
    """A learning rate far too high wrecks the weights: the held-out files say so, and the start is written out."""
    base = tmp_path / "base"
    export(tiny_ckpt, base, precision="int8")
    repo = tmp_path / "repo"
    shutil.copytree(STDLIB / "json", repo, ignore=shutil.ignore_patterns("__pycache__"))
    p = argparse.ArgumentParser()
    add_arguments(p)
    report = finetune(p.parse_args([str(repo), "--model", str(base), "--out", str(tmp_path / "mine"), "--lr", "3",
                                    "--passes", "1", "--seq", "128", "--batch", "4", "--work", str(tmp_path / "w")]))
    assert not report["kept"] and report["history"][-1]["heldout_loss"] >= report["heldout_loss_before"]
    assert len(report["history"]) == 2   # stopped at the first check that was not better
    for name in ("model.int8.onnx", "card.json"):
        assert (tmp_path / "mine" / name).read_bytes() == (base / name).read_bytes()

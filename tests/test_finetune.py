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
    args = p.parse_args([str(repo), "--model", str(base), "--out", str(tmp_path / "mine"), "--minutes", "0.15",
                         "--seq", "128", "--batch", "4", "--work", str(tmp_path / "work")])
    report = finetune(args)
    assert report["files"]["heldout"] >= 1
    assert 0 <= report["heldout_line_exact_before"] <= 1 and 0 <= report["heldout_line_exact_after"] <= 1
    assert json.loads((tmp_path / "mine" / "finetune.json").read_text()) == report
    card = load(tmp_path / "mine").card
    assert card["finetuned_on"] == str(repo.resolve())
    assert card["training"]["tokens"] > json.loads((base / "card.json").read_text())["training"]["tokens"]

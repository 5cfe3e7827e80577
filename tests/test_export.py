"""ONNX export: parity with torch, the card, and clear errors for a damaged model directory."""
import json
import shutil

import pytest

from model.export import PARITY_ATOL
from runtime.session import ModelError, load, read_card


def test_export_parity_and_card(tiny_model_dir):
    card = json.loads((tiny_model_dir / "card.json").read_text())
    assert card["parity_max_abs_diff"] <= PARITY_ATOL
    assert set(card["files"]) == {"model.onnx", "model.int8.onnx", "tokenizer.json"}
    assert card["training"]["tokens"] > 0 and card["unigram_ce"] > 0
    assert {"masked_ce@0.15", "masked_ce@0.5", "masked_ce@0.85"} <= set(card["heldout"])


def test_loads_with_either_precision(tiny_model_dir):
    assert load(tiny_model_dir, prefer="int8", threads=1).model_file == "model.int8.onnx"
    assert load(tiny_model_dir, prefer="fp32", threads=1).model_file == "model.onnx"


def test_int8_export_with_and_without_the_training_weights(int8_dir, tiny_ckpt, tmp_path):
    from model.export import export
    assert set(json.loads((int8_dir / "card.json").read_text())["files"]) == \
        {"model.int8.onnx", "tokenizer.json", "weights.int8.safetensors"}     # what finetune and the twin start from
    card = export(tiny_ckpt, tmp_path / "twin", precision="int8", weights=False)   # served or evaluated only
    assert set(card["files"]) == {"model.int8.onnx", "tokenizer.json"}
    assert sorted(p.name for p in (tmp_path / "twin").iterdir()) == ["card.json", "model.int8.onnx", "tokenizer.json"]
    assert load(tmp_path / "twin", threads=1).model_file == "model.int8.onnx"


@pytest.mark.parametrize("damage", ["truncate", "delete", "modify"])
def test_damaged_model_file_gives_one_clear_error(tiny_model_dir, tmp_path, damage):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_model_dir, broken)
    target = broken / "model.onnx"
    if damage == "truncate":
        target.write_bytes(target.read_bytes()[:1000])
    elif damage == "delete":
        target.unlink()
    else:
        data = bytearray(target.read_bytes())
        data[-10] ^= 0xFF
        target.write_bytes(bytes(data))
    with pytest.raises(ModelError, match="model.onnx"):
        load(broken, prefer="fp32")


def test_missing_card_and_directory(tmp_path):
    with pytest.raises(ModelError, match="does not exist"):
        read_card(tmp_path / "nowhere")
    with pytest.raises(ModelError, match="card.json is missing"):
        read_card(tmp_path)

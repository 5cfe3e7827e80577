"""The exported graph's attention over cached keys, split in two parts (model/graph.py): every layer rewritten, the
same logits and keys/values as torch's export, and a model directory rewritten in place stays loadable with its
calibrator (tiny model, real ONNX Runtime sessions)."""
import json
import shutil

import numpy as np
import onnx
import onnxruntime as ort

from model.checkpoint import load_model
from model.export import CARD_FILE, INT8_FILE, MODEL_FILE, empty_cache, export_onnx
from model.graph import SPLIT_PREFIX, rewrite_file, rewrite_model_dir, split_cached_attention
from model.tokenizer import file_sha256
from runtime.session import load


def rewritten_layers(path) -> int:
    return len({n.name.split("/")[1] for n in onnx.load(str(path)).graph.node if n.name.startswith(SPLIT_PREFIX)})


def run(path, ids, positions, mask, past_k, past_v):
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {"input_ids": ids, "positions": positions, "attention_mask": mask, "past_keys": past_k,
                           "past_values": past_v, "logits_from": np.array(0, np.int64)})


def test_exports_split_every_layer_and_a_second_rewrite_finds_nothing(tiny_model_dir):
    layers = json.loads((tiny_model_dir / CARD_FILE).read_text())["config"]["n_layer"]
    for name in (MODEL_FILE, INT8_FILE):
        assert rewritten_layers(tiny_model_dir / name) == layers
        assert split_cached_attention(onnx.load(str(tiny_model_dir / name))) == 0


def test_the_split_graph_gives_torch_exports_logits_and_keys(tiny_ckpt, tmp_path):
    model, _ = load_model(tiny_ckpt)
    plain, split = tmp_path / "plain.onnx", tmp_path / "split.onnx"
    export_onnx(model, plain)
    shutil.copy(plain, split)
    assert rewrite_file(split) == model.cfg.n_layer and rewritten_layers(plain) == 0
    rng = np.random.default_rng(0)
    T, P, Q = 24, 17, 7
    ids = rng.integers(0, model.cfg.vocab_size, (2, T))
    mask = np.ones((2, T), bool)
    mask[1, 3] = mask[0, -1] = False        # a padded key in each row
    pos = np.broadcast_to(np.arange(T), (2, T)).copy()
    empty = empty_cache(model, 2).numpy()
    full = [run(p, ids, pos, mask, empty, empty) for p in (plain, split)]
    for a, b in zip(*full):                  # a whole sequence, nothing cached
        np.testing.assert_allclose(a, b, atol=1e-5)
    past_k, past_v = (np.ascontiguousarray(x[:, :, :, :P]) for x in full[0][1:])
    window = [run(p, ids[:, P:], pos[:, P:], mask, past_k, past_v) for p in (plain, split)]
    for a, b in zip(*window):                # its last Q positions against the first P's cached keys/values
        np.testing.assert_allclose(a, b, atol=1e-5)
    np.testing.assert_allclose(window[1][0], full[0][0][:, P:], atol=1e-4)
    assert window[1][0].shape[1] == Q


def test_rewriting_a_model_directory_keeps_its_card_and_calibrator_valid(tiny_ckpt, tiny_model_dir, tmp_path):
    out = tmp_path / "old"
    shutil.copytree(tiny_model_dir, out)
    model, _ = load_model(tiny_ckpt)
    export_onnx(model, out / MODEL_FILE)     # as exported before the rewrite existed
    card = json.loads((out / CARD_FILE).read_text())
    old = card["files"][MODEL_FILE] = file_sha256(out / MODEL_FILE)
    (out / CARD_FILE).write_text(json.dumps(card))
    (out / "calibrator.json").write_text(json.dumps({"features": ["min_logp"], "weights": [1.0], "bias": 0.0,
                                                     "model_sha256": old, "decoding_revision": 0}))
    done = rewrite_model_dir(out)
    assert done[MODEL_FILE] == model.cfg.n_layer and done[INT8_FILE] == 0   # the int8 graph was split already
    card = json.loads((out / CARD_FILE).read_text())
    assert card["files"][MODEL_FILE] == file_sha256(out / MODEL_FILE) != old
    assert card["graph"][MODEL_FILE]["rewritten_from_sha256"] == old
    assert json.loads((out / "calibrator.json").read_text())["model_sha256"] == card["files"][MODEL_FILE]
    loaded = load(out, prefer="fp32")        # verifies every digest in the card
    from runtime.confidence import Calibrator
    assert Calibrator.load(out, card["files"][MODEL_FILE]) is not None
    assert loaded.model_file == MODEL_FILE

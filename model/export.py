"""quicksilver export: checkpoint → model directory (model.onnx, optional model.int8.onnx, tokenizer.json, card.json)."""
from __future__ import annotations

import json
import platform
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch

from model.checkpoint import INT8_WEIGHTS_FILE, load_model, save_int8_weights
from model.graph import rewrite_file
from model.network import Transformer
from model.tokenizer import TOKENIZER_FILE, file_sha256

OPSET = 17
PARITY_ATOL = 2e-3            # max |logit difference| between torch fp32 and ONNX Runtime fp32
MODEL_FILE, INT8_FILE, CARD_FILE = "model.onnx", "model.int8.onnx", "card.json"
INPUT_NAMES = ["input_ids", "positions", "attention_mask", "past_keys", "past_values", "logits_from"]
OUTPUT_NAMES = ["logits", "keys", "values"]


class _Exported(torch.nn.Module):
    """The network as the runtime calls it (Transformer.forward_cached): explicit positions, a key mask over
    cached plus new keys, a key/value cache in and the new keys/values out, and logits only from position
    `logits_from` on (the decoding window), which saves the vocabulary projection over the fixed context."""

    def __init__(self, model: Transformer):
        super().__init__()
        self.model = model

    def forward(self, input_ids, positions, attention_mask, past_keys, past_values, logits_from):
        return self.model.forward_cached(input_ids, positions, attention_mask.bool(), past_keys, past_values,
                                         logits_from)


def empty_cache(model: Transformer, batch: int, length: int = 0) -> torch.Tensor:
    if hasattr(model, "empty_cache"):   # an imported network (model/imported.py) knows its key/value heads
        return model.empty_cache(batch, length)
    cfg = model.cfg
    return torch.zeros(cfg.n_layer, batch, cfg.n_head, length, cfg.d_model // cfg.n_head)


def export_onnx(model: Transformer, path: Path) -> None:
    model = model.float().eval()
    ids = torch.randint(0, model.cfg.vocab_size, (2, 16))
    positions = torch.arange(5, 21).expand(2, 16)
    mask = torch.ones(2, 21, dtype=torch.bool)
    past = empty_cache(model, 2, 5)
    with torch.no_grad():
        torch.onnx.export(
            _Exported(model), (ids, positions, mask, past, past, torch.tensor(3)), str(path), dynamo=False,
            opset_version=OPSET, input_names=INPUT_NAMES, output_names=OUTPUT_NAMES,
            dynamic_axes={"input_ids": {0: "batch", 1: "length"}, "positions": {0: "batch", 1: "length"},
                          "attention_mask": {0: "batch", 1: "keys"},
                          "past_keys": {1: "batch", 3: "past"}, "past_values": {1: "batch", 3: "past"},
                          "logits": {0: "batch", 1: "window"},
                          "keys": {1: "batch", 3: "length"}, "values": {1: "batch", 3: "length"}},
        )


def parity(model: Transformer, path: Path, lengths=(7, 33)) -> float:
    """Largest |torch − ONNX Runtime| logit difference over a few shapes (with padding, and a logits window),
    both in one pass and in two: the first part's keys/values fed back as the cache of the second."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    worst = 0.0
    g = torch.Generator().manual_seed(0)
    for T in lengths:
        ids = torch.randint(0, model.cfg.vocab_size, (2, T), generator=g)
        mask = torch.ones(2, T, dtype=torch.bool)
        mask[1, T // 2:] = False
        with torch.no_grad():
            ref = model(ids, mask).numpy()
        valid = mask.numpy()
        pos = np.broadcast_to(np.arange(T), (2, T)).copy()
        for start in (0, T // 3):
            empty = empty_cache(model, 2).numpy()
            got, keys, values = sess.run(None, {
                "input_ids": ids.numpy(), "positions": pos, "attention_mask": valid, "past_keys": empty,
                "past_values": empty, "logits_from": np.array(start, dtype=np.int64)})
            worst = max(worst, float(np.abs(ref[:, start:] - got)[valid[:, start:]].max()))
            if start:
                # the tail again, attending to the head's cached keys/values: the same logits
                tail = sess.run(None, {
                    "input_ids": ids.numpy()[:, start:], "positions": pos[:, start:], "attention_mask": valid,
                    "past_keys": np.ascontiguousarray(keys[:, :, :, :start]),
                    "past_values": np.ascontiguousarray(values[:, :, :, :start]),
                    "logits_from": np.array(0, dtype=np.int64)})[0]
                worst = max(worst, float(np.abs(ref[:, start:] - tail)[valid[:, start:]].max()))
    return worst


def quantize_int8(src: Path, dst: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8)


def phases(state: dict) -> list[dict]:
    """The training phases behind a checkpoint, earliest first: each warm start whose checkpoint is still on this
    machine (or, for a model directory, the phases its card lists), then the checkpoint itself. Each phase's
    held-out numbers come from the corpus it trained on (a lent GPU builds its own from that machine's packages),
    so curves of different phases are not one series."""
    chain, seen = [state], set()
    while (src := chain[0].get("init_from")) and src not in seen and (Path(src) / "state.json").exists():
        seen.add(src)
        chain.insert(0, json.loads((Path(src) / "state.json").read_text()))
    src = Path(chain[0].get("init_from") or ".")
    before = json.loads((src / CARD_FILE).read_text())["training"].get("phases", []) \
        if not (src / "state.json").exists() and (src / CARD_FILE).exists() else []
    return before + [{"objective": st["objective"], "device": st.get("device", "cpu"), "tokens": st["tokens"],
                      "seconds": round(st["seconds"], 1), "steps": st["step"], "mixture": st.get("mixture"),
                      **({"certainty": st["certainty"]} if st.get("certainty") else {}),
                      **({"corrupt": st["corrupt"]} if st.get("corrupt") else {}),
                      "unigram_ce": st.get("unigram_ce"), "heldout": st.get("heldout", {}),
                      "history": st.get("history", [])} for st in chain]


def write_card(out: Path, state: dict, extra: dict, name: str | None = None) -> dict:
    files = sorted(p.name for p in out.iterdir() if p.name != CARD_FILE)
    card = {
        "name": name or out.name,
        "config": state["config"],
        "objective": state["objective"],
        "tokenizer_sha256": file_sha256(out / TOKENIZER_FILE),
        "training": {
            "tokens": state.get("tokens_total", state["tokens"]),
            "seconds": round(state.get("seconds_total", state["seconds"]), 1),
            "steps": state["step"], "device": state.get("device", "cpu"),
            "init_from": state.get("init_from", ""), "weighting": state.get("weighting"),
            "mixture": state.get("mixture"), "history": state.get("history", []),
            "phases": phases(state),
        },
        "heldout": state.get("heldout", {}),
        "unigram_ce": state.get("unigram_ce"),
        "exported": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "export_host": f"{platform.machine()} {platform.processor()} python {sys.version.split()[0]} torch {torch.__version__}",
        **extra,
        "files": {name: file_sha256(out / name) for name in files},
    }
    (out / CARD_FILE).write_text(json.dumps(card, indent=1))
    return card


def export(ckpt: Path, out: Path, precision: str = "fp32", extra: dict | None = None, weights: bool = True) -> dict:
    """precision: 'fp32' (model.onnx), 'int8' (model.int8.onnx only) or 'both'. `weights`: with int8, also the int8
    training weights that `finetune` and `train --init-from` start from (an eval-only model, the twin, needs none)."""
    model, state = load_model(ckpt)
    tmp = out.with_name(out.name + ".export-tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    export_onnx(model, tmp / MODEL_FILE)
    rewrite_file(tmp / MODEL_FILE)   # attention against the cache without copying it (model/graph.py)
    diff = parity(model, tmp / MODEL_FILE)
    if diff > PARITY_ATOL:
        raise SystemExit(f"ONNX parity check failed: max logit difference {diff:.2e} > {PARITY_ATOL:.0e}")
    if precision in ("int8", "both"):
        quantize_int8(tmp / MODEL_FILE, tmp / INT8_FILE)
    if precision == "int8":  # the shipped model: int8 alone keeps model/default small
        (tmp / MODEL_FILE).unlink()
        if weights:
            save_int8_weights(model, tmp / INT8_WEIGHTS_FILE)  # lets `quicksilver finetune` start from it
    shutil.copy(ckpt / TOKENIZER_FILE, tmp / TOKENIZER_FILE)
    card = write_card(tmp, state, {"parity_max_abs_diff": diff, "parity_atol": PARITY_ATOL, **(extra or {})},
                      name=out.name)
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    return card


def add_arguments(p) -> None:
    p.add_argument("checkpoint", type=Path, help="checkpoint folder written by `quicksilver train`")
    p.add_argument("--out", type=Path, required=True, help="model directory to write (replaced if it exists)")
    p.add_argument("--precision", choices=["fp32", "int8", "both"], default="fp32",
                   help="fp32 model.onnx, int8 model.int8.onnx (dynamic quantisation) only, or both")
    p.add_argument("--hardware", default="", help="where the checkpoint was trained, for the card")
    p.add_argument("--no-weights", dest="weights", action="store_false",
                   help="with int8: leave out the int8 training weights (a model only served or evaluated)")


def run(args) -> None:
    card = export(args.checkpoint, args.out, args.precision, {"trained_on": args.hardware} if args.hardware else None,
                  args.weights)
    sizes = {n: (args.out / n).stat().st_size for n in card["files"]}
    print(json.dumps({"out": str(args.out), "parity_max_abs_diff": card["parity_max_abs_diff"],
                      "heldout": card["heldout"], "bytes": sizes}, indent=1))

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
from model.network import Transformer
from model.tokenizer import TOKENIZER_FILE, file_sha256

OPSET = 17
PARITY_ATOL = 2e-3            # max |logit difference| between torch fp32 and ONNX Runtime fp32
MODEL_FILE, INT8_FILE, CARD_FILE = "model.onnx", "model.int8.onnx", "card.json"
INPUT_NAMES = ["input_ids", "attention_mask", "logits_from"]


class _Exported(torch.nn.Module):
    """The network as the runtime calls it: a key mask, and logits only from position `logits_from` on
    (the decoding window), which saves the vocabulary projection over the fixed context."""

    def __init__(self, model: Transformer):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, logits_from):
        return self.model(input_ids, attention_mask.bool(), logits_from)


def export_onnx(model: Transformer, path: Path) -> None:
    model = model.float().eval()
    ids = torch.randint(0, model.cfg.vocab_size, (2, 16))
    mask = torch.ones(2, 16, dtype=torch.bool)
    with torch.no_grad():
        torch.onnx.export(
            _Exported(model), (ids, mask, torch.tensor(3)), str(path), dynamo=False, opset_version=OPSET,
            input_names=INPUT_NAMES, output_names=["logits"],
            dynamic_axes={"input_ids": {0: "batch", 1: "length"}, "attention_mask": {0: "batch", 1: "length"},
                          "logits": {0: "batch", 1: "window"}},
        )


def parity(model: Transformer, path: Path, lengths=(7, 33)) -> float:
    """Largest |torch − ONNX Runtime| logit difference over a few shapes (with padding, and a logits window)."""
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
        for start in (0, T // 3):
            got = sess.run(None, {"input_ids": ids.numpy(), "attention_mask": mask.numpy(),
                                  "logits_from": np.array(start, dtype=np.int64)})[0]
            worst = max(worst, float(np.abs(ref[:, start:] - got)[mask.numpy()[:, start:]].max()))
    return worst


def quantize_int8(src: Path, dst: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8)


def write_card(out: Path, state: dict, extra: dict) -> dict:
    files = sorted(p.name for p in out.iterdir() if p.name != CARD_FILE)
    card = {
        "name": out.name,
        "config": state["config"],
        "objective": state["objective"],
        "tokenizer_sha256": file_sha256(out / TOKENIZER_FILE),
        "training": {
            "tokens": state.get("tokens_total", state["tokens"]),
            "seconds": round(state.get("seconds_total", state["seconds"]), 1),
            "steps": state["step"], "device": state.get("device", "cpu"),
            "init_from": state.get("init_from", ""), "weighting": state.get("weighting"),
            "mixture": state.get("mixture"), "history": state.get("history", []),
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


def export(ckpt: Path, out: Path, precision: str = "fp32", extra: dict | None = None) -> dict:
    """precision: 'fp32' (model.onnx), 'int8' (model.int8.onnx only) or 'both'."""
    model, state = load_model(ckpt)
    tmp = out.with_name(out.name + ".export-tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    export_onnx(model, tmp / MODEL_FILE)
    diff = parity(model, tmp / MODEL_FILE)
    if diff > PARITY_ATOL:
        raise SystemExit(f"ONNX parity check failed: max logit difference {diff:.2e} > {PARITY_ATOL:.0e}")
    if precision in ("int8", "both"):
        quantize_int8(tmp / MODEL_FILE, tmp / INT8_FILE)
    if precision == "int8":  # the shipped model: int8 alone keeps model/default small
        (tmp / MODEL_FILE).unlink()
        save_int8_weights(model, tmp / INT8_WEIGHTS_FILE)  # lets `quicksilver finetune` start from it
    shutil.copy(ckpt / TOKENIZER_FILE, tmp / TOKENIZER_FILE)
    card = write_card(tmp, state, {"parity_max_abs_diff": diff, "parity_atol": PARITY_ATOL, **(extra or {})})
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


def run(args) -> None:
    card = export(args.checkpoint, args.out, args.precision, {"trained_on": args.hardware} if args.hardware else None)
    sizes = {n: (args.out / n).stat().st_size for n in card["files"]}
    print(json.dumps({"out": str(args.out), "parity_max_abs_diff": card["parity_max_abs_diff"],
                      "heldout": card["heldout"], "bytes": sizes}, indent=1))

"""Load a model directory (verified against its card) into an ONNX Runtime session with the best provider."""
from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from model.tokenizer import TOKENIZER_FILE, CodeTokenizer
from runtime.conventions import Conventions

log = logging.getLogger("quicksilver.runtime")

DEFAULT_MODEL_DIR = Path(__file__).resolve().parent.parent / "model" / "default"
CARD_FILE = "card.json"
# preference order when several are present: `prefer` names the first; imported models may come in fp16 or int4
MODEL_FILES = {"int8": "model.int8.onnx", "fp32": "model.onnx", "fp16": "model.fp16.onnx", "int4": "model.int4.onnx"}
GPU_PROVIDER = "CUDAExecutionProvider"
CPU_PROVIDER = "CPUExecutionProvider"
WARMUP_LENGTH = 16


class ModelError(Exception):
    """A model directory that cannot be used; the message names the file and what to do."""


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_card(model_dir: Path, verify: bool = True) -> dict:
    """The card, after checking that every file it lists is present, complete and unchanged."""
    card_path = model_dir / CARD_FILE
    if not model_dir.is_dir():
        raise ModelError(f"model directory {model_dir} does not exist; pass --model DIR or run `quicksilver export`")
    if not card_path.exists():
        raise ModelError(f"{card_path} is missing: every model directory needs the card written by `quicksilver export` "
                         "(a Hugging Face checkpoint must first go through `quicksilver import`)")
    try:
        card = json.loads(card_path.read_text())
    except json.JSONDecodeError as e:
        raise ModelError(f"{card_path} is not valid JSON ({e}); re-export the model") from None
    for name, digest in (card.get("files") or {}).items():
        path = model_dir / name
        if not path.exists():
            raise ModelError(f"{path} is missing (listed in the card); re-export or re-download the model")
        if verify and _sha256(path) != digest:
            raise ModelError(f"{path} does not match the sha256 in {CARD_FILE} (truncated or modified); re-export it")
    return card


def list_in_card(model_dir: Path, name: str) -> None:
    """Record a file written beside a model (its calibrator) in the card, so the loader checks it like the rest."""
    card_path = Path(model_dir) / CARD_FILE
    card = json.loads(card_path.read_text())
    card.setdefault("files", {})[name] = _sha256(Path(model_dir) / name)
    card_path.write_text(json.dumps(card, indent=1, ensure_ascii=False))


@dataclass
class LoadedModel:
    model_dir: Path
    card: dict
    tokenizer: CodeTokenizer
    session: ort.InferenceSession
    provider: str
    model_file: str
    card_sha256: str
    conventions: Conventions = Conventions()
    device: str = "cpu"   # where cached keys/values stay between passes: "cuda" on the CUDA provider
    bind: bool = False    # IO binding: caches uploaded once and bound where they live (on with CUDA; tests set it
                          # on the CPU to run the same path)
    flops: float = 0.0  # multiply-adds ×2 done by the passes so far (matmuls only): what the benchmark divides by time

    def pass_flops(self, batch: int, new: int, past: int, logit_positions: int) -> float:
        """Matmul FLOPs of one pass: `new` positions per row against `past` cached keys, logits at `logit_positions`."""
        c = self.card["config"]
        d, layers = c["d_model"], c["n_layer"]
        hidden = c.get("d_ff") or 64 * math.ceil(8 * d / 3 / 64)  # the SwiGLU width (the shipped network's rule)
        heads, kv_heads, head_dim = self.heads
        attn_width = heads * head_dim
        weights = layers * (2 * d * attn_width + 2 * d * kv_heads * head_dim + 3 * d * hidden)  # q, o, k, v, mlp
        attention = layers * 2 * 2 * new * (past + new) * attn_width  # scores and the weighted sum
        return batch * (2 * weights * new + attention + 2 * d * c["vocab_size"] * logit_positions)

    @property
    def cached(self) -> bool:
        """Whether the graph takes a key/value cache (every model `quicksilver export` writes now does)."""
        return "past_keys" in {i.name for i in self.session.get_inputs()}

    @property
    def heads(self) -> tuple[int, int, int]:
        """(query heads, key/value heads, head width): imported models may share keys/values between heads."""
        c = self.card["config"]
        return c["n_head"], c.get("n_kv_head", c["n_head"]), c.get("head_dim", c["d_model"] // c["n_head"])

    @property
    def vocab(self) -> int:
        """The width of the logits (an imported embedding may have more rows than its tokenizer has tokens)."""
        return int(self.card["config"]["vocab_size"])

    def empty_cache(self, batch: int) -> np.ndarray:
        _, kv_heads, head_dim = self.heads
        return np.zeros((self.card["config"]["n_layer"], batch, kv_heads, 0, head_dim), np.float32)

    def forward(self, ids: np.ndarray, attention_mask: np.ndarray, logits_from: int) -> np.ndarray:
        """(B, T) ids → (B, T - logits_from, V) float32 logits; logits[:, i] predict the token after position logits_from + i."""
        if not self.cached:  # a graph exported before the cache existed
            self.flops += self.pass_flops(ids.shape[0], ids.shape[1], 0, ids.shape[1] - logits_from)
            return self.session.run(["logits"], {"input_ids": ids.astype(np.int64, copy=False),
                                                 "attention_mask": attention_mask.astype(bool, copy=False),
                                                 "logits_from": np.array(logits_from, dtype=np.int64)})[0]
        positions = np.broadcast_to(np.arange(ids.shape[1], dtype=np.int64), ids.shape)
        empty = self.empty_cache(len(ids))
        return self.forward_kv(ids, positions, attention_mask, empty, empty, logits_from)[0]

    def forward_kv(self, ids: np.ndarray, positions: np.ndarray, attention_mask: np.ndarray, past_keys,
                   past_values, logits_from: int, new_kv: bool = True) -> tuple[np.ndarray, object, object]:
        """One pass with a key/value cache: ids and positions (B, T); attention_mask (B, P + T) over the P cached
        keys then the new ones; past (n_layer, B, kv heads, P, head_dim), numpy or already on the device
        (`on_device`). → logits from logits_from, and the new positions' keys and values (n_layer, B, kv heads,
        T, head_dim): numpy, or left on the device when the caller does not want them (`new_kv` False)."""
        inputs = {"input_ids": ids.astype(np.int64, copy=False), "positions": positions.astype(np.int64, copy=False),
                  "attention_mask": attention_mask.astype(bool, copy=False),
                  "logits_from": np.array(logits_from, dtype=np.int64)}
        if not self.bind and isinstance(past_keys, np.ndarray):
            logits, keys, values = self.session.run(None, {**inputs, "past_keys": past_keys, "past_values": past_values})
        else:   # IO binding: the cache is bound where it lives; only the logits (and new keys if wanted) come back
            binding = self.session.io_binding()
            for name, value in (*inputs.items(), ("past_keys", past_keys), ("past_values", past_values)):
                if isinstance(value, ort.OrtValue):
                    binding.bind_ortvalue_input(name, value)
                else:
                    binding.bind_cpu_input(name, np.require(value, requirements="C"))   # (keeps 0-d arrays 0-d)
            binding.bind_output("logits", "cpu")
            for name in ("keys", "values"):
                binding.bind_output(name, "cpu" if new_kv else self.device)
            self.session.run_with_iobinding(binding)
            out = binding.get_outputs()
            logits = out[0].numpy()
            keys, values = (out[1].numpy(), out[2].numpy()) if new_kv else (out[1], out[2])
        past_len = past_keys.shape()[3] if isinstance(past_keys, ort.OrtValue) else past_keys.shape[3]
        self.flops += self.pass_flops(ids.shape[0], ids.shape[1], past_len, logits.shape[1])
        return logits, keys, values

    def on_device(self, array: np.ndarray):
        """An array as passes read it: uploaded once to the GPU with the CUDA provider, else the array itself."""
        return ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(array), self.device, 0) if self.bind else array


def load(model_dir: str | Path | None = None, prefer: str = "int8", threads: int = 0, verify: bool = True) -> LoadedModel:
    """Load and warm up a model directory. prefer: a key of MODEL_FILES (whichever file exists is used otherwise)."""
    model_dir = Path(model_dir or DEFAULT_MODEL_DIR)
    card = read_card(model_dir, verify)
    if prefer not in MODEL_FILES:
        raise ValueError(f"prefer must be one of {sorted(MODEL_FILES)}, not {prefer!r}")
    order = [MODEL_FILES[prefer]] + [f for f in MODEL_FILES.values() if f != MODEL_FILES[prefer]]
    model_file = next((f for f in order if (model_dir / f).exists()), None)
    if model_file is None:
        raise ModelError(f"no {' or '.join(MODEL_FILES.values())} in {model_dir}; run `quicksilver export` "
                         "(or `quicksilver import` for a Hugging Face checkpoint)")
    try:
        conventions = Conventions.from_card(card)
    except (TypeError, ValueError) as e:
        raise ModelError(f"{model_dir / CARD_FILE}: {e}") from None
    try:
        tokenizer = CodeTokenizer.load(model_dir / TOKENIZER_FILE, conventions.special_tokens)
    except Exception as e:
        raise ModelError(f"{model_dir / TOKENIZER_FILE} cannot be loaded ({e}); re-export the model") from None
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads or len(os.sched_getaffinity(0))
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    providers = [p for p in (GPU_PROVIDER, CPU_PROVIDER) if p in ort.get_available_providers()]
    try:
        session = ort.InferenceSession(str(model_dir / model_file), opts, providers=providers)
    except Exception as e:
        raise ModelError(f"ONNX Runtime cannot load {model_dir / model_file} ({str(e)[:200]}); re-export it") from None
    provider = session.get_providers()[0]
    if GPU_PROVIDER in providers and provider != GPU_PROVIDER:
        log.warning("onnxruntime-gpu is installed but the CUDA provider did not start (no GPU, or a CUDA/cuDNN "
                    "mismatch): running on the CPU")
    loaded = LoadedModel(model_dir, card, tokenizer, session, provider, model_file, _sha256(model_dir / CARD_FILE),
                         conventions, device="cuda" if provider == GPU_PROVIDER else "cpu",
                         bind=provider == GPU_PROVIDER)
    t0 = time.perf_counter()
    loaded.forward(np.full((1, WARMUP_LENGTH), tokenizer.eos_id), np.ones((1, WARMUP_LENGTH), bool), WARMUP_LENGTH - 1)
    log.info("loaded %s (%s) on %s with %d threads; warm-up %.0f ms", model_dir, model_file, provider,
             opts.intra_op_num_threads, 1000 * (time.perf_counter() - t0))
    return loaded

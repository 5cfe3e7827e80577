"""Checkpoints as safetensors: weights split into files of bounded size, optimiser state, and a JSON state file."""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from model.network import ModelConfig, Transformer

STATE_FILE = "state.json"
OPTIM_FILE = "optim.safetensors"
WEIGHTS_GLOB = "model-*.safetensors"
DEFAULT_SHARD_BYTES = 15 * 2**20  # under the 16 MB a lent accelerator may send back per file


def save_weights(model: Transformer, out: Path, dtype: torch.dtype = torch.float32,
                 shard_bytes: int = DEFAULT_SHARD_BYTES) -> list[Path]:
    """Write the model's tensors (tied weights once) into model-00000.safetensors, model-00001... each <= shard_bytes."""
    for old in out.glob(WEIGHTS_GLOB):
        old.unlink()
    state = {k: v.detach().to("cpu", dtype).contiguous() for k, v in model.state_dict().items() if k != "head.weight"}
    shards, current, size = [], {}, 0
    for k, v in state.items():
        nbytes = v.numel() * v.element_size()
        if current and size + nbytes > shard_bytes:
            shards.append(current)
            current, size = {}, 0
        if nbytes > shard_bytes:  # split one large tensor by rows
            rows = max(1, shard_bytes // (v[0].numel() * v.element_size()))
            for i, part in enumerate(v.split(rows)):
                shards.append({f"{k}@part{i}": part.contiguous()})
            continue
        current[k] = v
        size += nbytes
    if current:
        shards.append(current)
    paths = []
    for i, shard in enumerate(shards):
        paths.append(out / f"model-{i:05d}.safetensors")
        save_file(shard, str(paths[-1]))
    return paths


def load_weights(ckpt: Path) -> dict[str, torch.Tensor]:
    files = sorted(ckpt.glob(WEIGHTS_GLOB))
    if not files:
        raise FileNotFoundError(f"no {WEIGHTS_GLOB} in {ckpt}: is it a quicksilver checkpoint folder?")
    merged: dict[str, torch.Tensor] = {}
    parts: dict[str, list[tuple[int, torch.Tensor]]] = {}
    for f in files:
        for k, v in load_file(str(f)).items():
            if "@part" in k:
                name, i = k.split("@part")
                parts.setdefault(name, []).append((int(i), v))
            else:
                merged[k] = v
    for name, pieces in parts.items():
        merged[name] = torch.cat([v for _, v in sorted(pieces, key=lambda p: p[0])])
    merged["head.weight"] = merged["embed.weight"]
    return {k: v.float() for k, v in merged.items()}


def read_state(ckpt: Path) -> dict:
    return json.loads((ckpt / STATE_FILE).read_text())


def load_model(ckpt: Path, causal: bool | None = None) -> tuple[Transformer, dict]:
    """The network from a checkpoint folder; `causal` overrides the attention kind (for warm starts)."""
    state = read_state(ckpt)
    cfg = ModelConfig.from_dict(state["config"])
    if causal is not None:
        cfg.causal = causal
    model = Transformer(cfg)
    model.load_state_dict(load_weights(ckpt))
    return model, state


def save_optimizer(opt: torch.optim.Optimizer, rng_torch: torch.Tensor, out: Path) -> None:
    sd = opt.state_dict()
    tensors = {f"state.{i}.{k}": v.detach().cpu().contiguous() for i, s in sd["state"].items() for k, v in s.items()}
    tensors["rng.torch"] = rng_torch.cpu()
    save_file(tensors, str(out / OPTIM_FILE), metadata={"param_groups": json.dumps(sd["param_groups"])})


def load_optimizer(opt: torch.optim.Optimizer, ckpt: Path, device) -> torch.Tensor:
    """Restore the optimiser in place; returns the saved torch RNG state."""
    from safetensors import safe_open

    with safe_open(str(ckpt / OPTIM_FILE), "pt") as f:
        groups = json.loads(f.metadata()["param_groups"])
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    state: dict[int, dict] = {}
    for k, v in tensors.items():
        if k.startswith("state."):
            _, i, name = k.split(".", 2)
            state.setdefault(int(i), {})[name] = v if name == "step" else v.to(device)
    opt.load_state_dict({"state": state, "param_groups": groups})
    return tensors["rng.torch"]


INT8_WEIGHTS_FILE = "weights.int8.safetensors"


def save_int8_weights(model: Transformer, path: Path) -> None:
    """Compact training weights for a model directory: int8 per output row with fp16 scales (for finetune)."""
    tensors = {}
    for k, v in model.state_dict().items():
        if k == "head.weight":
            continue
        v = v.detach().float().cpu()
        if v.dim() == 2:
            scale = (v.abs().amax(dim=1, keepdim=True) / 127).clamp(min=1e-8)
            tensors[k + ".q"] = torch.round(v / scale).to(torch.int8).contiguous()
            tensors[k + ".scale"] = scale.half().contiguous()
        else:
            tensors[k] = v.half().contiguous()
    save_file(tensors, str(path))


def load_int8_weights(path: Path, config: dict) -> Transformer:
    """The network from a file written by `save_int8_weights` (the head is tied to the embedding)."""
    raw = load_file(str(path))
    state = {}
    for k, v in raw.items():
        if k.endswith(".q"):
            name = k[:-2]
            state[name] = v.float() * raw[name + ".scale"].float()
        elif not k.endswith(".scale"):
            state[k] = v.float()
    state["head.weight"] = state["embed.weight"]
    model = Transformer(ModelConfig.from_dict(config))
    model.load_state_dict(state)
    return model


def checkpoint_from_model_dir(model_dir: Path, out: Path) -> Path:
    """Rebuild a training checkpoint folder from an exported model directory's int8 weights and card."""
    card = json.loads((model_dir / "card.json").read_text())
    if not (model_dir / INT8_WEIGHTS_FILE).exists():
        raise FileNotFoundError(f"{model_dir / INT8_WEIGHTS_FILE} is missing: export with --precision int8 to finetune")
    out.mkdir(parents=True, exist_ok=True)
    save_weights(load_int8_weights(model_dir / INT8_WEIGHTS_FILE, card["config"]), out)
    t = card["training"]
    (out / STATE_FILE).write_text(json.dumps({
        "config": card["config"], "objective": card["objective"], "step": t["steps"], "tokens": t["tokens"],
        "seconds": t["seconds"], "tokens_total": t["tokens"], "seconds_total": t["seconds"], "history": t["history"],
        "device": t["device"]}))
    return out

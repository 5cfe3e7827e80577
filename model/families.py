"""The open-weight diffusion coder families `quicksilver import` knows: how each one's Hugging Face checkpoint is
laid out (config keys, tensor names) and the conventions the engine must follow to decode it (runtime/conventions.py:
whether logits are shifted, which tokens mask, end and pad a middle). Read from each family's published modeling
and generation code; each entry says where. Adding a family is adding an entry here.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from model.imported import ImportedConfig


class CheckpointError(ValueError):
    """A checkpoint that cannot be imported; the message says what is wrong and what to do."""


def _qwen2_config(cfg: dict) -> ImportedConfig:
    heads = cfg["num_attention_heads"]
    return ImportedConfig(
        vocab_size=cfg["vocab_size"], n_layer=cfg["num_hidden_layers"], n_head=heads,
        n_kv_head=cfg.get("num_key_value_heads") or heads,
        head_dim=cfg.get("head_dim") or cfg["hidden_size"] // heads, d_model=cfg["hidden_size"],
        d_ff=cfg["intermediate_size"], rope_theta=float(cfg.get("rope_theta", 10000.0)),
        rms_eps=float(cfg.get("rms_norm_eps", 1e-6)), qkv_bias=True,
        tied=bool(cfg.get("tie_word_embeddings", False)), max_len=int(cfg.get("max_position_embeddings", 32768)))


def _qwen2_names(i: int | None) -> dict[str, str]:
    """Our module name → the checkpoint's tensor name (Qwen2ForCausalLM / DreamModel)."""
    if i is None:
        return {"embed.weight": "model.embed_tokens.weight", "norm.weight": "model.norm.weight",
                "head.weight": "lm_head.weight"}
    p = f"model.layers.{i}."
    names = {f"layers.{i}.attn_norm.weight": p + "input_layernorm.weight",
             f"layers.{i}.mlp_norm.weight": p + "post_attention_layernorm.weight",
             f"layers.{i}.o.weight": p + "self_attn.o_proj.weight"}
    for ours in "qkv":
        names[f"layers.{i}.{ours}.weight"] = p + f"self_attn.{ours}_proj.weight"
        names[f"layers.{i}.{ours}.bias"] = p + f"self_attn.{ours}_proj.bias"
    for ours in ("gate", "up", "down"):
        names[f"layers.{i}.{ours}.weight"] = p + f"mlp.{ours}_proj.weight"
    return names


def _llada_config(cfg: dict) -> ImportedConfig:
    heads = cfg["n_heads"]
    bias = bool(cfg.get("include_bias", False) or cfg.get("include_qkv_bias", False))
    return ImportedConfig(
        vocab_size=cfg.get("embedding_size") or cfg["vocab_size"], n_layer=cfg["n_layers"], n_head=heads,
        n_kv_head=cfg.get("n_kv_heads") or heads, head_dim=cfg["d_model"] // heads, d_model=cfg["d_model"],
        d_ff=cfg["mlp_hidden_size"], rope_theta=float(cfg.get("rope_theta", 10000.0)),
        rms_eps=float(cfg.get("rms_norm_eps", 1e-5)), qkv_bias=bias, tied=bool(cfg.get("weight_tying", False)),
        max_len=int(cfg.get("max_sequence_length", 4096)))


def _llada_names(i: int | None) -> dict[str, str]:
    """Our module name → the checkpoint's tensor name (modeling_llada.py's LLaDALlamaBlock: ff_proj is the gate,
    up_proj the up projection, ff_out the down projection; the model's own ff_out is the output head)."""
    t = "model.transformer."
    if i is None:
        return {"embed.weight": t + "wte.weight", "norm.weight": t + "ln_f.weight", "head.weight": t + "ff_out.weight"}
    p = f"{t}blocks.{i}."
    names = {f"layers.{i}.attn_norm.weight": p + "attn_norm.weight", f"layers.{i}.mlp_norm.weight": p + "ff_norm.weight",
             f"layers.{i}.o.weight": p + "attn_out.weight", f"layers.{i}.gate.weight": p + "ff_proj.weight",
             f"layers.{i}.up.weight": p + "up_proj.weight", f"layers.{i}.down.weight": p + "ff_out.weight"}
    for ours in "qkv":
        names[f"layers.{i}.{ours}.weight"] = p + f"{ours}_proj.weight"
        names[f"layers.{i}.{ours}.bias"] = p + f"{ours}_proj.bias"
    return names


@dataclass(frozen=True)
class Family:
    name: str
    model_types: tuple[str, ...]        # config.json model_type values that mean this family
    base: str                           # the transformers architecture with the same forward ("qwen2" / "llama")
    config: Callable[[dict], ImportedConfig]
    names: Callable[[int | None], dict[str, str]]
    shift: int                          # 1: output i predicts token i + 1 (Dream's generation shifts its logits)
    special_tokens: dict = field(default_factory=dict)   # role → token (model/tokenizer.py ROLES)
    mask_key: str = "mask_token_id"     # the config.json key holding the mask id (checked against the tokenizer)
    marker: str | None = None           # a token only this family's tokenizer has (tells apart families that share
                                        # a model_type: DiffuCoder's <|dlm_pad|>, Open-dCoder's <M>)
    source: str = ""


QWEN2_TOKENS = {"mask": "<|mask|>", "eos": "<|endoftext|>", "eom": "<|endoftext|>", "pad": "<|endoftext|>",
                "bos": "<|endoftext|>", "fim_prefix": None, "fim_suffix": None, "fim_middle": None}

FAMILIES = {
    # DiffuCoder ships Dream's modeling code (below) but pads a short answer with its own <|dlm_pad|>, which it
    # alone has (apple/ml-diffucoder's README cuts generations at it).
    "diffucoder": Family("diffucoder", ("Dream",), "qwen2", _qwen2_config, _qwen2_names, shift=1,
                         special_tokens={**QWEN2_TOKENS, "eom": "<|dlm_pad|>"}, marker="<|dlm_pad|>",
                         source="apple/ml-diffucoder (Dream's modeling code)"),
    # Dream-v0 and Dream-Coder: Dream's modeling code (model_type "Dream"): Qwen2 weights and names, full attention
    # (DreamSdpaAttention, is_causal=False), logits shifted by one in generation_utils.py (`logits =
    # torch.cat([logits[:, :1], logits[:, :-1]], dim=1)`), <|mask|> as the mask, <|endoftext|> after the answer.
    # (DreamOn's <|expand|>/<|delete|> length tokens are not used: it is served as a fixed-window Dream model.)
    "dream": Family("dream", ("Dream",), "qwen2", _qwen2_config, _qwen2_names, shift=1,
                    special_tokens=QWEN2_TOKENS,
                    source="DreamLM/Dream (modeling_dream.py, generation_utils.py); DreamLM/Dream-Coder"),
    # Open-dCoder (Open-dLLM): a stock Qwen2ForCausalLM checkpoint (model_type "qwen2", tied embeddings) trained
    # with Dream's shifted objective and `is_causal=False`; its mask is the added "<M>" (not in config.json).
    # A Qwen2 config without that token is a plain autoregressive Qwen2, which is not a diffusion coder.
    "open-dcoder": Family("open-dcoder", ("qwen2",), "qwen2", _qwen2_config, _qwen2_names, shift=1,
                          special_tokens={**QWEN2_TOKENS, "mask": "<M>"}, marker="<M>",
                          source="pengzhangzhi/Open-dLLM (veomni qwen2 modeling, generation_utils.py, eval_infill.py)"),
    # LLaDA: its own modeling_llada.py (model_type "llada"), LLaMA-like blocks, attention without a causal mask,
    # logits in place (generate.py reads the output at a masked position as that position's prediction),
    # <|mdm_mask|> (126336) as the mask, <|endoftext|> (126081) after the answer, <|startoftext|> first.
    "llada": Family("llada", ("llada",), "llama", _llada_config, _llada_names, shift=0,
                    special_tokens={"mask": "<|mdm_mask|>", "eos": "<|endoftext|>", "eom": "<|endoftext|>",
                                    "pad": "<|endoftext|>", "bos": "<|startoftext|>", "fim_prefix": None,
                                    "fim_suffix": None, "fim_middle": None},
                    source="ML-GSAI/LLaDA (modeling_llada.py, configuration_llada.py, generate.py)"),
}


def detect(cfg: dict, tokens: set[str], name: str | None = None) -> Family:
    """The family of a checkpoint: the one named, else the one its config.json's model_type means (a family with
    a marker token only when the tokenizer has it: `tokens` are the tokenizer's added tokens)."""
    if name is not None:
        if name not in FAMILIES:
            raise CheckpointError(f"unknown family {name!r}; supported: {', '.join(FAMILIES)}")
        return FAMILIES[name]
    model_type = cfg.get("model_type")
    for family in FAMILIES.values():
        if model_type in family.model_types and (family.marker is None or family.marker in tokens):
            return family
    hint = " (and its tokenizer has no <M> mask token: an autoregressive Qwen2?)" if model_type == "qwen2" else ""
    raise CheckpointError(f"config.json model_type {model_type!r} is not a supported diffusion family{hint}; "
                          f"supported: {', '.join(FAMILIES)} (--family names one)")

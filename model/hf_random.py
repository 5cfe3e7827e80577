"""Random checkpoints in each importable family's exact Hugging Face layout (its config.json keys, tensor
names, bf16 safetensors shards with an index, a tokenizer.json with the family's special tokens at the end of the
vocabulary), and the reference forward they must match: the `transformers` implementation of the base
architecture (Qwen2 / LLaMA) with full bidirectional attention. Tiny ones test `quicksilver import`
(tests/test_import.py); one at a real model's shape measures an imported model's size and speed
(evals/imported.py). Nothing is downloaded; needs `transformers` (the dev extra)."""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

ROOT = Path(__file__).resolve().parent.parent   # the tokenizers are trained on runtime/*.py
# Qwen2's pre-tokenizer regex (tokenizer.json of Qwen2.5), so healing sees the same pieces a real one makes
QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
               r"|\s+(?!\S)|\s+")
QWEN2_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|fim_prefix|>", "<|fim_middle|>",
                  "<|fim_suffix|>", "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>"]
SPECIALS = {
    "dream": QWEN2_SPECIALS + ["<|beginoftext|>", "<|mask|>"],
    "diffucoder": QWEN2_SPECIALS + ["<|beginoftext|>", "<|mask|>", "<|dlm_pad|>"],
    "open-dcoder": QWEN2_SPECIALS + ["<M>"],
    "llada": ["<|startoftext|>", "<|endoftext|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>",
              "<|mdm_mask|>"],
}
MASK = {"dream": "<|mask|>", "diffucoder": "<|mask|>", "open-dcoder": "<M>", "llada": "<|mdm_mask|>"}
FAMILIES = tuple(SPECIALS)
TINY = dict(hidden=64, layers=2, heads=4, kv_heads=2, ff=96, rows=None)


def write_tokenizer(path: Path, family: str, vocab: int = 320) -> Tokenizer:
    """A small byte-level BPE trained on this repository's runtime code, the family's special tokens appended."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(QWEN2_SPLIT, behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    texts = [p.read_text() for p in sorted((ROOT / "runtime").glob("*.py"))]
    tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=vocab, show_progress=False,
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok.add_special_tokens(SPECIALS[family])
    tok.save(str(path))
    return tok


def _randomize(model: torch.nn.Module, seed: int) -> None:
    """Weights as large as trained ones are (std 1.2/√fan-in, norms near 1; the default init is nearly silent, so a
    wrong layout would hardly change the logits), rounded to bf16 as the shards store them."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1 + 0.2 * torch.randn(p.shape, generator=g))
            else:
                fan_in = p.shape[-1] if p.dim() > 1 and "embed" not in name else 64
                p.copy_(1.2 / fan_in ** 0.5 * torch.randn(p.shape, generator=g))
            p.copy_(p.bfloat16().float())


def _save_shards(out: Path, tensors: dict[str, torch.Tensor]) -> None:
    """Two bf16 shards and the index that names them, as `save_pretrained` lays a sharded checkpoint out."""
    names = sorted(tensors)
    half = len(names) // 2
    weight_map = {}
    for k, part in enumerate((names[:half], names[half:]), 1):
        shard = f"model-{k:05d}-of-00002.safetensors"
        save_file({n: tensors[n].to(torch.bfloat16).contiguous() for n in part}, str(out / shard),
                  metadata={"format": "pt"})
        weight_map.update({n: shard for n in part})
    total = sum(t.numel() * 2 for t in tensors.values())
    (out / "model.safetensors.index.json").write_text(json.dumps({"metadata": {"total_size": total},
                                                                  "weight_map": weight_map}, indent=2))


def write_checkpoint(out: Path, family: str, seed: int = 0, size: dict | None = None):
    """The checkpoint directory; returns the reference model (transformers, eval mode). `size`: TINY's keys
    (rows: the embedding's rows; default just past the tokenizer's, padded as real tables are)."""
    out.mkdir(parents=True, exist_ok=True)
    tok = write_tokenizer(out / "tokenizer.json", family)
    s = {**TINY, **(size or {})}
    rows = s["rows"] or -(-tok.get_vocab_size() // 64) * 64 + 64
    mask_id = tok.token_to_id(MASK[family])
    if family == "llada":
        from transformers import LlamaConfig, LlamaForCausalLM
        ref = LlamaForCausalLM(LlamaConfig(
            vocab_size=rows, hidden_size=s["hidden"], intermediate_size=s["ff"], num_hidden_layers=s["layers"],
            num_attention_heads=s["heads"], num_key_value_heads=s["kv_heads"], rms_norm_eps=1e-5,
            rope_theta=500000.0, tie_word_embeddings=False, attention_bias=False, mlp_bias=False))
        _randomize(ref, seed)
        sd = ref.state_dict()
        t = "model.transformer."
        tensors = {t + "wte.weight": sd["model.embed_tokens.weight"], t + "ln_f.weight": sd["model.norm.weight"],
                   t + "ff_out.weight": sd["lm_head.weight"]}
        for i in range(s["layers"]):
            p, b = f"model.layers.{i}.", f"{t}blocks.{i}."
            for theirs, hf in (("attn_norm", "input_layernorm"), ("ff_norm", "post_attention_layernorm"),
                               ("q_proj", "self_attn.q_proj"), ("k_proj", "self_attn.k_proj"),
                               ("v_proj", "self_attn.v_proj"), ("attn_out", "self_attn.o_proj"),
                               ("ff_proj", "mlp.gate_proj"), ("up_proj", "mlp.up_proj"), ("ff_out", "mlp.down_proj")):
                tensors[b + theirs + ".weight"] = sd[p + hf + ".weight"]
        config = {  # configuration_llada.py's keys, LLaDA-8B-Base's values at a tiny size
            "architectures": ["LLaDAModelLM"], "model_type": "llada", "activation_type": "silu", "alibi": False,
            "alibi_bias_max": 8.0, "attention_dropout": 0.0, "attention_layer_norm": False,
            "attention_layer_norm_with_affine": True, "auto_map": {
                "AutoConfig": "configuration_llada.LLaDAConfig", "AutoModel": "modeling_llada.LLaDAModelLM",
                "AutoModelForCausalLM": "modeling_llada.LLaDAModelLM"},
            "bias_for_layer_norm": False, "block_group_size": 1, "block_type": "llama", "d_model": s["hidden"],
            "embedding_dropout": 0.0, "embedding_size": rows, "eos_token_id": tok.token_to_id("<|endoftext|>"),
            "flash_attention": False, "include_bias": False, "include_qkv_bias": False, "init_cutoff_factor": None,
            "init_device": "meta", "init_fn": "mitchell", "init_std": 0.02, "input_emb_norm": False,
            "layer_norm_type": "rms", "layer_norm_with_affine": True, "mask_token_id": mask_id,
            "max_sequence_length": 4096, "mlp_hidden_size": s["ff"], "mlp_ratio": 4, "multi_query_attention": None,
            "n_heads": s["heads"], "n_kv_heads": s["kv_heads"], "n_layers": s["layers"],
            "pad_token_id": tok.token_to_id("<|endoftext|>"), "precision": "amp_bf16", "residual_dropout": 0.0,
            "rms_norm_eps": 1e-05, "rope": True, "rope_full_precision": True, "rope_theta": 500000.0,
            "scale_logits": False, "transformers_version": "4.46.3", "use_cache": False, "vocab_size": rows,
            "weight_tying": False}
    else:
        from transformers import Qwen2Config, Qwen2ForCausalLM
        tied = family == "open-dcoder"   # Qwen2.5-Coder-0.5B ties its output head to the embedding
        ref = Qwen2ForCausalLM(Qwen2Config(
            vocab_size=rows, hidden_size=s["hidden"], intermediate_size=s["ff"], num_hidden_layers=s["layers"],
            num_attention_heads=s["heads"], num_key_value_heads=s["kv_heads"], rms_norm_eps=1e-6,
            rope_theta=1000000.0, tie_word_embeddings=tied))
        _randomize(ref, seed)
        tensors = {k: v for k, v in ref.state_dict().items() if not (tied and k == "lm_head.weight")}
        eos = tok.token_to_id("<|endoftext|>")
        config = {  # Qwen2's keys (Dream's configuration_dream.py has the same), at a tiny size
            "attention_dropout": 0.0, "hidden_act": "silu", "hidden_size": s["hidden"], "initializer_range": 0.02,
            "intermediate_size": s["ff"], "max_position_embeddings": 131072, "max_window_layers": s["layers"],
            "num_attention_heads": s["heads"], "num_hidden_layers": s["layers"], "num_key_value_heads": s["kv_heads"],
            "rms_norm_eps": 1e-06, "rope_scaling": None, "rope_theta": 1000000.0, "sliding_window": None,
            "tie_word_embeddings": tied, "torch_dtype": "bfloat16", "transformers_version": "4.46.2",
            "use_cache": False, "use_sliding_window": False, "vocab_size": rows, "bos_token_id": eos,
            "eos_token_id": eos, "pad_token_id": eos}
        if family == "open-dcoder":
            config.update(architectures=["Qwen2ForCausalLM"], model_type="qwen2")
        else:   # Dream's remote code (Dream-v0, Dream-Coder, DiffuCoder)
            config.update(architectures=["DreamModel"], model_type="Dream", mask_token_id=mask_id, auto_map={
                "AutoConfig": "configuration_dream.DreamConfig", "AutoModel": "modeling_dream.DreamModel"})
    _save_shards(out, tensors)
    (out / "config.json").write_text(json.dumps(config, indent=2))
    (out / "generation_config.json").write_text(json.dumps({"bos_token_id": config.get("bos_token_id"),
                                                            "eos_token_id": config["eos_token_id"]}))
    return ref.eval()


def reference_logits(ref, ids: torch.Tensor) -> torch.Tensor:
    """The base architecture's raw logits with every position seeing every other (a 4-D all-true mask)."""
    B, T = ids.shape
    with torch.no_grad():
        return ref(ids, attention_mask=torch.ones(B, 1, T, T, dtype=torch.bool)).logits.float()

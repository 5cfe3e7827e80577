"""The transformer: bidirectional for diffusion, causal for the autoregressive twin (RoPE, RMSNorm, SwiGLU).

Logits are *shifted* as in Dream: the output at position i predicts the token at position i + 1,
whether that token is the next one (autoregressive) or a masked slot (diffusion). The same weights
therefore serve both objectives, which is what lets diffusion warm-start from autoregressive training.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

ROPE_BASE = 10000.0


@dataclass
class ModelConfig:
    vocab_size: int = 8192
    n_layer: int = 6
    n_head: int = 4
    d_model: int = 256
    max_len: int = 512      # the training sequence length (RoPE itself has no limit)
    causal: bool = False

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown model config keys {sorted(unknown)}")
        return cls(**d)


# sizes: tiny for tests, cpu for this machine's background runs, gpu for a lent accelerator
SIZES = {
    "tiny": dict(n_layer=2, n_head=2, d_model=64, max_len=128),
    "cpu": dict(n_layer=6, n_head=6, d_model=384, max_len=256),
    "gpu": dict(n_layer=8, n_head=6, d_model=384, max_len=512),
}


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        x32 = x.float()
        return (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)).type_as(x) * self.weight


def rope_tables(T: int, head_dim: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    inv = 1.0 / (ROPE_BASE ** (torch.arange(0, head_dim, 2, device=device, dtype=torch.float32) / head_dim))
    freqs = torch.outer(torch.arange(T, device=device, dtype=torch.float32), inv)  # (T, hs/2)
    return freqs.cos()[None, None], freqs.sin()[None, None]                          # (1, 1, T, hs/2)


def rope_at(positions: torch.Tensor, head_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """RoPE tables for explicit positions (B, T) → (B, 1, T, hs/2): the same values rope_tables gives for arange(T)."""
    inv = 1.0 / (ROPE_BASE ** (torch.arange(0, head_dim, 2, device=positions.device, dtype=torch.float32) / head_dim))
    freqs = positions.float()[..., None] * inv
    return freqs.cos()[:, None], freqs.sin()[:, None]


def apply_rope(x, cos, sin):
    x1, x2 = x[..., ::2], x[..., 1::2]
    return torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1).flatten(-2).type_as(x)


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_head, self.causal = cfg.n_head, cfg.causal
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model, bias=False)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model, bias=False)

    def forward(self, x, cos, sin, key_mask=None):
        B, T, C = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.n_head, C // self.n_head).permute(2, 0, 3, 1, 4)  # (3, B, nh, T, hs)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if key_mask is not None:  # (B, T) True where a key may be attended to
            mask = key_mask[:, None, None, :]
            if self.causal:
                mask = mask & torch.ones(T, T, dtype=torch.bool, device=x.device).tril()
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        else:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=self.causal)
        return self.proj(y.transpose(1, 2).reshape(B, T, C))  # (B, T, C)

    def forward_cached(self, x, cos, sin, mask, past_k, past_v):
        """Attend from x's positions to cached keys/values plus x's own; mask (B, 1, T, P + T) bool.
        Returns the output and x's keys and values (B, nh, T, hs), for the caller's cache."""
        B, T, C = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.n_head, C // self.n_head).permute(2, 0, 3, 1, 4)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        y = F.scaled_dot_product_attention(q, torch.cat([past_k, k], 2), torch.cat([past_v, v], 2), attn_mask=mask)
        return self.proj(y.transpose(1, 2).reshape(B, T, C)), k, v


class SwiGLU(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        hidden = 64 * math.ceil(8 * cfg.d_model / 3 / 64)
        self.gate_up = nn.Linear(cfg.d_model, 2 * hidden, bias=False)
        self.down = nn.Linear(hidden, cfg.d_model, bias=False)

    def forward(self, x):
        gate, up = self.gate_up(x).chunk(2, dim=-1)
        return self.down(F.silu(gate) * up)


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.norm1, self.attn = RMSNorm(cfg.d_model), Attention(cfg)
        self.norm2, self.mlp = RMSNorm(cfg.d_model), SwiGLU(cfg)

    def forward(self, x, cos, sin, key_mask=None):
        x = x + self.attn(self.norm1(x), cos, sin, key_mask)
        return x + self.mlp(self.norm2(x))


class Transformer(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.norm = RMSNorm(cfg.d_model)
        self.head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        self.head.weight = self.embed.weight  # tied
        self.apply(self._init)
        for name, p in self.named_parameters():
            if name.endswith(("proj.weight", "down.weight")):
                nn.init.normal_(p, std=0.02 / math.sqrt(2 * cfg.n_layer))

    @staticmethod
    def _init(m):
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, std=0.02)

    def forward(self, ids, key_mask=None, logits_from=None):
        """ids (B, T) → logits (B, T', V) for positions logits_from.. (all by default); logits[:, i] predict token i + 1."""
        x = self.embed(ids)  # (B, T, C)
        cos, sin = rope_tables(ids.shape[1], self.cfg.d_model // self.cfg.n_head, ids.device)
        for block in self.blocks:
            x = block(x, cos, sin, key_mask)
        if logits_from is not None:
            x = x[:, logits_from:]
        return self.head(self.norm(x))

    def forward_cached(self, ids, positions, key_mask, past_k, past_v, logits_from):
        """The inference graph with a key/value cache (what `quicksilver export` writes).

        ids, positions (B, T); key_mask (B, P + T) over the P cached keys then the T new ones; past_k, past_v
        (n_layer, B, nh, P, hs), P may be 0. Returns logits (B, T - logits_from, V) and the new positions'
        keys and values (n_layer, B, nh, T, hs). With P = 0 and positions = arange(T) it equals forward();
        the diffusion runtime caches the fixed context this way and re-runs only the decoding window
        (Fast-dLLM's approximate cache), and the autoregressive twin decodes token by token with it (exact).
        """
        x = self.embed(ids)
        cos, sin = rope_at(positions, self.cfg.d_model // self.cfg.n_head)
        T, P = ids.shape[1], past_k.shape[3]
        mask = key_mask[:, None, None, :]
        if self.cfg.causal:  # new position i sees every cached key and the new keys up to itself
            keys = torch.arange(P + T, device=ids.device)
            mask = mask & (keys[None, :] <= P + torch.arange(T, device=ids.device)[:, None])
        new_k, new_v = [], []
        for i, block in enumerate(self.blocks):
            a, k, v = block.attn.forward_cached(block.norm1(x), cos, sin, mask, past_k[i], past_v[i])
            x = x + a
            x = x + block.mlp(block.norm2(x))
            new_k.append(k)
            new_v.append(v)
        logits = self.head(self.norm(x[:, logits_from:]))
        return logits, torch.stack(new_k), torch.stack(new_v)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

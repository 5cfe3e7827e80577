"""The network of an imported open-weight diffusion coder, as the runtime calls it: a bidirectional decoder-only
transformer in the Qwen2 / LLaMA mould (RMSNorm, rotate-half RoPE, grouped-query attention with optional q/k/v
biases, SwiGLU), with the same cached forward as model/network.py (`forward_cached`), so `quicksilver export`'s
graph interface (ids, positions, key mask over cached plus new keys, past keys/values, logits_from) serves it.

The weights keep their layout: model/families.py maps each family's tensor names onto these modules. What the
logits mean (shifted or in place) is a convention of the family, not of this network: it returns the raw outputs.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class ImportedConfig:
    vocab_size: int
    n_layer: int
    n_head: int
    n_kv_head: int
    head_dim: int
    d_model: int
    d_ff: int
    rope_theta: float
    rms_eps: float
    qkv_bias: bool
    tied: bool
    max_len: int

    def to_card(self) -> dict:
        """The card's config: the keys runtime/session.py reads (causal False: diffusion)."""
        return {**asdict(self), "causal": False}


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def rotate_half(x):
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def rope(positions: torch.Tensor, head_dim: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin (B, 1, T, head_dim) for explicit positions, in Hugging Face's rotate-half layout."""
    inv = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
    freqs = positions.float()[..., None] * inv
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos()[:, None], emb.sin()[:, None]


class Layer(nn.Module):
    def __init__(self, c: ImportedConfig):
        super().__init__()
        self.c = c
        self.attn_norm, self.mlp_norm = RMSNorm(c.d_model, c.rms_eps), RMSNorm(c.d_model, c.rms_eps)
        self.q = nn.Linear(c.d_model, c.n_head * c.head_dim, bias=c.qkv_bias)
        self.k = nn.Linear(c.d_model, c.n_kv_head * c.head_dim, bias=c.qkv_bias)
        self.v = nn.Linear(c.d_model, c.n_kv_head * c.head_dim, bias=c.qkv_bias)
        self.o = nn.Linear(c.n_head * c.head_dim, c.d_model, bias=False)
        self.gate = nn.Linear(c.d_model, c.d_ff, bias=False)
        self.up = nn.Linear(c.d_model, c.d_ff, bias=False)
        self.down = nn.Linear(c.d_ff, c.d_model, bias=False)

    def forward(self, x, cos, sin, mask, past_k, past_v):
        B, T, _ = x.shape
        c = self.c
        h = self.attn_norm(x)
        q = self.q(h).view(B, T, c.n_head, c.head_dim).transpose(1, 2)
        k = self.k(h).view(B, T, c.n_kv_head, c.head_dim).transpose(1, 2)
        v = self.v(h).view(B, T, c.n_kv_head, c.head_dim).transpose(1, 2)
        q, k = q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
        keys, values = torch.cat([past_k, k], 2), torch.cat([past_v, v], 2)
        groups = c.n_head // c.n_kv_head   # each key/value head serves this many query heads (Hugging Face's repeat_kv)
        keys, values = keys.repeat_interleave(groups, dim=1), values.repeat_interleave(groups, dim=1)
        y = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask)
        x = x + self.o(y.transpose(1, 2).reshape(B, T, c.n_head * c.head_dim))
        h = self.mlp_norm(x)
        return x + self.down(F.silu(self.gate(h)) * self.up(h)), k, v


class ImportedTransformer(nn.Module):
    def __init__(self, c: ImportedConfig):
        super().__init__()
        self.cfg = c
        self.embed = nn.Embedding(c.vocab_size, c.d_model)
        self.layers = nn.ModuleList(Layer(c) for _ in range(c.n_layer))
        self.norm = RMSNorm(c.d_model, c.rms_eps)
        self.head = nn.Linear(c.d_model, c.vocab_size, bias=False)
        if c.tied:
            self.head.weight = self.embed.weight

    def empty_cache(self, batch: int, length: int = 0) -> torch.Tensor:
        c = self.cfg
        return torch.zeros(c.n_layer, batch, c.n_kv_head, length, c.head_dim)

    def forward_cached(self, ids, positions, key_mask, past_k, past_v, logits_from):
        """ids, positions (B, T); key_mask (B, P + T) over the P cached keys then the T new ones, every query sees
        every unmasked key (bidirectional); past (n_layer, B, kv heads, P, head_dim). → raw logits from
        logits_from on, and the new positions' keys and values (n_layer, B, kv heads, T, head_dim)."""
        x = self.embed(ids)
        cos, sin = rope(positions, self.cfg.head_dim, self.cfg.rope_theta)
        mask = key_mask[:, None, None, :]
        new_k, new_v = [], []
        for i, layer in enumerate(self.layers):
            x, k, v = layer(x, cos, sin, mask, past_k[i], past_v[i])
            new_k.append(k)
            new_v.append(v)
        return self.head(self.norm(x[:, logits_from:])), torch.stack(new_k), torch.stack(new_v)

    def forward(self, ids, key_mask=None):
        """Raw logits of a whole sequence (what parity checks compare)."""
        B, T = ids.shape
        key_mask = torch.ones(B, T, dtype=torch.bool) if key_mask is None else key_mask
        positions = torch.arange(T).expand(B, T)
        empty = self.empty_cache(B)
        return self.forward_cached(ids, positions, key_mask, empty, empty, 0)[0]

"""Training examples and losses: masked diffusion (random / infill / completion shapes) and the autoregressive FIM twin.

Example construction is numpy (one row at a time, on the host); masking and losses are torch (on the device).
Every row keeps position 0 visible: with shifted logits, position i is predicted from the output at i - 1.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from model.tokenizer import CodeTokenizer

MIN_MASK_RATE = 1e-3        # t ~ U(MIN_MASK_RATE, 1)
MAX_EXTRA_SLOTS = 48        # an infill window is longer than its middle by U(0, MAX_EXTRA_SLOTS) <|eom|> slots
SINGLE_LINE_SHARE = 0.5     # infill middles of exactly one line (the single-line eval shape)
MAX_MIDDLE_LINES = 12
FIM_RATE = 0.5              # share of autoregressive rows in prefix-suffix-middle order
FIM_SENTINELS = 4           # <|fim_prefix|>, <|fim_suffix|>, <|fim_middle|> and the closing <|eom|>
MIN_FIM_PIECE = 32          # the shortest text a packed FIM example is cut from
EVAL_MASK_RATES = (0.15, 0.5, 0.85)
ENTROPY_TEMPERATURE = 0.5   # dParallel's temperature for the entropy of rightly predicted slots (certainty forcing)
FROM_ROW_SHARE = 0.5        # corruption: a substitute taken from the row itself (a wrong variable, another operator)
KEEP_WEIGHT = 0.1           # corruption: weight of the loss on visible tokens left as they were (keep them)


@dataclass
class Mixture:
    """Shares of the three example shapes in a diffusion batch."""
    random: float = 0.3
    infill: float = 0.5
    completion: float = 0.2

    @classmethod
    def parse(cls, text: str) -> "Mixture":
        """'random:infill:completion' shares, e.g. '3:5:2'."""
        parts = [float(x) for x in text.split(":")]
        if len(parts) != 3 or min(parts) < 0 or sum(parts) <= 0:
            raise ValueError(f"--mixture takes three non-negative shares random:infill:completion, got {text!r}")
        s = sum(parts)
        return cls(*(p / s for p in parts))


class Examples:
    """Turns raw token windows into training rows for either objective."""

    def __init__(self, tok: CodeTokenizer, mixture: Mixture | None = None):
        self.tok = tok
        self.mixture = mixture or Mixture()
        self.newline = np.array(["\n" in s for s in tok.token_bytes()], dtype=bool)

    def windows(self, data: np.ndarray, batch: int, length: int, rng: np.random.Generator) -> np.ndarray:
        if len(data) < length + 2:   # a part shorter than a window (a small repository's held-out files): repeated
            data = np.resize(np.asarray(data), length + 2)
        starts = rng.integers(0, len(data) - length - 1, size=batch)
        return np.stack([data[s:s + length] for s in starts]).astype(np.int64)  # (B, T)

    def _span(self, row: np.ndarray, rng: np.random.Generator, lo: int) -> tuple[int, int]:
        """A middle [a, b) of whole lines (or, for a quarter of rows, random tokens) with a >= lo."""
        T = len(row)
        starts = np.flatnonzero(self.newline[row[:-1]]) + 1
        starts = starts[starts >= lo]
        if len(starts) >= 2 and rng.random() < 0.75:
            i = rng.integers(0, len(starts) - 1)
            n = 1 if rng.random() < SINGLE_LINE_SHARE else int(rng.integers(2, MAX_MIDDLE_LINES + 1))
            return int(starts[i]), int(starts[min(i + n, len(starts) - 1)])
        a = int(rng.integers(lo, T - 1))
        return a, int(min(T, a + rng.integers(1, 64)))

    def diffusion(self, raw: np.ndarray, rng: np.random.Generator,
                  starts: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(clean (B, T), region (B, T) bool): the tokens to reconstruct and where masking may fall. A row with a
        start > 0 (cross-file context before its file, model/repo_corpus.py) is shaped and masked after it only."""
        if starts is not None and starts.any():
            clean, region = raw.copy(), np.zeros(raw.shape, dtype=bool)
            for r, s in enumerate(starts):
                clean[r:r + 1, s:], region[r:r + 1, s:] = self.diffusion(raw[r:r + 1, s:], rng)
            return clean, region
        B, T = raw.shape
        clean, region = raw.copy(), np.zeros((B, T), dtype=bool)
        shapes = rng.choice(3, size=B, p=[self.mixture.random, self.mixture.infill, self.mixture.completion])
        for r in range(B):
            if shapes[r] == 0:
                region[r, 1:] = True
            elif shapes[r] == 1:
                a, b = self._span(raw[r], rng, lo=min(16, T // 4))
                if self.newline[raw[r, a - 1]]:  # whole lines: the window starts at the newline token before them,
                    a -= 1                       # as a healed editor window does ('\n   ' then ' total'), not after it
                extra = int(rng.integers(0, MAX_EXTRA_SLOTS + 1))
                row = np.concatenate([raw[r, :b], np.full(extra, self.tok.eom_id), raw[r, b:]])[:T]
                clean[r], region[r, a:b + extra] = row, True
            else:
                c = int(rng.integers(min(16, T // 4), T - 1))
                ends = np.flatnonzero(raw[r, c:] == self.tok.eos_id)
                if len(ends):  # the file ends inside the window: <|eom|> pads the rest
                    clean[r, c + ends[0] + 1:] = self.tok.eom_id
                region[r, c:] = True
        return clean, region

    def autoregressive(self, raw: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Rows for next-token training; FIM_RATE of them are packed fill-in-the-middle examples.

        A FIM row cuts its text into pieces of random length (MIN_FIM_PIECE tokens up to the whole row, never
        across a file's end) and writes each as <|fim_prefix|> prefix <|fim_suffix|> suffix <|fim_middle|> middle
        <|eom|>, the file's <|eos|> after it when the piece reached the file's end: as in Bavarian et al., per
        document, and with contexts as short as an editor's or HumanEval's one-function file. Whatever does not
        fit a last example stays plain text."""
        B, T = raw.shape
        out = raw.copy()
        for r in range(B):
            if rng.random() < FIM_RATE:
                out[r] = self._fim_row(raw[r], rng)
        return out

    def _fim_row(self, row: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        t, T = self.tok, len(row)
        pieces, used, size = [], 0, 0  # used: source tokens consumed; size: tokens written
        while True:
            want = int(rng.integers(MIN_FIM_PIECE, T + 1))
            src = row[used:used + want]
            ends = np.flatnonzero(src == t.eos_id)
            doc = src[:ends[0]] if len(ends) else src
            closes = len(ends) > 0  # the piece reaches its file's end: the file's <|eos|> follows the example
            if len(doc) < 2 and closes and size + len(doc) + 1 <= T:  # too short to cut: keep it as it is
                pieces.append(src[:len(doc) + 1])
                used, size = used + len(doc) + 1, size + len(doc) + 1
                continue
            if len(doc) < 2 or size + len(doc) + FIM_SENTINELS + closes > T:
                break
            a, b = self._span(doc, rng, lo=0)
            if a > 0 and self.newline[doc[a - 1]]:  # a middle of whole lines starts with the newline token before
                a -= 1                               # it, as a healed prompt's does ('\n   ' then ' total'), not after
            pieces += [[t.fim_prefix_id], doc[:a], [t.fim_suffix_id], doc[b:], [t.fim_middle_id], doc[a:b], [t.eom_id]]
            pieces += [[t.eos_id]] if closes else []
            used += len(doc) + closes
            size += len(doc) + FIM_SENTINELS + closes
        pieces.append(row[used:used + T - size])  # the rest as plain text
        return np.concatenate(pieces)


def mask_tokens(clean: torch.Tensor, region: torch.Tensor, mask_id: int, generator: torch.Generator | None = None,
                rate: float | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Absorbing-state forward process: (noisy ids, masked bool, t per row). t ~ U(MIN_MASK_RATE, 1) unless `rate`."""
    B, T = clean.shape
    if rate is None:
        t = torch.rand(B, 1, device=clean.device, generator=generator) * (1 - MIN_MASK_RATE) + MIN_MASK_RATE
    else:
        t = torch.full((B, 1), rate, device=clean.device)
    masked = region & (torch.rand(B, T, device=clean.device, generator=generator) < t)
    return torch.where(masked, torch.full_like(clean, mask_id), clean), masked, t


def corrupt_tokens(noisy: torch.Tensor, clean: torch.Tensor, region: torch.Tensor, masked: torch.Tensor, rate: float,
                   first_id: int, vocab_size: int, generator: torch.Generator | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Corruption beyond masks, as bugs are (Seed Diffusion's edit corruption, GIDD's uniform noise): `rate` of the
    visible tokens of the region are replaced — FROM_ROW_SHARE of them by a token from elsewhere in the same row,
    the rest by any non-special token (ids from `first_id`). (noisy ids, corrupted bool): the original stays the
    target there, so the model learns to judge a token that is present, not only to fill a mask."""
    B, T = clean.shape
    dev = clean.device
    corrupted = region & ~masked & (torch.rand(B, T, device=dev, generator=generator) < rate)
    from_row = torch.gather(clean, 1, torch.randint(0, T, (B, T), device=dev, generator=generator))
    anything = torch.randint(first_id, vocab_size, (B, T), device=dev, generator=generator)
    substitute = torch.where(torch.rand(B, T, device=dev, generator=generator) < FROM_ROW_SHARE, from_row, anything)
    corrupted &= (substitute != clean) & (substitute >= first_id)
    return torch.where(corrupted, substitute, noisy), corrupted


def judged_loss(logits: torch.Tensor, clean: torch.Tensor, masked: torch.Tensor, corrupted: torch.Tensor,
                region: torch.Tensor) -> torch.Tensor:
    """Cross-entropy to the clean tokens (shifted logits) on masked and corrupted positions, plus KEEP_WEIGHT × the
    same on the region's visible tokens left as they were: fill masks, fix what is wrong, keep what is right."""
    fix = (masked | corrupted)[:, 1:]
    keep = (region & ~masked & ~corrupted)[:, 1:]
    lg, y = logits[:, :-1].float(), clean[:, 1:]
    loss = F.cross_entropy(lg[fix], y[fix]) if fix.any() else logits.sum() * 0
    return loss + KEEP_WEIGHT * F.cross_entropy(lg[keep], y[keep]) if keep.any() else loss


def diffusion_loss(logits: torch.Tensor, clean: torch.Tensor, masked: torch.Tensor, t: torch.Tensor,
                   weighting: str = "mean") -> torch.Tensor:
    """Cross-entropy on masked positions (shifted logits). weighting: 'mean' over masked tokens, or 'inv_t' (MDLM/LLaDA 1/t)."""
    tgt = masked[:, 1:]
    ce = F.cross_entropy(logits[:, :-1][tgt].float(), clean[:, 1:][tgt], reduction="none")
    if weighting == "mean":
        return ce.mean() if ce.numel() else logits.sum() * 0
    if weighting == "inv_t":
        w = (1.0 / t).expand_as(tgt)[tgt]
        return (ce * w).sum() / tgt.numel()
    raise ValueError(f"unknown loss weighting {weighting!r}: use 'mean' or 'inv_t'")


def certainty_forcing_loss(logits: torch.Tensor, targets: torch.Tensor, masked: torch.Tensor, weight: float,
                           temperature: float) -> tuple[torch.Tensor, dict[str, float]]:
    """dParallel's certainty-forcing loss (shifted logits): cross-entropy to the targets on masked positions, plus
    `weight` × the entropy of softmax(logits / temperature) on the masked positions whose argmax is already the
    target — sureness is forced only where the prediction is right. (loss, its parts for logging)."""
    tgt = masked[:, 1:]
    lg, y = logits[:, :-1][tgt].float(), targets[:, 1:][tgt]
    if not len(y):
        return logits.sum() * 0, {"ce": 0.0, "entropy": 0.0, "right": 0.0}
    ce = F.cross_entropy(lg, y)
    right = lg.argmax(-1) == y
    logp = F.log_softmax(lg[right] / temperature, -1)
    entropy = -(logp.exp() * logp).sum(-1).mean() if right.any() else lg.sum() * 0
    return ce + weight * entropy, {"ce": ce.item(), "entropy": entropy.item(), "right": right.float().mean().item()}


def autoregressive_loss(logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), ids[:, 1:].flatten())


def unigram_cross_entropy(train: np.ndarray, heldout: np.ndarray, vocab_size: int) -> float:
    """Held-out cross-entropy (nats/token) of add-one unigram frequencies from the training tokens."""
    counts = np.bincount(np.asarray(train[: 50_000_000]), minlength=vocab_size).astype(np.float64) + 1
    logp = np.log(counts / counts.sum())
    return float(-logp[np.asarray(heldout)].mean())

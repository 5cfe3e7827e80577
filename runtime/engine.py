"""The engine: requests in, frames and results out. It knows nothing about HTTP, websockets or LSP."""
from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np

from runtime.context import fit
from runtime.postprocess import clean_completion, heal, unheal_end
from runtime.sampler import Denoiser, Frame, Result, SamplerOptions, SpecialIds, denoise
from runtime.session import LoadedModel

MODES = ("completion", "infill", "edit")
DEFAULT_MAX_NEW_TOKENS = 32
DEFAULT_CONTEXT_TOKENS = 384      # prefix + window + suffix; smaller is faster on a CPU
EDIT_GROWTH = 8                   # extra slots after an edited block, so a rewrite may be a little longer
DEFAULT_EOM_BIAS = 2.0            # unknown-length infill overfills its window without it: see `quicksilver eval heldout`


@dataclass
class Request:
    prefix: str
    suffix: str = ""
    mode: str = "infill"
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0
    stop: tuple[str, ...] = ()
    deadline_ms: float | None = None
    block: int | None = None          # default: the whole window in one block
    threshold: float = 0.9
    eom_bias: float = DEFAULT_EOM_BIAS
    existing: str = ""                # edit mode: the block being rewritten (between prefix and suffix)
    edit: str = "all"                 # edit mode: 'all', 'repair', or 'none'
    single_line: bool = False         # end the result at the first newline
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {self.mode!r}")
        if not 1 <= self.max_new_tokens <= 1024:
            raise ValueError("max_new_tokens must be between 1 and 1024")
        if self.mode == "edit" and not self.existing:
            raise ValueError("edit mode needs the existing block text")


@dataclass
class Completion:
    id: str
    text: str
    raw: str
    stats: dict


class Engine:
    def __init__(self, model: LoadedModel, context_tokens: int = DEFAULT_CONTEXT_TOKENS):
        self.model, self.tok = model, model.tokenizer
        self.special = SpecialIds.from_tokenizer(self.tok)
        self.max_len = int(model.card["config"]["max_len"])
        self.context_tokens = min(context_tokens, self.max_len)

    def denoiser(self, req: Request) -> Denoiser:
        """Tokenize and window a request into the sampler's state."""
        existing = self.tok.encode(req.existing) if req.mode == "edit" else None
        prefix, suffix = req.prefix, "" if req.mode == "completion" else req.suffix
        forced = ""
        if existing is None:
            prefix, forced, suffix = heal(prefix, suffix)
        window = len(existing) + EDIT_GROWTH if existing is not None else req.max_new_tokens
        window = min(window + len(self.tok.encode(forced)), self.context_tokens - 2)
        ctx = fit(self.tok, prefix, suffix, self.context_tokens - window)
        if req.mode == "completion":
            ctx.suffix = []
        opts = SamplerOptions(
            window=window, block=req.block or window, threshold=req.threshold, temperature=req.temperature,
            top_p=req.top_p, seed=req.seed, stop=tuple(req.stop), edit=req.edit, forced=forced, eom_bias=req.eom_bias,
            deadline=time.monotonic() + req.deadline_ms / 1000 if req.deadline_ms else None)
        init = None
        if existing is not None:
            init = (existing + [self.special.eom] * window)[:window]
        return Denoiser(ctx.prefix, init, ctx.suffix, opts, self.special, self.tok.decode)

    def finish(self, req: Request, d: Denoiser) -> Completion:
        res: Result = d.result()
        text = res.text
        if req.mode != "completion" and res.stats.stop_reason == "eom":
            text = unheal_end(text, req.suffix)
        text = clean_completion(text, req.prefix, req.suffix if req.mode != "completion" else "",
                                single_line=req.single_line)
        return Completion(req.id, text, res.text, vars(res.stats).copy())

    def stream(self, req: Request) -> Iterator[Frame | Completion]:
        """Frames, one per forward pass, then the Completion."""
        d = self.denoiser(req)
        yield from denoise(self.model.forward, d)
        yield self.finish(req, d)

    def complete(self, req: Request) -> Completion:
        for item in self.stream(req):
            pass
        return item

    def forward_batch(self, denoisers: list[Denoiser]) -> list[np.ndarray]:
        """One batched forward pass for several requests (right-padded); each gets its window's logits."""
        seqs = [d.inputs() for d in denoisers]
        T = max(len(s) for s in seqs)
        ids = np.full((len(seqs), T), self.tok.pad_id, np.int64)
        mask = np.zeros((len(seqs), T), bool)
        for i, s in enumerate(seqs):
            ids[i, :len(s)], mask[i, :len(s)] = s, True
        lf = min(d.start for d in denoisers) - 1
        logits = self.model.forward(ids, mask, lf)
        return [logits[i, d.start - 1 - lf:d.end - lf] for i, d in enumerate(denoisers)]

"""The autoregressive twin's decoder: one token per forward pass with a key/value cache, on ONNX Runtime.

It is the baseline diffusion decoding is measured against (`quicksilver eval compare`): the same network size,
tokenizer, data and export, trained causally (`quicksilver train --objective autoregressive`). Infill prompts
use the order the twin was trained on — <|fim_prefix|> prefix <|fim_suffix|> suffix <|fim_middle|> — and the
middle ends with <|eom|>. Requests, healing, stop sequences, deadlines and post-processing are the diffusion
engine's, so the two differ only in how tokens are chosen.
"""
from __future__ import annotations

import time
from typing import Iterator

import numpy as np

from runtime.context import fit
from runtime.engine import Engine
from runtime.frames import Completion
from runtime.request import DEFAULT_CONTEXT_TOKENS, Request, stops_of
from runtime.showing import postprocess
from runtime.postprocess import heal
from runtime.policies import guard_end
from runtime.frames import Frame, Stats
from runtime.policies import choose
from runtime.sampler import SamplerOptions
from runtime.syntax import end_guard
from runtime.session import LoadedModel, ModelError
from runtime.vocab import SpecialIds

FIM_SENTINELS = 3


class AutoregressiveEngine:
    def __init__(self, model: LoadedModel, context_tokens: int = DEFAULT_CONTEXT_TOKENS):
        if not model.card["config"].get("causal"):
            raise ModelError(f"{model.model_dir} holds a diffusion model; the autoregressive decoder needs the twin")
        if not model.cached:
            raise ModelError(f"{model.model_dir / model.model_file} has no key/value cache inputs; re-export it")
        self.model, self.tok = model, model.tokenizer
        self.special = SpecialIds.from_tokenizer(self.tok)
        self.context_tokens = min(context_tokens, int(model.card["config"]["max_len"]))
        self.kv_cache = True

    def prompt(self, req: Request) -> tuple[list[int], str, int]:
        """(prompt ids, forced text, token budget for the forced text plus the middle)."""
        if req.mode == "edit":
            raise ValueError("the autoregressive twin has no edit mode")
        prefix, suffix = req.prefix, "" if req.mode == "completion" else req.suffix
        prefix, forced, suffix = heal(prefix, suffix)
        budget = min(req.max_new_tokens + len(self.tok.encode(forced)), self.context_tokens // 2)
        if req.mode == "completion":
            return fit(self.tok, prefix, "", self.context_tokens - budget).prefix, forced, budget
        ctx = fit(self.tok, prefix, suffix, self.context_tokens - budget - FIM_SENTINELS)
        # the training layout (model/objective.py): the file's <|eos|> before <|fim_prefix|> when the prefix holds
        # the file's start, and none after the suffix (the file's <|eos|> follows the middle's <|eom|> there)
        eos = self.tok.eos_id
        start = [eos] if ctx.prefix[:1] == [eos] else []
        prefix, suffix = ctx.prefix[len(start):], ctx.suffix[:-1] if ctx.suffix[-1:] == [eos] else ctx.suffix
        ids = [*start, self.tok.fim_prefix_id, *prefix, self.tok.fim_suffix_id, *suffix, self.tok.fim_middle_id]
        return ids, forced, budget

    def stream(self, req: Request) -> Iterator[Frame | Completion]:
        """A frame per generated token, then the Completion."""
        ids, forced, budget = self.prompt(req)
        t0 = time.perf_counter()  # as the diffusion engine's: from the tokenized prompt on
        deadline = time.monotonic() + req.deadline_ms / 1000 if req.deadline_ms else None
        rng = np.random.default_rng(req.seed)
        stats, out, reason = Stats(), [], "window"
        stops = stops_of(req)
        may_end = end_guard(req.language, req.prefix, "" if req.mode == "completion" else req.suffix, req.single_line)
        guard = SamplerOptions(temperature=req.temperature, top_p=req.top_p, stop=stops, may_end=may_end)
        n = len(ids)
        empty = self.model.empty_cache(1)
        logits, past_k, past_v = self.model.forward_kv(
            np.array([ids]), np.arange(n)[None], np.ones((1, n), bool), empty, empty, n - 1)
        stats.forward_passes = 1
        text = ""  # decode(out), kept up to date once per token
        while True:
            lg = logits[0, -1].copy()
            lg[self.special.banned] = -np.inf
            if len(text) < len(forced):  # token healing: the first tokens must spell the cursor's line
                if (ok := self.special.agrees(forced[len(text):])).any():
                    lg[~ok] = -np.inf
            token = int(choose(lg[None], req.temperature, req.top_p, rng)[0][0])
            if may_end is not None and len(text) >= len(forced):  # the diffusion engine's syntax-guided ends
                token = guard_end(lg, token, 0.0, text[len(forced):], guard.stop, guard.may_end,
                                  lambda row: (int(choose(row[None], req.temperature, req.top_p, rng)[0][0]), 0.0),
                                  self.special)[0]
            if token in self.special.ends_set:
                reason = "eom"
                break
            out.append(token)
            stats.steps += 1
            text = self.tok.decode(out)
            shown = text[len(forced):]
            yield Frame(stats.steps, shown, len(out), 0)
            if stops and any(s in shown for s in stops):
                reason = "stop"
                break
            if len(out) >= budget:
                break
            if deadline is not None and time.monotonic() >= deadline:
                reason = "deadline"
                break
            pos = n + len(out) - 1
            logits, k, v = self.model.forward_kv(np.array([[token]]), np.array([[pos]]), np.ones((1, pos + 1), bool),
                                                 past_k, past_v, 0)
            past_k, past_v = np.concatenate([past_k, k], 3), np.concatenate([past_v, v], 3)
            stats.forward_passes += 1
        text = text[len(forced):] if text.startswith(forced) else text
        cut = min((text.find(s) for s in stops if s and s in text), default=-1)
        text = text[:cut] if cut >= 0 else text
        healed = 0
        while healed < len(out) and len(self.tok.decode(out[:healed])) < len(forced):
            healed += 1
        stats.tokens = len(out) - healed
        stats.tokens_per_forward = stats.tokens / stats.forward_passes
        stats.ms = 1000 * (time.perf_counter() - t0)
        stats.stop_reason = reason
        raw, text = text, postprocess(req, text, reason)
        yield Completion(req.id, text, raw, vars(stats).copy())

    def complete(self, req: Request) -> Completion:
        for item in self.stream(req):
            pass
        return item


def make_engine(model: LoadedModel, **kwargs) -> Engine | AutoregressiveEngine:
    """The diffusion engine, or the autoregressive decoder for a causal twin's model directory."""
    if model.card["config"].get("causal"):
        kwargs.pop("kv_cache", None), kwargs.pop("refresh_every", None)
        return AutoregressiveEngine(model, **kwargs)
    return Engine(model, **kwargs)

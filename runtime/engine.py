"""The engine: requests in, frames and results out. It knows nothing about HTTP, websockets or LSP."""
from __future__ import annotations

import time
from typing import Iterator

import numpy as np

from runtime.answers import Answered, KeptAnswers, answered_stats, by_analysis, import_line
from runtime.confidence import Calibrator, features
from runtime.context import fit
from runtime.contexts import ContextCache, KeptContexts, canonical_key, canonical_window
from runtime.drafts import draft
from runtime.names import existing_names, missing, names_one, offered, warm
from runtime.repair import STRIPES
from runtime.postprocess import heal
from runtime.fixes import name_fix, repair_plan, repairable
from runtime.frames import Completion, Frame, Result
from runtime.request import (EDIT_CONTEXT_TOKENS, EDIT_GROWTH, EXTRA_MIN_TOKENS, EXTRA_TOKENS, MAX_HEALED_CHARS, WINDOWS,
                             DEFAULT_CONTEXT_TOKENS, Request, editor_min_confidence, stops_of, window_of)
from runtime.sampler import Denoiser, SamplerOptions
from runtime.session import LoadedModel
from runtime.showing import harm, postprocess
from runtime.syntax import end_guard, infer_language
from runtime.vocab import SpecialIds


REFRESH_EVERY = 0                 # context cache: recompute the whole sequence every N steps (0: only the first)


class Engine:
    """Requests → denoising → completions. With a cache-capable graph (`kv_cache`), a request's context (prefix and
    suffix) is computed once, beside a window of mask slots, and kept across requests (runtime/contexts.py: the
    same code around the cursor's line, the same keys/values, whatever was typed on it or asked before); each step
    runs only the block being decoded against it (Fast-dLLM's approximate dual cache: the context does not see the
    window's tokens). A new block, or `refresh_every` steps if set, recomputes the whole sequence."""
    drafts = True   # drafts from the context (runtime/drafts.py); off only to measure what they change
    names = True    # names that exist (runtime/names.py); likewise

    def __init__(self, model: LoadedModel, context_tokens: int = DEFAULT_CONTEXT_TOKENS, kv_cache: bool = True,
                 refresh_every: int = REFRESH_EVERY, windows: dict | None = None,
                 type_through: bool = True):
        self.model, self.tok = model, model.tokenizer
        self.special = SpecialIds.from_tokenizer(self.tok, model.vocab)
        self.shift = model.conventions.shift   # 1: the logits at position i predict slot i + 1 (runtime/conventions.py)
        self.max_len = int(model.card["config"]["max_len"])
        self.context_tokens = min(context_tokens, self.max_len)
        self.kv_cache = kv_cache and model.cached
        self.refresh_every = refresh_every
        self.windows = windows or WINDOWS   # the unknown-length policy (tests and studies try others)
        self.kept = KeptContexts()   # canonical contexts (runtime/contexts.py): same request, same keys/values
        self.answers = KeptAnswers(self.count_tokens) if type_through else None   # runtime/answers.py; None: none
        self.calibrator = Calibrator.load(model.model_dir, model.card.get("files", {}).get(model.model_file, ""))
        self._stacked: tuple[list[ContextCache], np.ndarray, np.ndarray] | None = None
        last = (model.card.get("training", {}).get("phases") or [{}])[-1]   # trained to judge present tokens: a
        self.stripes = 0 if last.get("corrupt") else STRIPES                 # repair scores them in one pass
        if self.names:
            warm()

    def denoiser(self, req: Request) -> Denoiser | Answered:
        """Tokenize and window a request into the sampler's state; or, where the user typed a start of a kept
        answer, the rest of it (finished already)."""
        if (answered := self.typed_through(req, t0 := time.perf_counter())) is not None:
            return answered
        if req.mode == "edit" and req.edit == "repair" and (fixed := name_fix(*repairable(req))) is not None \
                and (verdict := harm(req, fixed)).ok:   # a misspelled name analysis can fix: no pass needed
            return Answered(by_analysis(req, fixed, change=verdict.summary, fixed_by="analysis"), t0)
        asked, t_names = req.mode != "edit" and self.names and req.language == "python", time.perf_counter()
        found = existing_names(req.prefix, req.suffix, path=req.path, root=req.root) if asked else "not asked"
        names_ms = 1000 * (time.perf_counter() - t_names) if asked else 0.0
        if isinstance(found, tuple) and (lacking := missing(req.prefix, req.suffix, found[1])):
            return Answered(import_line(req, found, lacking, self.count_tokens, names_ms), t0)   # no pass
        existing = self.tok.encode(req.existing) if req.mode == "edit" else None
        prefix, suffix = req.prefix, "" if req.mode == "completion" else req.suffix
        forced = ""
        if existing is None:
            healed_prefix, forced, healed_suffix = heal(prefix, suffix)
            if len(forced) <= MAX_HEALED_CHARS:
                prefix, suffix = healed_prefix, healed_suffix
            else:   # a huge cursor line stays in the prefix: decoding it in the window would cost a pass a token
                forced = ""
        window = len(existing) + EDIT_GROWTH if existing is not None else window_of(req, self.windows)
        if existing is not None and window > self.context_tokens - EDIT_CONTEXT_TOKENS:
            # a rewrite cut at the window would drop the rest of the block: refuse rather than lose code
            raise ValueError(f"the range to rewrite is {len(existing)} tokens; at most "
                             f"{self.context_tokens - EDIT_CONTEXT_TOKENS - EDIT_GROWTH} fit in one edit: select a "
                             "smaller range (a function, a few lines)")
        healed = self.tok.encode(forced)
        window += len(healed)
        window = -(-window // req.window_multiple) * req.window_multiple  # stable while typing: see Request
        window = min(window, self.context_tokens - 2)
        # the client's cap binds where the engine sized the window (a harness's exact window is its own contract:
        # an oracle-length middle fills it, the suffix's healed pieces included)
        cap = req.max_new_tokens if existing is None and req.window is None else None
        ctx = fit(self.tok, prefix, suffix, self.context_tokens - window)
        if req.mode == "completion":
            ctx.suffix = []
        room = self.context_tokens - window - len(ctx.prefix) - len(ctx.suffix)   # what the file left unused,
        room += max(0, min(EXTRA_TOKENS, self.max_len - self.context_tokens))    # and positions past its context
        extra, chunks = self.extra_context(req.extra, room) if req.extra else ([], 0)
        ctx.prefix = extra + ctx.prefix
        opts = SamplerOptions(
            window=window, block=req.block or window, threshold=req.threshold, temperature=req.temperature,
            top_p=req.top_p, seed=req.seed, stop=stops_of(req), edit=req.edit if existing is not None else "all",
            stripes=self.stripes, forced=forced, eom_bias=req.eom_bias, max_tokens=cap,
            **({"repair": repair_plan(self.tok, req)} if req.edit == "repair" and existing is not None else {}),
            fill_line=existing is None and not (prefix + forced).rsplit("\n", 1)[-1].strip(),
            may_end=None if existing is not None else end_guard(
                req.language, req.prefix, "" if req.mode == "completion" else req.suffix, req.single_line),
            deadline=time.monotonic() + req.deadline_ms / 1000 if req.deadline_ms else None)
        init, masked = None, None
        if existing is not None:
            init = (existing + [self.special.eom] * window)[:window]
        elif (cut := self.tok.last_word_start(forced)) > 0 and \
                len(fixed := self.tok.encode(forced[:cut])) < window:
            # healing in one pass: the tokens the typed text already fixes (every pre-tokenizer piece but the
            # last, which typing may still extend) are written into the window as committed; only the last
            # piece is decoded under the constraint (a cursor line longer than the window is not healed in it)
            init = fixed + [self.special.mask] * (window - len(fixed))
            masked = np.arange(window) >= len(fixed)
        if isinstance(found, tuple):   # a member access or an import: only names analysis knows there
            names, used = offered(req.prefix, req.suffix, *found)
            opts.names, opts.used = (tuple(n[len(found[0]):] for n in these) for these in (names, used))
        if existing is None and self.drafts:   # what followed the cursor's last tokens where they occur earlier
            opts.draft = draft(ctx.prefix + (init[:int(masked.argmax())] if masked is not None else []), window,
                               self.special.ends_set)
        d = Denoiser(ctx.prefix, init, ctx.suffix, opts, self.special, self.tok.decode, masked)
        if existing is None and opts.block >= window:   # a kept context serves it (an edit's window is its block)
            d.context_window = canonical_window(window, self.max_len - len(ctx.prefix) - len(ctx.suffix))
            d.context_key = canonical_key(d.ids[:d.start + d.given_lead], d.ids[d.end:], d.context_window)
        d.stats.tokenize_ms = 1000 * (time.perf_counter() - t0)
        d.stats.extra_tokens, d.stats.extra_chunks = len(extra), chunks
        d.stats.names, d.stats.names_ms = (str(len(found[1])) if isinstance(found, tuple) else found), names_ms
        d.stats.context_tokens, d.stats.truncated = len(ctx.prefix) + len(ctx.suffix), ctx.prefix_cut or ctx.suffix_cut
        return d

    def count_tokens(self, text: str) -> int:
        return len(self.tok.encode(text))

    def extra_context(self, chunks: tuple[str, ...], room: int) -> tuple[list[int], int]:
        """Other files' snippets before this file, as files follow each other in training (each starts with the
        file-start token): the most relevant nearest, each from its start (a definition's head, a module's
        imports) as far as `room` tokens hold. Only the context sees them; post-processing and the syntax rules
        look at this file alone. (ids, chunks used)."""
        ids: list[int] = []
        used = 0
        for chunk in chunks:
            if room - len(ids) < EXTRA_MIN_TOKENS:
                break
            ids = ([self.tok.bos_id] + self.tok.encode(chunk))[:room - len(ids)] + ids
            used += 1
        return ids, used

    def typed_through(self, req: Request, t0: float) -> Answered | None:
        """The rest of a kept answer where the user typed a start of it (runtime/answers.py); None otherwise. The
        request's language is settled first (kept answers are looked up by it, and decoding needs it)."""
        if req.language is None:   # OpenAI and llama.cpp clients send none: the code itself may say
            req.language = infer_language(req.prefix, req.suffix)
        if self.answers is not None and (kept := self.answers.typed_through(req)) is not None:
            text, stats = kept
            return Answered(Completion(req.id, text, text, answered_stats(stats)), t0)
        return None

    def keep(self, req: Request, c: Completion) -> None:
        """Keep an answer for the keystrokes that type it (if an editor would show it)."""
        if self.answers is not None:
            self.answers.keep(req, c.text, c.stats, editor_min_confidence(c))

    def finish(self, req: Request, d: Denoiser | Answered) -> Completion:
        t0 = time.perf_counter()
        if isinstance(d, Answered):
            d.completion.stats["ms"] = 1000 * (t0 - d.t0)
            return d.completion
        res: Result = d.result()
        text = postprocess(req, res.text, res.stats.stop_reason, res.stats.confidence)
        if d.opts.names and not names_one(text, d.opts.names):
            text = ""   # a name the window cut short (`variant` of `variants`) names nothing that exists
        verdict = harm(req, text)
        d.stats.post_ms = 1000 * (time.perf_counter() - t0)
        stats = vars(res.stats).copy()
        stats["calibrated"] = self.calibrator is not None and req.mode != "edit"
        if stats["calibrated"] and text:
            suffix = req.suffix if req.mode == "infill" else ""
            stats["confidence"] = self.calibrator(features(d.generated_probs, text, res.text, req.prefix, suffix,
                                                           res.stats.stop_reason, bool(d.opts.names)))
        if verdict is not None:   # an edit: what it changes, or why it is never offered (the front ends say so)
            stats["change"] = verdict.summary
            if not verdict.ok:
                text, stats["refused"] = "", verdict.why
        c = Completion(req.id, text, res.text, stats)
        self.keep(req, c)
        return c

    def stream(self, req: Request) -> Iterator[Frame | Completion]:
        """Frames, one per forward pass, then the Completion."""
        d = self.denoiser(req)
        while not d.done:
            yield d.advance(self.forward_batch([d])[0])
        yield self.finish(req, d)

    def complete(self, req: Request) -> Completion:
        for item in self.stream(req):
            pass
        return item

    def clear_cache(self) -> None:
        """Forget the contexts and answers kept across requests."""
        self.kept.clear()
        if self.answers is not None:
            self.answers.clear()

    # --- forward passes ----------------------------------------------------------------------------------
    def forward_batch(self, denoisers: list[Denoiser]) -> list[np.ndarray]:
        """One step for several requests: each gets its window's logits (window, V). Requests with a context
        cache run a batched window pass; the rest (new, refreshing, or no cache) a batched full pass."""
        t0 = time.perf_counter()
        out = self._forward(denoisers)
        for d in denoisers:   # each request in a batch waits for the whole pass
            d.stats.pass_ms += 1000 * (time.perf_counter() - t0)
        return out

    def region(self, d: Denoiser) -> tuple[int, int]:
        """The positions a window pass must run for `d`: its active block, less the slots given before decoding
        (healing's typed pieces), whose keys/values join the context after they first ran."""
        lo, hi = d.active()
        return max(lo, d.start + d.given_lead), hi

    def _forward(self, denoisers: list[Denoiser]) -> list[np.ndarray]:
        if not self.kv_cache:
            return self._full(denoisers)
        if not self.refresh_every:
            self._contexts([d for d in denoisers if d.cache is None and d.context_key and d.stats.forward_passes == 0])
        out: dict[int, np.ndarray] = {}
        full, window = [], []
        for d in denoisers:
            (lo, hi), c = self.region(d), d.cache
            # a cache whose region starts earlier (a kept context: the whole window) serves, and is narrowed
            refresh = c is None or c.region[1] != hi or not d.active()[0] <= c.region[0] <= lo or (
                self.refresh_every and d.stats.forward_passes % self.refresh_every == 0)
            (full if refresh else window).append(d)
        if full:
            out.update(zip(map(id, full), self._full(full)))
        if window:
            out.update(zip(map(id, window), self._window(window)))
        return [out[id(d)] for d in denoisers]

    def _contexts(self, denoisers: list[Denoiser]) -> None:
        """Each new request's canonical context (runtime/contexts.py), kept or computed now in one batched full
        pass over prefix + mask slots + suffix, moved to the request's window: its first step is a window pass
        either way, so what it gets never depends on what was asked before."""
        kept = {d.context_key: c for d in denoisers if (c := self.kept.get(d.context_key)) is not None}
        made: dict[bytes, ContextCache] = {}   # (held here: keeping a batch's new ones may evict its kept ones)
        todo = list({d.context_key: d for d in denoisers if d.context_key not in kept}.values())
        if todo:
            s, mask = self.shift, self.special.mask
            seqs = [np.concatenate([d.ids[:d.start + d.given_lead],
                                    np.full(d.context_window - d.given_lead, mask, np.int64), d.ids[d.end:]])
                    for d in todo]
            T = max(len(q) for q in seqs)
            ids = np.full((len(seqs), T), self.tok.pad_id, np.int64)
            attend = np.zeros((len(seqs), T), bool)
            for i, q in enumerate(seqs):
                ids[i, :len(q)], attend[i, :len(q)] = q, True
            positions = np.broadcast_to(np.arange(T, dtype=np.int64), ids.shape)
            empty = self.model.empty_cache(len(seqs))
            _, keys, values = self.model.forward_kv(ids, positions, attend, empty, empty, T - 1)
            for i, (d, q) in enumerate(zip(todo, seqs)):
                lo, hi = d.start + d.given_lead, d.start + d.context_window
                keep = np.r_[0:lo - s, hi:len(q)]
                made[d.context_key] = ContextCache(keys[:, i:i + 1, :, keep], values[:, i:i + 1, :, keep], (lo, hi), s)
                self.kept.keep(d.context_key, made[d.context_key])
                d.stats.forward_passes += 1   # its own pass, though no step
        for d in denoisers:
            if (c := made.get(d.context_key)) is None:
                c, d.stats.context_reused = kept[d.context_key], True
            d.cache = c.moved((c.region[0], d.end), self.model.conventions.rope_theta, self.model.conventions.rope_pairs)

    def _full(self, denoisers: list[Denoiser]) -> list[np.ndarray]:
        """The whole sequences, right-padded; with a cache-capable graph, their contexts' keys/values are kept for
        the request's next steps."""
        seqs = [d.inputs() for d in denoisers]
        T = max(len(s) for s in seqs)
        ids = np.full((len(seqs), T), self.tok.pad_id, np.int64)
        mask = np.zeros((len(seqs), T), bool)
        for i, s in enumerate(seqs):
            ids[i, :len(s)], mask[i, :len(s)] = s, True
        lf = min(d.start for d in denoisers) - self.shift
        if not self.kv_cache:
            logits = self.model.forward(ids, mask, lf)
        else:
            positions = np.broadcast_to(np.arange(T, dtype=np.int64), ids.shape)
            empty = self.model.empty_cache(len(seqs))
            logits, keys, values = self.model.forward_kv(ids, positions, mask, empty, empty, lf)
            for i, (d, s) in enumerate(zip(denoisers, seqs)):
                lo, hi = d.active()
                keep = np.r_[0:lo - self.shift, hi:len(s)]
                d.cache = ContextCache(keys[:, i:i + 1, :, keep], values[:, i:i + 1, :, keep], (lo, hi), self.shift)
                if (given := self.region(d)[0]) > lo:
                    part = np.s_[:, i:i + 1, :, lo - self.shift:given - self.shift]
                    d.cache = d.cache.narrowed(given, keys[part], values[part])
        return [logits[i, d.start - self.shift - lf:d.end - self.shift - lf] for i, d in enumerate(denoisers)]

    def _batch_past(self, denoisers: list[Denoiser], P: int) -> tuple:
        """The caches of a batch, right-padded to P and stacked; kept while the batch's caches stay the same
        (a batch usually runs several steps unchanged), so the copy is paid once, not every step."""
        caches = [d.cache for d in denoisers]
        if len(caches) == 1:
            return caches[0].on(self.model)
        last = self._stacked
        if last is not None and len(last[0]) == len(caches) and all(a is b for a, b in zip(last[0], caches)):
            return last[1], last[2]
        shape = list(caches[0].keys.shape)
        shape[1], shape[3] = len(caches), P
        past_k, past_v = np.zeros(shape, np.float32), np.zeros(shape, np.float32)
        for i, c in enumerate(caches):
            past_k[:, i, :, :c.length], past_v[:, i, :, :c.length] = c.keys[:, 0], c.values[:, 0]
        self._stacked = (caches, self.model.on_device(past_k), self.model.on_device(past_v))
        return self._stacked[1], self._stacked[2]

    def _window(self, denoisers: list[Denoiser]) -> list[np.ndarray]:
        """Each active block (and, with shifted logits, the slot before it), attending to the cached rest plus
        themselves; the logits of the window's other slots are -inf (the sampler only looks at the active block)."""
        B, s = len(denoisers), self.shift
        Q = max(d.cache.region[1] - d.cache.region[0] + s for d in denoisers)
        P = max(d.cache.length for d in denoisers)
        ids = np.full((B, Q), self.tok.pad_id, np.int64)
        positions = np.zeros((B, Q), np.int64)
        mask = np.zeros((B, P + Q), bool)
        past_k, past_v = self._batch_past(denoisers, P)
        for i, d in enumerate(denoisers):
            (lo, hi), c = d.cache.region, d.cache.length
            q = hi - lo + s
            ids[i, :q] = d.inputs()[lo - s:hi]
            positions[i, :q] = np.arange(lo - s, hi)
            mask[i, :c], mask[i, P:P + q] = True, True
        narrow = [self.region(d)[0] - d.cache.region[0] for d in denoisers]
        logits, keys, values = self.model.forward_kv(ids, positions, mask, past_k, past_v, 0, new_kv=any(narrow))
        out = []
        for i, d in enumerate(denoisers):
            lo, hi = d.cache.region
            if narrow[i]:   # the given slots ran with the rest this once; from now on they are context
                d.cache = d.cache.narrowed(lo + narrow[i], keys[:, i:i + 1, :, :narrow[i]],
                                           values[:, i:i + 1, :, :narrow[i]])
            if (lo, hi) == (d.start, d.end):
                out.append(logits[i, :hi - lo])
            else:
                full = np.full((d.end - d.start, logits.shape[-1]), -np.inf, np.float32)
                full[lo - d.start:hi - d.start] = logits[i, :hi - lo]
                out.append(full)
        return out

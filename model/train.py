"""quicksilver train: masked-diffusion (or autoregressive twin) training with exact resume, time budgets and DDP."""
from __future__ import annotations

import json
import math
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from tqdm import tqdm

from model.checkpoint import STATE_FILE, checkpoint_from_model_dir, load_model, load_optimizer, read_state, save_optimizer, save_weights
from model.corpus import META_FILE, load_shard
from model.repo_corpus import is_repo_corpus, load_rows
from model.network import SIZES, ModelConfig, Transformer
from model.objective import (ENTROPY_TEMPERATURE, EVAL_MASK_RATES, Examples, Mixture, autoregressive_loss,
                             certainty_forcing_loss, corrupt_tokens, diffusion_loss, judged_loss, mask_tokens,
                             unigram_cross_entropy)
from model.tokenizer import SPECIAL_TOKENS, TOKENIZER_FILE, CodeTokenizer

CALIBRATION_SKIP = 3      # first steps left untimed (compilation, allocator warm-up)
CALIBRATION_STEPS = 10    # steps timed to turn a --minutes budget into a step count
MIN_LR_RATIO = 0.1        # cosine decays to this share of the peak learning rate
EVAL_BATCHES = 8
EVAL_SEED = 1234


def add_arguments(p) -> None:
    p.add_argument("--corpus", type=Path, default=Path("data/corpus"), help="folder written by `quicksilver corpus`")
    p.add_argument("--out", type=Path, required=True, help="checkpoint folder (resumed if it holds one)")
    p.add_argument("--size", choices=sorted(SIZES), default="cpu", help="model size preset")
    p.add_argument("--objective", choices=["diffusion", "autoregressive"], default="diffusion",
                   help="masked diffusion (bidirectional) or the autoregressive FIM twin (causal)")
    p.add_argument("--init-from", type=Path, help="start from the weights of this checkpoint (e.g. an autoregressive "
                   "run), or of an exported model directory with int8 training weights (e.g. model/default: "
                   "`--objective autoregressive --init-from model/default` makes its twin)")
    p.add_argument("--minutes", type=float, help="wall-clock budget for this invocation")
    p.add_argument("--steps", type=int, help="total optimiser steps (default: estimated from --minutes)")
    p.add_argument("--until", type=int, help="stop this invocation at this step, the schedule still over --steps "
                                             "(a later invocation resumes: finetune checks held-out files between)")
    p.add_argument("--batch", type=int, default=16, help="sequences per step (per process)")
    p.add_argument("--seq", type=int, help="sequence length (default: the size's max_len)")
    p.add_argument("--lr", type=float, default=1e-3, help="peak learning rate")
    p.add_argument("--warmup", type=int, default=100, help="linear warm-up steps")
    p.add_argument("--weight-decay", type=float, default=0.1, help="AdamW weight decay")
    p.add_argument("--weighting", choices=["mean", "inv_t"], default="mean", help="diffusion loss weighting")
    p.add_argument("--certainty", type=float, default=0.0,
                   help="certainty forcing on the data (dParallel's entropy term, ground truth as the target): this "
                        "weight × the entropy of the masked slots the model already predicts right; 0: off")
    p.add_argument("--corrupt", type=float, default=0.0,
                   help="corruption beyond masks: this share of the visible tokens of each example's region replaced "
                        "(half by a token of the same row, half by any), the original the target there, so the "
                        "model learns to judge present tokens (repair); 0: masks only")
    p.add_argument("--mixture", type=Mixture.parse, default=Mixture(), help="random:infill:completion example shares")
    p.add_argument("--device", default="cpu", help="cpu or cuda (bf16 autocast on cuda)")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast on a CPU too (fast only with AVX512-BF16/AMX)")
    p.add_argument("--ckpt-minutes", type=float, default=5.0, help="checkpoint and held-out eval every N minutes")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0: all cores)")
    p.add_argument("--compile", action="store_true", help="torch.compile the model (GPU runs)")
    p.add_argument("--shard-mb", type=float, default=15, help="largest weights file written")
    p.add_argument("--eval-only", action="store_true",
                   help="print the held-out losses of --out's checkpoint (or of --init-from) on --corpus and exit, "
                        "writing nothing (the windows depend on --batch: compare runs at the same --batch)")


def lr_at(step: int, total: int, peak: float, warmup: int) -> float:
    if step < warmup or total is None:
        return peak * min(1.0, (step + 1) / warmup)
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return peak * (MIN_LR_RATIO + (1 - MIN_LR_RATIO) * 0.5 * (1 + math.cos(math.pi * progress)))


class Trainer:
    """Holds the model, optimiser, data and RNGs of one run; `step()` is one optimiser step."""

    def __init__(self, args, rank: int = 0, world: int = 1):
        self.args, self.rank, self.world = args, rank, world
        self.device = torch.device(args.device)
        self.tok = CodeTokenizer.load(args.corpus / TOKENIZER_FILE)
        self.rows = is_repo_corpus(args.corpus)   # rows with cross-file context (quicksilver repo-corpus)
        if self.rows:
            self.train_data, self.heldout = load_rows(args.corpus, "train"), load_rows(args.corpus, "heldout")
            args.seq = self.train_data[0].shape[1]
        else:
            self.train_data, self.heldout = load_shard(args.corpus, "train"), load_shard(args.corpus, "heldout")
        self.examples = Examples(self.tok, args.mixture)
        resume = (args.out / STATE_FILE).exists()
        if resume:
            self.model, self.state = load_model(args.out)
        else:
            causal = args.objective == "autoregressive"
            torch.manual_seed(args.seed)
            source = args.init_from
            if args.init_from and not (args.init_from / STATE_FILE).exists() and (args.init_from / "card.json").exists():
                if (args.init_from / TOKENIZER_FILE).read_bytes() != (args.corpus / TOKENIZER_FILE).read_bytes():
                    raise SystemExit(f"{args.corpus} is not in {args.init_from}'s tokenization: build it with "
                                     f"`quicksilver corpus --tokenizer {args.init_from / TOKENIZER_FILE}`")
                args.init_from = checkpoint_from_model_dir(args.init_from, args.out / "init")   # a model directory
            if args.init_from:  # the warm start's size wins over --size
                self.model, _ = load_model(args.init_from, causal=causal)
            else:
                self.model = Transformer(ModelConfig(vocab_size=self.tok.vocab_size, causal=causal, **SIZES[args.size]))
            cfg = self.model.cfg
            if args.seq:
                cfg.max_len = args.seq
            self.state = {"config": cfg.to_dict(), "objective": args.objective, "step": 0, "tokens": 0, "seconds": 0.0,
                          "total_steps": args.steps, "history": [], "init_from": str(source or ""),
                          "init_tokens": read_state(args.init_from)["tokens_total"] if args.init_from else 0,
                          "init_seconds": read_state(args.init_from)["seconds_total"] if args.init_from else 0.0,
                          "device": args.device, "weighting": args.weighting, "mixture": vars(args.mixture),
                          "certainty": args.certainty, "corrupt": args.corrupt}
        if resume and (args.steps or args.minutes):  # a new budget: recalibrate the schedule unless steps are given
            self.state["total_steps"] = args.steps
        self.cfg = self.model.cfg
        self.model.to(self.device)
        decay = [p for n, p in self.model.named_parameters() if p.dim() >= 2]
        other = [p for n, p in self.model.named_parameters() if p.dim() < 2]
        self.opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                                      {"params": other, "weight_decay": 0.0}], lr=args.lr, betas=(0.9, 0.95),
                                     fused=self.device.type == "cuda")
        self.gen = torch.Generator(device=self.device)
        self.gen.manual_seed(args.seed + 7919 * rank)
        self.rng = np.random.default_rng(args.seed + 7919 * rank)
        if resume and not getattr(args, "eval_only", False):  # evaluating needs no optimiser (brought-back weights have none)
            self.gen.set_state(load_optimizer(self.opt, args.out, self.device).to(torch.uint8))
            self.rng.bit_generator.state = self.state["rng_numpy"]
            if rank:  # other DDP ranks continue with streams of their own
                self.rng = np.random.default_rng([args.seed, rank, self.state["step"]])
        self.net = self.model
        if world > 1:
            self.net = torch.nn.parallel.DistributedDataParallel(self.model)
        if args.compile:
            self.net = torch.compile(self.net)
        # bf16 on a GPU; on a CPU only where asked (without AVX512-BF16 it is ~20x slower than fp32)
        self.autocast = torch.autocast(self.device.type, dtype=torch.bfloat16,
                                       enabled=self.device.type == "cuda" or args.bf16)

    @property
    def diffusion(self) -> bool:
        return not self.cfg.causal

    def flat_tokens(self) -> tuple[np.ndarray, np.ndarray]:
        if not self.rows:
            return self.train_data, self.heldout
        return tuple(np.asarray(d[0][:4096]).ravel() for d in (self.train_data, self.heldout))

    def batch(self, data, rng: np.random.Generator, batch: int) -> tuple[np.ndarray, np.ndarray | None]:
        """(token rows, where each row's file starts or None): windows of the flat corpus, or repo-corpus rows."""
        if not self.rows:
            return self.examples.windows(data, batch, self.cfg.max_len, rng), None
        pick = np.sort(rng.integers(0, len(data[0]), size=batch))
        return np.asarray(data[0][pick], dtype=np.int64), np.asarray(data[1][pick])

    def loss_on(self, raw: np.ndarray, generator=None, rate=None, starts=None) -> torch.Tensor:
        if self.diffusion:
            clean, region = self.examples.diffusion(raw, self.rng, starts) if rate is None else \
                (raw, _random_region(raw, starts))
            clean, region = torch.from_numpy(clean).to(self.device), torch.from_numpy(region).to(self.device)
            noisy, masked, t = mask_tokens(clean, region, self.tok.mask_id, generator, rate)
            if rate is None and self.args.corrupt:   # training rows: some visible tokens wrong, to be judged
                noisy, corrupted = corrupt_tokens(noisy, clean, region, masked, self.args.corrupt,
                                                  len(SPECIAL_TOKENS), self.tok.vocab_size, generator)
                with self.autocast:
                    return judged_loss(self.net(noisy), clean, masked, corrupted, region)
            with self.autocast:
                logits = self.net(noisy)
            if rate is None and self.args.certainty:   # training rows (held-out evals stay plain cross-entropy)
                return certainty_forcing_loss(logits, clean, masked, self.args.certainty, ENTROPY_TEMPERATURE)[0]
            return diffusion_loss(logits, clean, masked, t, self.args.weighting if rate is None else "mean")
        ids = self.examples.autoregressive(raw, self.rng) if rate is None else raw
        ids = torch.from_numpy(ids).to(self.device)
        with self.autocast:
            logits = self.net(ids)
        return autoregressive_loss(logits, ids)

    def step(self) -> float:
        a, s = self.args, self.state
        lr = lr_at(s["step"], s["total_steps"], a.lr, a.warmup)
        for g in self.opt.param_groups:
            g["lr"] = lr
        raw, starts = self.batch(self.train_data, self.rng, a.batch)
        loss = self.loss_on(raw, self.gen, starts=starts)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.opt.step()
        s["step"] += 1
        s["tokens"] += a.batch * self.cfg.max_len * self.world
        return loss.item()

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Held-out loss on fixed windows: masked-token CE at fixed rates (diffusion) or next-token CE."""
        self.model.eval()
        rng = np.random.default_rng(EVAL_SEED)
        gen = torch.Generator(device=self.device).manual_seed(EVAL_SEED)
        raws = [self.batch(self.heldout, rng, self.args.batch) for _ in range(EVAL_BATCHES)]
        out = {}
        rates = EVAL_MASK_RATES if self.diffusion else (None,)
        saved_net, self.net = self.net, self.model
        for rate in rates:
            key = f"masked_ce@{rate}" if rate is not None else "next_token_ce"
            out[key] = float(np.mean([self.loss_on(r, gen, rate if rate is not None else 0.0, starts).item()
                                      for r, starts in raws]))
        self.net = saved_net
        self.model.train()
        return out

    def save(self, elapsed: float) -> None:
        s, out = self.state, self.args.out
        tmp = out.with_name(out.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        save_weights(self.model, tmp, shard_bytes=int(self.args.shard_mb * 2**20))
        save_optimizer(self.opt, self.gen.get_state(), tmp)
        s["rng_numpy"] = self.rng.bit_generator.state
        s["seconds"] = elapsed
        s["tokens_total"] = s["tokens"] + s["init_tokens"]
        s["seconds_total"] = s["seconds"] + s["init_seconds"]
        (tmp / STATE_FILE).write_text(json.dumps(s, indent=1))
        shutil.copy(self.args.corpus / TOKENIZER_FILE, tmp / TOKENIZER_FILE)
        shutil.copy(self.args.corpus / META_FILE, tmp / META_FILE)
        old = out.with_name(out.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        if out.exists():
            out.rename(old)
        tmp.rename(out)
        shutil.rmtree(old, ignore_errors=True)


def _random_region(raw: np.ndarray, starts: np.ndarray | None = None) -> np.ndarray:
    region = np.ones(raw.shape, dtype=bool)
    region[:, 0] = False
    for r, s in enumerate(starts if starts is not None else ()):
        region[r, :s + 1] = False   # a repo row's context is never asked about
    return region


def train(args) -> dict:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if world > 1:
        dist.init_process_group("nccl" if args.device.startswith("cuda") else "gloo")
        if args.device.startswith("cuda"):
            args.device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
    torch.set_num_threads(args.threads or max(1, (os.cpu_count() or 1) // world))
    if args.device.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = True
    tr = Trainer(args, rank, world)
    s, main = tr.state, rank == 0
    if args.eval_only:
        result = {"heldout": tr.evaluate(), "unigram_ce": unigram_cross_entropy(*tr.flat_tokens(),
                                                                                tr.tok.vocab_size)}
        print(json.dumps(result))
        return result
    if main:
        print(f"{s['objective']} model, {tr.model.num_params() / 1e6:.2f} M parameters, config {s['config']}", file=sys.stderr)
        if "unigram_ce" not in s:
            s["unigram_ce"] = unigram_cross_entropy(*tr.flat_tokens(), tr.tok.vocab_size)
    start, base = time.time(), s["seconds"]
    budget = args.minutes * 60 if args.minutes else math.inf
    first_step, last_ckpt = s["step"], time.time()
    if s["total_steps"] is None and not args.minutes:
        raise SystemExit("give --steps or --minutes")
    bar = tqdm(total=s["total_steps"], initial=s["step"], desc="train", disable=not main, file=sys.stderr)
    while True:
        done = s["step"] - first_step
        if done == CALIBRATION_SKIP:
            t_skip = time.time()
        if s["total_steps"] is None and done == CALIBRATION_SKIP + CALIBRATION_STEPS:
            per_step = (time.time() - t_skip) / CALIBRATION_STEPS
            s["total_steps"] = s["step"] + int((budget - (time.time() - start)) / per_step)
            bar.total = s["total_steps"]
        stop = s["total_steps"] is not None and s["step"] >= s["total_steps"]
        stop = stop or time.time() - start >= budget or (args.until is not None and s["step"] >= args.until)
        if world > 1:
            flag = torch.tensor([float(stop)], device=tr.device)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            stop = bool(flag.item())
        if stop:
            break
        try:
            loss = tr.step()
        except Exception as e:  # a compiler failure should not cost a GPU lease: fall back to eager
            if not args.compile or tr.net is tr.model:
                raise
            print(f"torch.compile failed ({type(e).__name__}: {e}); continuing in eager mode", file=sys.stderr)
            tr.net = tr.model
            loss = tr.step()
        s["last_loss"] = loss
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.3f}", tok_s=f"{(s['step'] - first_step) * args.batch * tr.cfg.max_len * world / (time.time() - start):.0f}", refresh=False)
        if main and time.time() - last_ckpt > args.ckpt_minutes * 60:
            s["history"].append({"step": s["step"], "tokens": s["tokens"] + s["init_tokens"], **tr.evaluate()})
            tr.save(base + time.time() - start)
            last_ckpt = time.time()
    bar.close()
    if main:
        s["heldout"] = tr.evaluate()
        s["history"].append({"step": s["step"], "tokens": s["tokens"] + s["init_tokens"], **s["heldout"]})
        tr.save(base + time.time() - start)
        print(json.dumps({"step": s["step"], "tokens": s["tokens"], "heldout": s["heldout"],
                          "unigram_ce": round(s["unigram_ce"], 3)}), flush=True)
    if world > 1:
        dist.barrier()   # rank 0 saves last: the others wait for it, or gloo may see its peers gone mid-teardown
        dist.destroy_process_group()
    return s


def run(args) -> None:
    train(args)

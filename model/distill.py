"""quicksilver distill: certainty-forcing self-distillation (dParallel, Chen et al. 2025) on the model's own answers.

A diffusion step commits every slot the model is sure of (runtime/sampler.py); the shipped model is rarely sure of
two at once, so a line costs a pass a token. The published fix trains: the model learns to be sure, in one pass,
of what it would have decoded over several.

1. **Answers** (`OUT/answers/part-*.npz`, resumable). Cursors are drawn as the editor eval draws them
   (evals/editor.py: a partial line, a blank line in a block, a missing line) from the corpus's *training* files,
   and asked of the teacher (the model being distilled, as served: `editor_request`, the product's decoding). Each
   answer is kept as the sequence its sampler ended with — prefix, the window as committed, suffix — with the step
   that committed each slot. Degenerate answers (evals/editor.py `judge`) are left out.
2. **Training** (`OUT/ckpt`, resumed). Each answer is a row twice: its decoded slots masked at a rate t ~ U(0, 1),
   and at the complement (dParallel's pair: every slot is a target once). The loss is the cross-entropy to the
   teacher's tokens plus ENTROPY_WEIGHT × the entropy (at ENTROPY_TEMPERATURE) of the masked slots the student
   already predicts right (objective.certainty_forcing_loss). A line's answer ends at its line break
   (`end_at_line`); other slots the teacher never decoded (after a stop sequence) stay masked without a target;
   tokens the engine wrote in (the typed part of the cursor's line) stay visible. REPLAY rows of the pre-training
   objective keep what else it knew.
3. **Export** (`OUT/model`): an int8 model directory as `quicksilver export` writes it, for `--model`.

Only the shipped family (a model directory with int8 training weights) can be distilled here.
"""
from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

ENTROPY_WEIGHT = 2.0          # dParallel's weight for the entropy of rightly predicted slots (its temperature is
                              # objective.ENTROPY_TEMPERATURE, shared with `train --certainty`)
ROW_TOKENS = 256              # a training row: the window, and the code around it cut to this length
SUFFIX_SHARE = 0.25           # of the context a row keeps, at most this share after the window
PART_CURSORS = 20             # cursors of each kind per answers part (3 kinds)
PART_DOCS = 60                # training files a part draws its cursors from
MONITOR_CURSORS = 10          # per kind, from held-out files (seed MONITOR_SEED): the first-pass sureness printed
MONITOR_SEED = 97             # at each checkpoint (never the editor eval's seeds 0-7)


def add_arguments(p) -> None:
    p.add_argument("--out", type=Path, required=True, help="work folder: answers/, ckpt/, model/ (resumed)")
    p.add_argument("--model", type=Path, help="model directory to distil (default: the shipped model)")
    p.add_argument("--corpus", type=Path, default=Path("data/corpus"), help="folder written by `quicksilver corpus`")
    p.add_argument("--parts", type=int, default=80, help="answer parts to collect (60 cursors each)")
    p.add_argument("--minutes", type=float, default=60, help="training budget for this invocation")
    p.add_argument("--steps", type=int, help="total optimiser steps (default: from --minutes on the first run)")
    p.add_argument("--batch", type=int, default=8, help="answers per step (each is two rows)")
    p.add_argument("--replay", type=int, default=4, help="rows of the pre-training objective per step")
    p.add_argument("--lr", type=float, default=2e-4, help="peak learning rate")
    p.add_argument("--warmup", type=int, default=20, help="linear warm-up steps")
    p.add_argument("--ckpt-minutes", type=float, default=5.0, help="checkpoint every N minutes")
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0: all cores)")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--phase", choices=["all", "answers", "train", "export"], default="all",
                   help="run one phase only (each resumes from what OUT holds)")


# --- 1. answers -----------------------------------------------------------------------------------------------
def corpus_files(corpus: Path, tok, part: str = "train") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The corpus's `part` shard and where its files start and end (each ends with the end-of-file token)."""
    from model.corpus import load_shard
    data = load_shard(corpus, part)
    ends = np.flatnonzero(data == tok.eos_id)
    return data, np.r_[0, ends[:-1] + 1], ends


def draw_texts(files: tuple[np.ndarray, np.ndarray, np.ndarray], tok, rng: np.random.Generator, n: int) -> list[str]:
    """n of `corpus_files`' files, decoded."""
    data, starts, ends = files
    pick = rng.choice(len(ends), size=min(n, len(ends)), replace=False)
    return [tok.decode(data[starts[i]:ends[i]].astype(np.int64).tolist()) for i in pick]


def worth_learning(c: dict, out) -> bool:
    """An answer (a runtime.engine.Completion) to learn from: not empty, not refused, and neither what is shown nor
    the raw window (post-processing cuts it, but every slot of it is a target) repeats a line or re-writes one
    around the cursor."""
    from evals.editor import judge
    return bool(out.raw.strip()) and not out.stats.get("refused") and \
        not judge(c, out.raw)["degenerate"] and not judge(c, out.text)["degenerate"]


def answer(engine, c: dict) -> dict | None:
    """The teacher's answer at cursor c as the sequence its sampler ended with; None if not worth learning."""
    from runtime.request import editor_request
    req = editor_request(c["prefix"], c["suffix"])
    d = engine.denoiser(req)
    while not d.done:
        d.advance(engine.forward_batch([d])[0])
    if not worth_learning(c, engine.finish(req, d)):
        return None
    r = {"ids": d.ids.copy(), "start": d.start, "end": d.end, "step_of": d.step_of.copy(),
         "passes": d.stats.forward_passes, "tokens": d.stats.tokens}
    return end_at_line(r, engine.special.writes(("\n",)), engine.special.eom) if req.single_line else r


def end_at_line(r: dict, breaks: np.ndarray, eom: int) -> dict:
    """A line's answer ends at its line break: decoding stopped at the stop sequence, so the slots after it were
    never decoded (or hold the start of a next line no one sees). They become <|eom|>, committed with the break —
    the window of a one-line middle as training lays it out (the line, the break the suffix's indentation merges
    with, then padding) — so the student learns where a line ends instead of guessing at slots left masked."""
    win, step_of = r["ids"][r["start"]:r["end"]].copy(), r["step_of"].copy()
    filled = np.flatnonzero(step_of < 0)
    first_masked = filled[0] if len(filled) else len(win)
    hits = np.flatnonzero(breaks[win[1:first_masked]]) + 1   # slot 0 is the break before the line (healing)
    if not len(hits):
        return r
    k = int(hits[0])
    win[k + 1:], step_of[k + 1:] = eom, step_of[k]
    ids = r["ids"].copy()
    ids[r["start"]:r["end"]] = win
    return {**r, "ids": ids, "step_of": step_of}


def save_answers(rows: list[dict], path: Path) -> None:
    lengths = np.array([len(r["ids"]) for r in rows], np.int64)
    tmp = path.with_name("." + path.name)   # not a part-*.npz until it is whole
    np.savez(tmp, ids=np.concatenate([r["ids"] for r in rows]), lengths=lengths,
             start=np.array([r["start"] for r in rows]), end=np.array([r["end"] for r in rows]),
             step_of=np.concatenate([r["step_of"] for r in rows]),
             passes=np.array([r["passes"] for r in rows]), tokens=np.array([r["tokens"] for r in rows]))
    tmp.rename(path)


def load_answers(folder: Path) -> list[dict]:
    rows = []
    for path in sorted(folder.glob("part-*.npz")):
        z = np.load(path)
        offs, woffs = np.r_[0, np.cumsum(z["lengths"])], np.r_[0, np.cumsum(z["end"] - z["start"])]
        for i in range(len(z["lengths"])):
            rows.append({"ids": z["ids"][offs[i]:offs[i + 1]], "start": int(z["start"][i]), "end": int(z["end"][i]),
                         "step_of": z["step_of"][woffs[i]:woffs[i + 1]], "passes": int(z["passes"][i]),
                         "tokens": int(z["tokens"][i])})
    return rows


def collect(args, model_dir: Path) -> None:
    """Answer parts 0 .. parts-1 that OUT does not hold yet (each part: its own files and cursors)."""
    from evals.editor import cursors_in
    from runtime.engine import Engine
    from runtime.session import load
    folder = args.out / "answers"
    folder.mkdir(parents=True, exist_ok=True)
    engine = Engine(load(model_dir, threads=args.threads))
    files = corpus_files(args.corpus, engine.tok)
    for k in range(args.parts):
        path = folder / f"part-{k:04d}.npz"
        if path.exists():
            continue
        t0 = time.time()
        rng = np.random.default_rng([args.seed, k])
        texts = draw_texts(files, engine.tok, rng, PART_DOCS)
        rows = [r for c in cursors_in(texts, [f"train-{k}-{i}" for i in range(len(texts))], PART_CURSORS,
                                      seed=int(rng.integers(1 << 30))) if (r := answer(engine, c)) is not None]
        if rows:
            save_answers(rows, path)
        print(json.dumps({"part": k, "answers": len(rows), "seconds": round(time.time() - t0, 1),
                          "tokens_per_pass": round(sum(r["tokens"] for r in rows) /
                                                   max(1, sum(r["passes"] for r in rows)), 3)}), flush=True)


# --- 2. training ----------------------------------------------------------------------------------------------
def crop(r: dict, length: int = ROW_TOKENS) -> tuple[np.ndarray, int, int, np.ndarray]:
    """(ids, window start, window end, step_of) with the code around the window cut to `length` tokens."""
    ids, a, b = r["ids"], r["start"], r["end"]
    room = max(0, length - (b - a))
    keep_suffix = min(len(ids) - b, int(room * SUFFIX_SHARE))
    lo = max(0, a - (room - keep_suffix))
    hi = min(len(ids), lo + max(length, b - lo + keep_suffix))
    return ids[lo:hi], a - lo, b - lo, r["step_of"]


def distill_rows(rows: list[dict], mask_id: int, pad_id: int, rng: np.random.Generator):
    """Two rows per answer (a mask and its complement over the decoded slots), right-padded:
    (noisy, targets, masked-with-target, key_mask) as numpy arrays."""
    T = max(len(crop(r)[0]) for r in rows)
    n = 2 * len(rows)
    noisy, targets = np.full((n, T), pad_id, np.int64), np.full((n, T), pad_id, np.int64)
    masked, keys = np.zeros((n, T), bool), np.zeros((n, T), bool)
    for i, r in enumerate(rows):
        ids, a, b, step_of = crop(r)
        decoded, never = step_of > 0, step_of < 0
        m = rng.random(b - a) < rng.random()
        for j, part in enumerate((m, ~m)):
            row = 2 * i + j
            noisy[row, :len(ids)], targets[row, :len(ids)], keys[row, :len(ids)] = ids, ids, True
            win = noisy[row, a:b]
            win[(part & decoded) | never] = mask_id
            masked[row, a:b] = part & decoded
    return noisy, targets, masked, keys


def first_pass_sureness(model, rows: list[dict], mask_id: int, device) -> dict:
    """With every decoded slot masked (a request's first pass): the share of them the student predicts as the
    teacher did with probability >= the sampler's threshold (what one pass could commit), and its cross-entropy
    to the teacher."""
    import torch
    import torch.nn.functional as F

    from runtime.sampler import THRESHOLD
    sure = right = ce = n = 0
    model.eval()
    with torch.no_grad():
        for r in rows:
            ids, a, b, step_of = crop(r)
            x = torch.from_numpy(ids.copy()).to(device)[None]
            target = x.clone()
            win = x[0, a:b]
            win[torch.from_numpy(step_of != 0).to(device)] = mask_id
            logits = model(x)[0, a - 1:b - 1].float()
            logp = F.log_softmax(logits, -1)
            sel = torch.from_numpy(step_of > 0).to(device)
            y = target[0, a:b][sel]
            lp = logp[sel].gather(-1, y[:, None])[:, 0]
            sure += int(((logp[sel].argmax(-1) == y) & (lp.exp() >= THRESHOLD)).sum())
            right += int((logp[sel].argmax(-1) == y).sum())
            ce += float(-lp.sum())
            n += int(sel.sum())
    model.train()
    return {"sure_first_pass": round(sure / max(1, n), 4), "right_first_pass": round(right / max(1, n), 4),
            "teacher_ce": round(ce / max(1, n), 4), "slots": n}


def train(args, model_dir: Path) -> None:
    import torch
    from model.checkpoint import (STATE_FILE, checkpoint_from_model_dir, load_model, load_optimizer, read_state,
                                  save_optimizer, save_weights)
    from model.corpus import load_shard
    from model.objective import ENTROPY_TEMPERATURE, Examples, certainty_forcing_loss, diffusion_loss, mask_tokens
    from model.tokenizer import TOKENIZER_FILE, CodeTokenizer
    from model.train import lr_at
    from evals.editor import cursors_in
    from runtime.engine import Engine
    from runtime.session import load

    torch.set_num_threads(args.threads or max(1, torch.get_num_threads()))
    device = torch.device(args.device)
    answers = load_answers(args.out / "answers")
    if not answers:
        raise SystemExit(f"{args.out / 'answers'} holds no answers: run the answers phase first")
    ckpt = args.out / "ckpt"
    tok = CodeTokenizer.load(model_dir / TOKENIZER_FILE)
    if (ckpt / STATE_FILE).exists():
        model, state = load_model(ckpt)
        state["total_steps"] = args.steps   # a new budget: given in steps, or fixed from --minutes again
    else:
        start = checkpoint_from_model_dir(model_dir, args.out / "start")
        model, state = load_model(start)
        state = {**state, "init_from": str(start), "init_tokens": state["tokens_total"],
                 "init_seconds": state["seconds_total"], "step": 0, "tokens": 0, "seconds": 0.0,
                 "total_steps": args.steps, "history": [], "objective": "diffusion",
                 "distill": {"answers": len(answers), "entropy_weight": ENTROPY_WEIGHT,
                             "entropy_temperature": ENTROPY_TEMPERATURE, "batch": args.batch,
                             "replay": args.replay, "lr": args.lr, "row_tokens": ROW_TOKENS}}
    model.to(device).train()
    decay = [p for p in model.parameters() if p.dim() >= 2]
    other = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": other, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.95))
    gen = torch.Generator().manual_seed(args.seed)
    rng = np.random.default_rng([args.seed, state["step"]])
    if (ckpt / STATE_FILE).exists():
        gen.set_state(load_optimizer(opt, ckpt, device).to(torch.uint8))
    corpus_train = load_shard(args.corpus, "train")
    examples = Examples(tok)
    monitor_texts = draw_texts(corpus_files(args.corpus, tok, "heldout"), tok, np.random.default_rng(MONITOR_SEED),
                               PART_DOCS)
    engine = Engine(load(model_dir, threads=args.threads))
    monitor = [r for c in cursors_in(monitor_texts, [str(i) for i in range(len(monitor_texts))], MONITOR_CURSORS,
                                     MONITOR_SEED) if (r := answer(engine, c)) is not None]
    del engine
    if not state["history"]:
        state["history"].append({"step": 0, **first_pass_sureness(model, monitor, tok.mask_id, device)})
        print(json.dumps(state["history"][-1]), flush=True)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16)
    t_start, base, last = time.time(), state["seconds"], time.time()
    budget = args.minutes * 60
    timed: list[float] = []

    def save() -> None:
        tmp = ckpt.with_name("ckpt.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        save_weights(model, tmp)
        save_optimizer(opt, gen.get_state(), tmp)
        state["seconds"] = base + time.time() - t_start
        state["tokens_total"] = state["tokens"] + state["init_tokens"]
        state["seconds_total"] = state["seconds"] + state["init_seconds"]
        (tmp / STATE_FILE).write_text(json.dumps(state, indent=1))
        (tmp / TOKENIZER_FILE).write_bytes((model_dir / TOKENIZER_FILE).read_bytes())
        shutil.rmtree(ckpt, ignore_errors=True)
        tmp.rename(ckpt)

    while True:
        if state["total_steps"] is not None and state["step"] >= state["total_steps"]:
            break
        if time.time() - t_start >= budget:
            break
        t0 = time.time()
        for g in opt.param_groups:
            g["lr"] = lr_at(state["step"], state["total_steps"], args.lr, args.warmup)
        batch = [answers[i] for i in rng.integers(len(answers), size=args.batch)]
        noisy, targets, masked, keys = (torch.from_numpy(a).to(device) for a in
                                        distill_rows(batch, tok.mask_id, tok.pad_id, rng))
        with autocast:
            logits = model(noisy, keys)
        loss, parts = certainty_forcing_loss(logits, targets, masked, ENTROPY_WEIGHT, ENTROPY_TEMPERATURE)
        if args.replay:
            raw = examples.windows(corpus_train, args.replay, ROW_TOKENS, rng)
            clean, region = (torch.from_numpy(a).to(device) for a in examples.diffusion(raw, rng))
            rnoisy, rmasked, t = mask_tokens(clean, region, tok.mask_id, gen)
            with autocast:
                replay = diffusion_loss(model(rnoisy), clean, rmasked, t)
            loss = loss + replay * args.replay / (2 * args.batch + args.replay)
            parts["replay_ce"] = replay.item()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        state["step"] += 1
        state["tokens"] += int(keys.sum()) + args.replay * ROW_TOKENS
        timed.append(time.time() - t0)
        if state["total_steps"] is None and len(timed) == 8:   # a budget in minutes: fix the schedule's length
            state["total_steps"] = state["step"] + int((budget - (time.time() - t_start)) / np.median(timed[2:]))
        if state["step"] % 10 == 0:
            print(json.dumps({"step": state["step"], "of": state["total_steps"], "loss": round(loss.item(), 4),
                              **{k: round(v, 4) for k, v in parts.items()},
                              "s_per_step": round(float(np.median(timed[-10:])), 2)}), flush=True)
        if time.time() - last > args.ckpt_minutes * 60:
            state["history"].append({"step": state["step"], **first_pass_sureness(model, monitor, tok.mask_id, device)})
            print(json.dumps(state["history"][-1]), flush=True)
            save()
            last = time.time()
    state["history"].append({"step": state["step"], **first_pass_sureness(model, monitor, tok.mask_id, device)})
    state["heldout"] = state["history"][-1]
    print(json.dumps(state["history"][-1]), flush=True)
    save()


# --- 3. export ------------------------------------------------------------------------------------------------
def export_model(args) -> Path:
    from model.export import export
    from model.checkpoint import read_state
    state = read_state(args.out / "ckpt")
    out = args.out / "model"
    export(args.out / "ckpt", out, "int8", {"distilled": state.get("distill", {}), "distill_history": state["history"]})
    return out


def run(args) -> None:
    from runtime.session import DEFAULT_MODEL_DIR
    model_dir = args.model or DEFAULT_MODEL_DIR
    if args.phase in ("all", "answers"):
        collect(args, model_dir)
    if args.phase in ("all", "train"):
        train(args, model_dir)
    if args.phase in ("all", "export"):
        print(json.dumps({"model": str(export_model(args))}), file=sys.stderr)

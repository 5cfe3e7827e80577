"""The GPU recipe: on a lent accelerator, build the corpus there, train autoregressive then diffusion, send weights back.

    python -m model.gpu_recipe --out $OUT --minutes 8.8 --tokenizer model/default/tokenizer.json \
        --humaneval .carry/HumanEval.jsonl.gz

Everything fits one call of the device tool: the whole run ends inside --minutes, and what comes back is
$OUT/diffusion/ (bf16 weights in files under 16 MB, plus state.json) and $OUT/ar-state.json. The device tool
returns at most 64 MiB in all, so the autoregressive weights (another 35 MB at the gpu size) come back only
with --bring-ar, which is for a run whose diffusion phase is skipped (--ar-share 1).
With --init-from (a checkpoint, or a folder made by `python -m model.gpu_recipe pack CKPT DEST`, small enough to
carry), the autoregressive phase is skipped and the whole budget continues diffusion training from that checkpoint;
--init-label is the name the returned state records for it (the local checkpoint, so export can chain phases).
Test it on CPU with `--size tiny --device cpu --max-mb 5 --minutes 1`. --init-from also takes a model directory
(model/default: its int8 training weights and card).

With --certainty W1 W2 ... (and --init-from), one continued run per weight of train's certainty-forcing term trains
side by side on the one GPU, from the same start on the same corpus (W 0: the plain objective, the control), and
each comes back packed (int8 weights in parts under 16 MB, and its state) under $OUT/c<W>/:
`python -m model.gpu_recipe join DIR` puts a folder's parts back together, `unpack` makes it a checkpoint.

With --distill ANSWERS (a carried copy of `quicksilver distill`'s answers/ folder, collected on CPU), the lease
instead runs distill's training phase (certainty-forcing self-distillation, model/distill.py) of --distill-model
(default: the shipped model, which the working tree carries) on the device for the whole budget, and
$OUT/distilled/ comes back (bf16 weights and state); `quicksilver distill --out W --phase export` exports it once
it is copied to W/ckpt with the tokenizer.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

import torch

from model.checkpoint import (INT8_WEIGHTS_FILE, STATE_FILE, load_int8_weights, load_model, read_state,
                              save_int8_weights, save_weights)
from model.corpus import build_corpus, default_roots
from model.objective import Mixture
from model.train import add_arguments as train_arguments
from model.train import train

SAVE_MARGIN_S = 25            # per phase: final eval, checkpoint and copy


def phase_args(common: list[str], **kw) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    train_arguments(p)
    args = p.parse_args(common + ["--out", str(kw.pop("out"))])
    for k, v in kw.items():
        setattr(args, k, v)
    return args


def bring_back(ckpt: Path, dest: Path, init_label: str | None = None) -> None:
    """bf16 weights (split) and the state file: what the device tool returns."""
    dest.mkdir(parents=True, exist_ok=True)
    model, _ = load_model(ckpt)
    save_weights(model, dest, dtype=torch.bfloat16, shard_bytes=15 * 2**20)
    state = read_state(ckpt)
    if init_label:
        state["init_from"] = init_label
    (dest / STATE_FILE).write_text(json.dumps(state, indent=1))


def pack(ckpt: Path, dest: Path) -> Path:
    """A checkpoint's weights in int8 and its state, without the optimiser: what --init-from carries.

    The device tool sends the working tree and what it carries in 64 MiB: with model/default tracked, bf16
    weights (35 MB) do not fit beside it, int8 (17 MB) do; the rounding is far below one step's update."""
    dest.mkdir(parents=True, exist_ok=True)
    model, _ = load_model(ckpt)
    save_int8_weights(model, dest / INT8_WEIGHTS_FILE)
    shutil.copy(ckpt / STATE_FILE, dest / STATE_FILE)
    return dest


def unpack(packed: Path, dest: Path) -> Path:
    """A training checkpoint folder (fp32 weights, state) from a `pack`ed one."""
    state = read_state(packed)
    dest.mkdir(parents=True, exist_ok=True)
    save_weights(load_int8_weights(packed / INT8_WEIGHTS_FILE, state["config"]), dest)
    shutil.copy(packed / STATE_FILE, dest / STATE_FILE)
    return dest


PART_BYTES = 15 * 2**20      # the device tool returns files under 16 MB


def split_parts(path: Path, part_bytes: int = PART_BYTES) -> list[Path]:
    """`path` as NAME.part0, NAME.part1, ... of at most part_bytes each (the original removed)."""
    data, parts = path.read_bytes(), []
    for i in range(0, max(1, len(data)), part_bytes):
        parts.append(path.with_name(f"{path.name}.part{i // part_bytes}"))
        parts[-1].write_bytes(data[i:i + part_bytes])
    path.unlink()
    return parts


def join_parts(folder: Path) -> None:
    """Every NAME.part0, NAME.part1, ... in `folder` joined back into NAME (the parts are left as they are)."""
    for first in sorted(folder.glob("*.part0")):
        name, parts = first.name[:-len(".part0")], []
        while (folder / f"{name}.part{len(parts)}").exists():
            parts.append(folder / f"{name}.part{len(parts)}")
        (folder / name).write_bytes(b"".join(p.read_bytes() for p in parts))


def continue_run(common: list[str], out: Path, init: Path, minutes: float, certainty: float) -> None:
    """One continued diffusion run (a process of its own when several train side by side)."""
    shutil.rmtree(out, ignore_errors=True)  # a stale run here would be resumed instead of warm-started
    train(phase_args(common, out=out, objective="diffusion", init_from=init, minutes=minutes, mixture=Mixture(),
                     certainty=certainty))


def distill(a, corpus: Path, seconds: float) -> None:
    """distill's training phase on the device: the answers carried in, its batch scaled to the device's."""
    from model import distill as d
    p = argparse.ArgumentParser()
    d.add_arguments(p)
    work = a.work / "distill"
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(a.distill, work / "answers")
    args = p.parse_args(["--out", str(work), "--model", str(a.distill_model), "--corpus", str(corpus),
                         "--phase", "train", "--minutes", str(seconds / 60), "--device", a.device,
                         "--batch", str(max(1, a.batch // 2)), "--replay", str(max(1, a.batch // 4)),
                         "--ckpt-minutes", "1.5", "--warmup", str(min(a.warmup, 50))])
    d.train(args, a.distill_model)
    bring_back(work / "ckpt", a.out / "distilled")


def main() -> None:
    if sys.argv[1:2] == ["pack"]:
        pack(Path(sys.argv[2]), Path(sys.argv[3]))
        return
    if sys.argv[1:2] == ["join"]:
        join_parts(Path(sys.argv[2]))
        return
    if sys.argv[1:2] == ["unpack"]:
        unpack(Path(sys.argv[2]), Path(sys.argv[3]))
        return
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True, help="folder whose files come back ($OUT)")
    p.add_argument("--minutes", type=float, default=8.8, help="wall-clock budget for everything")
    p.add_argument("--tokenizer", type=Path, required=True, help="the committed tokenizer.json")
    p.add_argument("--humaneval", type=Path, required=True, help="HumanEval.jsonl.gz for decontamination")
    p.add_argument("--work", type=Path, default=Path("/tmp/quicksilver"), help="scratch folder (corpus, checkpoints)")
    p.add_argument("--size", default="gpu", help="model size preset")
    p.add_argument("--device", default="cuda", help="cuda, or cpu to rehearse")
    p.add_argument("--max-mb", type=float, default=400, help="corpus text to collect")
    p.add_argument("--batch", type=int, default=128, help="sequences per step")
    p.add_argument("--lr", type=float, default=2e-3, help="peak learning rate (both phases)")
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--ar-share", type=float, default=0.4, help="share of the training time spent autoregressive")
    p.add_argument("--bring-ar", action="store_true", help="also send back the autoregressive weights")
    p.add_argument("--init-from", type=Path, help="continue diffusion training from this (packed) checkpoint")
    p.add_argument("--certainty", type=float, nargs="+", default=[0.0],
                   help="with --init-from: train's certainty-forcing weight; several run side by side (see above)")
    p.add_argument("--init-label", help="what the returned state names as the warm start (default: --init-from)")
    p.add_argument("--warmup", type=int, default=200, help="linear warm-up steps (each phase)")
    p.add_argument("--distill", type=Path, help="answers/ folder of `quicksilver distill`: distil instead of train")
    p.add_argument("--distill-model", type=Path, default=Path("model/default"), help="the model to distil")
    a = p.parse_args()
    start = time.time()
    margin = min(SAVE_MARGIN_S, 0.05 * a.minutes * 60)
    corpus = a.work / "corpus"
    meta = build_corpus(corpus, default_roots(), a.tokenizer, 8192, int(a.max_mb * 1e6), os.cpu_count(), a.humaneval)
    print("corpus", json.dumps({k: meta[k] for k in ("files", "tokens", "dropped", "seconds")}), flush=True)
    left = a.minutes * 60 - (time.time() - start) - 2 * margin
    common = ["--corpus", str(corpus), "--size", a.size, "--device", a.device, "--batch", str(a.batch),
              "--lr", str(a.lr), "--ckpt-minutes", "1.5", "--warmup", str(a.warmup), "--threads", "0"]
    if a.compile:
        common.append("--compile")
    if a.distill:
        distill(a, corpus, left + margin)
        print(f"recipe done in {time.time() - start:.0f} s", flush=True)
        return
    if a.init_from:
        packed = (a.init_from / INT8_WEIGHTS_FILE).exists() and (a.init_from / STATE_FILE).exists()
        init = unpack(a.init_from, a.work / "init") if packed else a.init_from   # a checkpoint or a model directory
        label, minutes = a.init_label or str(a.init_from), (left + margin) / 60
        if len(a.certainty) == 1:
            continue_run(common, a.work / "continued", init, minutes, a.certainty[0])
            bring_back(a.work / "continued", a.out / "diffusion", init_label=label)
        else:
            import torch.multiprocessing as mp
            ctx = mp.get_context("spawn")
            runs = {w: a.work / f"continued-c{w:g}" for w in a.certainty}
            procs = [ctx.Process(target=continue_run, args=(common, out, init, minutes - 0.5, w))
                     for w, out in runs.items()]
            for pr in procs:
                pr.start()
            for pr in procs:
                pr.join()
            for w, out in runs.items():
                if not (out / STATE_FILE).exists():
                    print(f"the run with certainty {w:g} left no checkpoint", flush=True)
                    continue
                dest = pack(out, a.out / f"c{w:g}")
                state = read_state(dest)
                state["init_from"] = label
                (dest / STATE_FILE).write_text(json.dumps(state, indent=1))
                split_parts(dest / INT8_WEIGHTS_FILE)
        print(f"recipe done in {time.time() - start:.0f} s", flush=True)
        return
    ar = a.work / "ar"
    train(phase_args(common, out=ar, objective="autoregressive", minutes=a.ar_share * left / 60))
    a.out.mkdir(parents=True, exist_ok=True)
    shutil.copy(ar / STATE_FILE, a.out / "ar-state.json")
    if a.bring_ar:
        bring_back(ar, a.out / "ar")
    if a.ar_share >= 1:
        return
    left = a.minutes * 60 - (time.time() - start) - margin
    diff = a.work / "diffusion"
    train(phase_args(common, out=diff, objective="diffusion", init_from=ar, minutes=left / 60, mixture=Mixture()))
    bring_back(diff, a.out / "diffusion")
    print(f"recipe done in {time.time() - start:.0f} s", flush=True)


if __name__ == "__main__":
    main()

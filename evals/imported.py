"""quicksilver eval imported: what importing an open diffusion coder costs and how fast it serves on this machine,
measured on a random checkpoint at a real model's shape (nothing is downloaded, so quality is not measured here:
the weights are random). For each precision: the import's time, the files' size, the load time, a full pass and
a window pass, and single-line requests through the real server (/v1/completions as an editor plugin sends them),
cold and at the next keystroke. Needs the dev extra (transformers writes the random checkpoint)."""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np

# shapes of published checkpoints (their config.json values; the embedding padded as theirs is)
SHAPES = {
    "open-dcoder-0.5b": ("open-dcoder", dict(hidden=896, layers=24, heads=14, kv_heads=2, ff=4864, rows=151936)),
    "tiny": ("dream", dict(hidden=64, layers=2, heads=4, kv_heads=2, ff=96, rows=None)),
}
CONTEXT = 384          # the engine's default context (prefix + window + suffix)
WINDOW = 13            # a single-line window and the slot before it


def median_ms(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(1000 * (time.perf_counter() - t0))
    return float(np.median(times))


def passes(m, repeat: int) -> dict:
    """A full pass over CONTEXT tokens, and a WINDOW-slot pass against their cached keys/values."""
    ids = np.random.default_rng(0).integers(0, m.tokenizer.vocab_size, (1, CONTEXT))
    pos, mask, empty = np.arange(CONTEXT)[None], np.ones((1, CONTEXT), bool), m.empty_cache(1)
    _, keys, values = m.forward_kv(ids, pos, mask, empty, empty, CONTEXT - WINDOW)
    past = np.ascontiguousarray(keys[:, :, :, :CONTEXT - WINDOW]), np.ascontiguousarray(values[:, :, :, :CONTEXT - WINDOW])
    window = lambda: m.forward_kv(ids[:, -WINDOW:], pos[:, -WINDOW:], mask, *past, 0)
    return {"model_file": m.model_file, "provider": m.provider,
            "full_pass_ms": median_ms(lambda: m.forward_kv(ids, pos, mask, empty, empty, CONTEXT - WINDOW), repeat),
            "window_pass_ms": median_ms(window, repeat)}


def requests(model_dir: Path, cursors: int) -> dict:
    """Single-line requests at held-out cursors through the server: the first (cold) and the next keystroke's."""
    import httpx

    from evals.bench import typing_lines
    from evals.editor import local_server
    srv, url = local_server(model_dir)
    rows = []
    try:
        with httpx.Client(base_url=url, timeout=600) as http:
            for ln in typing_lines(cursors):
                for k, kind in ((len(ln["line"]) // 2, "cold"), (len(ln["line"]) // 2 + 1, "next keystroke")):
                    body = {"prompt": ln["before"] + ln["line"][:k], "suffix": ln["after"], "max_tokens": 32,
                            "stop": "\n", "temperature": 0}
                    t0 = time.perf_counter()
                    r = http.post("/v1/completions", json=body)
                    r.raise_for_status()
                    q = r.json()["choices"][0]["quicksilver"]
                    rows.append({"kind": kind, "ms": 1000 * (time.perf_counter() - t0), "passes": q["forward_passes"],
                                 "tokens": q["tokens"], "reused": q.get("context_reused", False)})
    finally:
        srv.should_exit = True
    out = {}
    for kind in ("cold", "next keystroke"):
        these = [r for r in rows if r["kind"] == kind]
        out[kind] = {"requests": len(these), "p50_ms": float(np.median([r["ms"] for r in these])),
                     "passes_p50": float(np.median([r["passes"] for r in these])),
                     "context_reused": float(np.mean([r["reused"] for r in these]))}
    return out


def quality(m, ref) -> dict:
    """How far the precision's logits are from the reference forward (on random weights: a check of the
    conversion, not a prediction of a trained model's loss)."""
    import torch

    from model.hf_random import reference_logits
    ids = np.random.default_rng(1).integers(0, m.tokenizer.vocab_size, (1, 64))
    got = m.forward(ids, np.ones_like(ids, bool), 0)
    want = reference_logits(ref, torch.tensor(ids)).numpy()
    return {"max_abs_diff": float(np.abs(got - want).max()),
            "correlation": float(np.corrcoef(got.ravel(), want.ravel())[0, 1]),
            "argmax_agreement": float((got.argmax(-1) == want.argmax(-1)).mean())}


def evaluate(shape: str, precisions: list[str], work: Path, cursors: int, repeat: int) -> dict:
    from model.hf_random import write_checkpoint
    from model.importer import import_checkpoint
    from runtime.session import load
    family, size = SHAPES[shape]
    shutil.rmtree(work, ignore_errors=True)
    t0 = time.perf_counter()
    ref = write_checkpoint(work / "hf", family, size=size)
    out = {"shape": shape, "family": family, "size": size, "context": CONTEXT, "window": WINDOW,
           "parameters": sum(p.numel() for p in ref.parameters()),
           "checkpoint_bytes": sum(p.stat().st_size for p in (work / "hf").iterdir()),
           "write_s": round(time.perf_counter() - t0, 1), "precisions": {}}
    for precision in precisions:
        t0 = time.perf_counter()
        card = import_checkpoint(work / "hf", work / precision, precision=precision)
        import_s = round(time.perf_counter() - t0, 1)
        t0 = time.perf_counter()
        m = load(work / precision, prefer=precision)
        row = {"import_s": import_s, "bytes": {n: (work / precision / n).stat().st_size for n in card["files"]},
               "load_s": round(time.perf_counter() - t0, 2), **passes(m, repeat), **quality(m, ref),
               "requests": requests(work / precision, cursors)}
        out["precisions"][precision] = row
        print(json.dumps({precision: row}), flush=True)
        shutil.rmtree(work / precision)
    shutil.rmtree(work, ignore_errors=True)
    return out


def add_arguments(p) -> None:
    p.add_argument("--shape", choices=list(SHAPES), default="open-dcoder-0.5b")
    p.add_argument("--precisions", default="fp32,int8,int4", help="comma-separated (fp32, fp16, int8, int4)")
    p.add_argument("--cursors", type=int, default=6, help="held-out cursors asked through the server")
    p.add_argument("--repeat", type=int, default=5, help="passes timed for each median")
    p.add_argument("--work", type=Path, default=Path("runs/imported-bench"), help="scratch directory (removed)")
    p.add_argument("--json", type=Path, help="write the results here")


def run(args) -> None:
    out = evaluate(args.shape, args.precisions.split(","), args.work, args.cursors, args.repeat)
    out["command"] = (f"quicksilver eval imported --shape {args.shape} --precisions {args.precisions} "
                      f"--cursors {args.cursors} --repeat {args.repeat}" + (f" --json {args.json}" if args.json else ""))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=1) + "\n")

"""quicksilver eval compare: diffusion decoding against its autoregressive twin, on the same tasks, in one process.

The diffusion model runs at several confidence thresholds (lower: more tokens committed per forward pass, faster,
usually worse); the twin decodes one token per pass with its key/value cache. Each run reports pass@1, exact
match, tokens/s, p50/p95 latency and forward passes per token; a plot puts quality against speed.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from evals.infill import pick, run_tasks
from evals.tasks import SETS, infill_tasks
from runtime.autoregressive import AutoregressiveEngine
from runtime.engine import Engine
from runtime.session import load

THRESHOLDS = (0.9, 0.7, 0.5, 0.3, 0.1)


def compare(model_dir: Path | None, twin_dir: Path, set_name: str, length: str, limit: int | None, workers: int,
            thresholds=THRESHOLDS, precision: str = "int8", syntax: bool = True) -> list[dict]:
    tasks = pick(infill_tasks(set_name), limit)
    diffusion = Engine(load(model_dir, prefer=precision))
    twin = AutoregressiveEngine(load(twin_dir, prefer=precision))
    results = []
    for t in thresholds:
        summary, _ = run_tasks(diffusion, tasks, set_name, length, workers, threshold=t,
                               desc=f"diffusion {t}", syntax=syntax)
        results.append(summary)
    summary, _ = run_tasks(twin, tasks, set_name, length, workers, desc="autoregressive", syntax=syntax)
    results.append(summary)
    return results


def plot(results: list[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    diff = [r for r in results if r["decoder"] == "diffusion"]
    ar = [r for r in results if r["decoder"] == "autoregressive"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, key, label in ((axes[0], "tokens_per_s", "generated tokens / s (one stream, this CPU)"),
                           (axes[1], "tokens_per_forward", "tokens per forward pass")):
        ax.plot([r[key] for r in diff], [100 * r["pass@1"] for r in diff], "o-", label="diffusion (threshold)")
        for r in diff:
            ax.annotate(f"{r['threshold']}", (r[key], 100 * r["pass@1"]), textcoords="offset points",
                        xytext=(4, 4), fontsize=8)
        ax.plot([r[key] for r in ar], [100 * r["pass@1"] for r in ar], "r*", markersize=12,
                label="autoregressive twin (KV cache)")
        ax.set_xlabel(label)
        ax.set_ylabel("pass@1 (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    first = results[0]
    fig.suptitle(f"HumanEval {first['set']} infilling, {first['mode']} length, {first['tasks']} tasks")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def add_arguments(p) -> None:
    p.add_argument("--model", type=Path, help="diffusion model directory (default: the shipped model)")
    p.add_argument("--twin", type=Path, required=True, help="the autoregressive twin's model directory")
    p.add_argument("--set", choices=SETS, default="single-line", help="infilling set")
    p.add_argument("--length", choices=["oracle", "unknown"], default="unknown",
                   help="oracle: windows (diffusion) and caps (twin) of the answer's length; unknown: fixed")
    p.add_argument("--limit", type=int, help="evaluate this many tasks, spread evenly over the set")
    p.add_argument("--workers", type=int, default=os.cpu_count(), help="parallel test processes")
    p.add_argument("--thresholds", default=",".join(map(str, THRESHOLDS)),
                   help="diffusion confidence thresholds to sweep, comma-separated")
    p.add_argument("--precision", choices=["int8", "fp32"], default="int8", help="which ONNX file to prefer")
    p.add_argument("--no-syntax", dest="syntax", action="store_false",
                   help="both decoders without the Python syntax guidance an editor's request gets")
    p.add_argument("--json", type=Path, help="write the results here (a list of flat summaries)")
    p.add_argument("--plot", type=Path, help="write the quality-versus-speed plot (PNG) here")


def run(args) -> None:
    thresholds = [float(t) for t in args.thresholds.split(",") if t.strip()]
    results = compare(args.model, args.twin, args.set, args.length, args.limit, args.workers, thresholds,
                      args.precision, args.syntax)
    for r in results:
        name = "autoregressive" if r["decoder"] == "autoregressive" else f"diffusion t={r['threshold']}"
        print(f"{name:>18}: pass@1 {100 * r['pass@1']:.1f} %, exact {100 * r['exact_match']:.1f} %, "
              f"{r['tokens_per_s']:.1f} tok/s, {r['tokens_per_forward']:.2f} tok/forward, p50 {r['p50_ms']:.0f} ms")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    if args.plot:
        plot(results, args.plot)

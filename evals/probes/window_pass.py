"""Probe behind model/graph.py (docs/speed.md): one pass's time by slots and cached positions, two model
directories in turn (e.g. the graph before the rewrite and after), with random ids and keys/values.

    mkdir -p runs/shipped-rev6 && for f in card.json calibrator.json model.int8.onnx tokenizer.json \\
        weights.int8.safetensors; do git show 7a27598:model/default/$f > runs/shipped-rev6/$f; done
    python -m evals.probes.window_pass runs/shipped-rev6 model/default

Prints, per (slots, cached positions), the fastest and the median of 60 passes of each, and how far their logits
are apart (int8 activations are quantized per pass, so other rounding can move a logit by a quantum).
"""
from __future__ import annotations

import sys
import time

import numpy as np

SHAPES = ((1, 0), (16, 0), (1, 334), (12, 334), (20, 334), (32, 334), (20, 500))


def main(a_dir: str, b_dir: str, repeats: int = 60) -> None:
    from runtime.session import load
    a, b = load(a_dir), load(b_dir)
    layers, (_, heads, width) = a.card["config"]["n_layer"], a.heads
    rng = np.random.default_rng(0)
    for q, p in SHAPES:
        ids, pos = rng.integers(0, a.vocab, (1, q)), np.arange(p, p + q)[None]
        past_k, past_v = (rng.standard_normal((layers, 1, heads, p, width)).astype(np.float32) for _ in range(2))
        mask = np.ones((1, p + q), bool)
        args = (ids, pos, mask, past_k, past_v, 0)
        times = {a_dir: [], b_dir: []}
        for _ in range(repeats):
            for name, m in ((a_dir, a), (b_dir, b)):
                t0 = time.perf_counter()
                m.forward_kv(*args, new_kv=False)
                times[name].append(1000 * (time.perf_counter() - t0))
        diff = np.abs(a.forward_kv(*args)[0] - b.forward_kv(*args)[0]).max()
        print(f"{q:>3} slots, {p:>3} cached: " + ", ".join(
            f"{n} fastest {min(t):.2f} median {np.median(t):.2f} ms" for n, t in times.items())
            + f"; max |Δlogit| {diff:.2e}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])

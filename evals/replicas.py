"""quicksilver eval replicas: the typing replay through one process and through two Ray Serve replicas, routed by
document (affinity) and in turn (round-robin), in one run.

Each line of held-out code is typed once per setting, one after the other (a noisy machine slows them alike): a
single-line `/v1/completions` request after every keystroke, as inline-completion plugins ask (evals/bench.py's
replay). Reported per setting: keystroke p50 / p95, p50 of the keystrokes decoded, how often the replica decoding
had the last keystroke's context (`context_reused`: the cache hit routing decides), how often the answer was the
rest of a kept one (`typed_through`: the front answers those itself), and how many replicas decoded. The target:
with affinity, p50 within 1.3x of the single process.

The capacity model (docs/scaling.md) is computed from the same rows: the mean time a keystroke holds a replica
(one the front answered from a kept answer holds none; a decoded one is counted at the time its client waited), the
keystrokes a developer sends while typing (one per KEY_MS, evals/typing.py), the share of developers typing at any moment (`--typing-share`, an assumption said as such), and how busy a
replica may run (`--utilization`): replicas = developers x share x keystrokes/s x seconds per keystroke /
utilization.
"""
from __future__ import annotations

import json
from pathlib import Path

SETTINGS = {"one process": {}, "2 replicas, affinity": {"replicas": 2, "routing": "affinity"},
            "2 replicas, round-robin": {"replicas": 2, "routing": "round-robin"}}


def add_arguments(p) -> None:
    p.add_argument("--model", type=Path, help="model directory (default: the shipped model)")
    p.add_argument("--lines", type=int, default=8, help="lines typed (of held-out files)")
    p.add_argument("--seed", type=int, default=0, help="which held-out lines")
    p.add_argument("--typing-share", type=float, default=0.1,
                   help="capacity model: the share of developers typing at any moment (an assumption)")
    p.add_argument("--utilization", type=float, default=0.6, help="capacity model: how busy a replica may run")
    p.add_argument("--json", type=Path, help="write the results here")


def capacity(rows: list[dict], share: float, utilization: float, developers=(100, 1000)) -> dict:
    """Replicas (of this machine's kind) for `developers` typing, from the measured keystrokes of one setting."""
    import math

    from evals.typing import KEY_MS
    seconds = sum(r["ms"] for r in rows if not r["through"]) / len(rows) / 1000   # typed through: no replica
    per_s = 1000 / KEY_MS
    per_replica = utilization / (per_s * seconds)   # developers typing at once that one replica keeps up with
    return {"seconds_per_keystroke": seconds, "keystrokes_per_s_typing": per_s, "typing_share": share,
            "utilization": utilization, "typing_developers_per_replica": per_replica,
            "replicas": {str(n): math.ceil(n * share / per_replica) for n in developers},
            "replicas_all_typing": {str(n): math.ceil(n / per_replica) for n in developers}}


def run(args) -> None:
    import time

    import httpx

    from evals.bench import typing_lines, typing_replay
    from evals.editor import local_server
    servers = {name: local_server(args.model, **options) for name, options in SETTINGS.items()}
    try:
        for name, (_, url) in servers.items():   # every replica up before the first keystroke
            want = SETTINGS[name].get("replicas", 1)
            deadline = time.time() + 120
            while sum(r["state"] == "running" for r in httpx.get(url + "/health").json()["replicas"]) < want:
                if time.time() > deadline:
                    raise SystemExit(f"{name}: the replicas did not start in 120 s")
                time.sleep(0.5)
        urls = {name: url for name, (_, url) in servers.items()}
        out = typing_replay(urls["one process"], typing_lines(args.lines, args.seed), modes=tuple(SETTINGS), urls=urls)
    finally:
        for srv, _ in reversed(list(servers.values())):   # the cluster's owner last
            srv.should_exit = True
            time.sleep(2)
    base = out["modes"]["one process"]["p50_ms"]
    for name, m in out["modes"].items():
        rows = [r for r in out["rows"] if r["mode"] == name]
        m["replicas_decoding"] = len({r["replica"] for r in rows if not r["through"]})
        m["decoded_p50_vs_one_process"] = m["decoded_p50_ms"] / out["modes"]["one process"]["decoded_p50_ms"]
        m["p50_vs_one_process"] = m["p50_ms"] / base
        print(f"{name}: {m['keystrokes']} keystrokes, p50 {m['p50_ms']:.0f} ms ({m['p50_vs_one_process']:.2f}x one "
              f"process), p95 {m['p95_ms']:.0f} ms; context reused {m['context_reused']:.0%}, typed through "
              f"{m['typed_through']:.0%}; decoded p50 {m['decoded_p50_ms']:.0f} ms "
              f"({m['decoded_p50_vs_one_process']:.2f}x); "
              f"replicas decoding {m['replicas_decoding']}")
    cap = out["capacity"] = capacity([r for r in out["rows"] if r["mode"] == "2 replicas, affinity"],
                                     args.typing_share, args.utilization)
    print(f"capacity: a keystroke holds a replica {1000 * cap['seconds_per_keystroke']:.0f} ms on average; one replica "
          f"keeps up with {cap['typing_developers_per_replica']:.1f} developers typing at once; for 100 / 1,000 "
          f"developers ({cap['typing_share']:.0%} typing at a time): {cap['replicas']['100']} / "
          f"{cap['replicas']['1000']} replicas ({cap['replicas_all_typing']['100']} / "
          f"{cap['replicas_all_typing']['1000']} if all type at once)")
    out["command"] = f"quicksilver eval replicas --lines {args.lines} --seed {args.seed}" + (
        f" --typing-share {args.typing_share:g} --utilization {args.utilization:g}") + (
        f" --model {args.model}" if args.model else "") + (f" --json {args.json}" if args.json else "")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=1) + "\n")

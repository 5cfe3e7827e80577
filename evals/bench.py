"""quicksilver eval bench: engine latency and throughput on the shipped model, in one process and one run.

Single-line (<= 32 tokens) and block (<= 128 tokens) completions at 256 and 512 context tokens, one stream and
8 concurrent streams through the batching scheduler, with the context key/value cache and without it; tokens
per forward pass; the repeat of a request whose context is still cached (the next keystroke in an editor); and
this CPU's matmul FLOP/s through ONNX Runtime as the yardstick for what the batched engine reaches.

The typing replay (`--typing`) is what an editor's user waits for: a real server on 127.0.0.1, lines of held-out
files typed one character at a time mid-file, a single-line `/v1/completions` request after every keystroke
(`max_tokens` 32, `stop` "\n", as inline-completion plugins ask), one stream. Per keystroke: the time the client
waited, the forward passes and tokens, and where the server's time went (tokenize, forward passes, the sampler's
own work, post-processing).
"""
from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import numpy as np

from evals.tasks import load_problems
from runtime.answers import KeptAnswers
from runtime.engine import Engine
from runtime.request import EDITOR_MIN_CONFIDENCE, UNCALIBRATED_MIN_CONFIDENCE, Request
from runtime.scheduler import Scheduler
from runtime.session import load

SHAPES = {"single-line": 32, "block": 128}
CONTEXTS = (256, 512)
STREAMS = (1, 8)
REQUESTS_PER_STREAM = 2
REPEATS = 8
FILLER = Path(__file__).resolve().parent.parent / "model" / "corpus.py"   # real code to fill the context


def prompts(n: int) -> list[tuple[str, str]]:
    """(prefix, suffix) pairs: project code for context, then a HumanEval prompt to complete."""
    filler = FILLER.read_text() * 3
    return [(filler + p["prompt"], "\n") for p in load_problems()[:n]]


def matmul_flops(threads: int) -> float:
    """FLOP/s of a 1024x1024x1024 float32 matmul in ONNX Runtime on this CPU."""
    import onnxruntime as ort
    from onnx import TensorProto, helper

    n = 1024
    graph = helper.make_graph([helper.make_node("MatMul", ["a", "b"], ["c"])], "mm",
                              [helper.make_tensor_value_info(x, TensorProto.FLOAT, [n, n]) for x in "ab"],
                              [helper.make_tensor_value_info("c", TensorProto.FLOAT, [n, n])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    a = np.random.rand(n, n).astype(np.float32)
    sess.run(None, {"a": a, "b": a})
    t0, reps = time.perf_counter(), 10
    for _ in range(reps):
        sess.run(None, {"a": a, "b": a})
    return 2 * n**3 * reps / (time.perf_counter() - t0)


def run_streams(sched: Scheduler, pairs, streams: int, max_tokens: int) -> dict:
    latencies, tokens, passes, lock = [], [0], [0], threading.Lock()

    def worker(i: int) -> None:
        for j in range(REQUESTS_PER_STREAM):
            prefix, suffix = pairs[(i * REQUESTS_PER_STREAM + j) % len(pairs)]
            t0 = time.perf_counter()
            c = sched.submit(Request(prefix=prefix, suffix=suffix, max_new_tokens=max_tokens, window=max_tokens,
                                     stop=("\n",) if max_tokens <= 32 else ())).result()
            with lock:
                latencies.append(1000 * (time.perf_counter() - t0))
                tokens[0] += c.stats["tokens"]
                passes[0] += c.stats["forward_passes"]

    flops0, t0 = sched.engine.model.flops, time.perf_counter()
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(streams)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    return {"p50_ms": float(np.percentile(latencies, 50)), "p95_ms": float(np.percentile(latencies, 95)),
            "tokens_per_s": tokens[0] / wall, "tokens_per_forward": tokens[0] / max(1, passes[0]),
            "requests": len(latencies), "engine_flops": (sched.engine.model.flops - flops0) / wall}


def repeat_latency(engine: Engine, pairs) -> dict:
    """Single-line requests made twice: the second finds its context cached and skips the full pass."""
    first, again = [], []
    for prefix, suffix in pairs[:REPEATS]:
        for out in (first, again):
            c = engine.complete(Request(prefix=prefix, suffix=suffix, max_new_tokens=32, window=32, stop=("\n",)))
            out.append(c.stats["ms"])
    return {"first_p50_ms": float(np.percentile(first, 50)), "repeat_p50_ms": float(np.percentile(again, 50)),
            "requests": len(first)}


def bench(model_dir: Path | None, precision: str, kv_modes=(True, False)) -> dict:
    model = load(model_dir, prefer=precision)
    pairs = prompts(32)
    results = {"model_file": model.model_file, "model_sha256": model.card["files"].get(model.model_file, ""),
               "provider": model.provider, "cases": [], "repeat": []}
    for kv in kv_modes:
        for context in CONTEXTS:
            engine = Engine(model, context_tokens=context, kv_cache=kv)
            sched = Scheduler(engine)
            try:
                for shape, max_tokens in SHAPES.items():
                    for streams in STREAMS:
                        engine.clear_cache()  # every case pays for its own contexts
                        r = run_streams(sched, pairs, streams, max_tokens)
                        results["cases"].append({"kv_cache": engine.kv_cache, "shape": shape, "context": context,
                                                 "streams": streams, **r})
            finally:
                sched.close()
            if engine.kv_cache:
                engine.clear_cache()
                results["repeat"].append({"context": context, **repeat_latency(engine, pairs)})
    results["matmul_flops"] = matmul_flops(0)
    for c in results["cases"]:  # how much of what this CPU's matmul can do the engine's passes reached
        c["matmul_fraction"] = c["engine_flops"] / results["matmul_flops"]
    # the least a single-line request can cost here: its first (full) pass over the context and a 32-slot window,
    # at the matmul's FLOP/s — what no decoding schedule can go under with this model on this CPU
    results["full_pass_floor_ms"] = {str(n): 1000 * model.pass_flops(1, n + 32, 0, 32) / results["matmul_flops"]
                                     for n in CONTEXTS}
    return results


COLD_CONTEXTS = (384, 512)   # the engine's default context, and the model's whole one
COLD_SEED, COLD_PER_KIND = 1, 20


def cold_requests(model_dir: Path | None, per_kind: int = COLD_PER_KIND, contexts=COLD_CONTEXTS,
                  against: Path | None = None) -> dict:
    """A cold editor request: held-out editor cursors (evals/editor.py, seed 1) asked as every editor path asks
    (runtime.engine.editor_request), each with nothing kept from an earlier request, so the first pass runs the
    whole context. The engine in process, at each context size; the cursors in turn for every size (and, with
    `against`, of that model, in turn with the rest)."""
    from evals.editor import cursors, heldout_files
    from runtime.request import editor_request
    model = load(model_dir)
    points = cursors(heldout_files(), per_kind, COLD_SEED)
    engines = {("", n): Engine(model, context_tokens=n) for n in contexts}
    if against is not None:
        other = load(against)
        engines.update({("against", n): Engine(other, context_tokens=n) for n in contexts})
    rows = {key: [] for key in engines}
    for c in points:
        for key, engine in engines.items():
            engine.clear_cache()
            t0 = time.perf_counter()
            req = editor_request(c["prefix"], c["suffix"])
            out = engine.complete(req)
            ms = 1000 * (time.perf_counter() - t0)
            rows[key].append({"ms": ms, "passes": out.stats["forward_passes"], "tokens": out.stats["tokens"],
                              "block": not req.single_line})
    out = {"cursors": len(points), "seed": COLD_SEED, "model_sha256": model.card["files"].get(model.model_file, ""),
           "contexts": {}}
    if against is not None:
        out["against"] = {"model": str(against), "contexts": {},
                          "model_sha256": other.card["files"].get(other.model_file, "")}
    for (which, n), rs in rows.items():
        for shape, these in (("line", [r for r in rs if not r["block"]]), ("block", [r for r in rs if r["block"]])):
            if these:
                ms = [r["ms"] for r in these]
                (out["against"] if which else out)["contexts"].setdefault(str(n), {})[shape] = {
                    "requests": len(these), "p50_ms": float(np.percentile(ms, 50)), "p95_ms": float(np.percentile(ms, 95)),
                    "passes_p50": float(np.median([r["passes"] for r in these])),
                    "tokens_per_pass": sum(r["tokens"] for r in these) / max(1, sum(r["passes"] for r in these))}
    return out


TYPED_LINES = 8          # lines typed in the replay, each from a different held-out file
TYPING_MIN_CHARS = 24


def typing_lines(n: int = TYPED_LINES, seed: int = 0) -> list[dict]:
    """(file, prefix before the line, the line, suffix after it) for `n` code lines of held-out files (the
    editor eval's files: never trained on, never HumanEval), each at least TYPING_MIN_CHARS long, mid-file."""
    from evals.editor import heldout_files
    import ast
    rng, out, files = np.random.default_rng(seed), [], heldout_files()
    for f in rng.permutation(len(files)):
        text = files[f].read_text()
        lines = text.split("\n")
        try:   # one-line statements (not docstring or comment lines) in the file's middle half
            stmts = {n.lineno - 1 for n in ast.walk(ast.parse(text)) if isinstance(n, ast.stmt)
                     and n.end_lineno == n.lineno and not isinstance(n, ast.Expr)}
        except (SyntaxError, ValueError):
            continue
        code = [i for i in sorted(stmts) if len(lines) // 4 <= i < 3 * len(lines) // 4
                and len(lines[i].strip()) >= TYPING_MIN_CHARS and "#" not in lines[i]]
        if not code:
            continue
        i = code[int(rng.integers(len(code)))]
        indent = lines[i][: len(lines[i]) - len(lines[i].lstrip())]
        out.append({"file": files[f].name, "before": "\n".join(lines[:i]) + "\n" + indent,
                    "line": lines[i][len(indent):], "after": "\n" + "\n".join(lines[i + 1:])})
        if len(out) == n:
            break
    return out


def typing_replay(url: str, lines: list[dict], configure=None, modes=("now",), urls: dict | None = None) -> dict:
    """Type each line one character at a time; after each keystroke, the request an inline-completion plugin
    sends. With several `modes`, each line is typed once per mode, one after the other (`configure(mode)` sets
    the server up), so a noisy machine slows them alike. Returns per-keystroke rows and, per mode, their medians
    / p95 and how often the suggestion was exactly the rest of the line the user went on to type. `urls` gives
    a mode a server of its own (another model)."""
    import httpx
    rows = []
    with httpx.Client(base_url=url, timeout=60) as http:
        for ln, mode in ((ln, mode) for ln in lines for mode in modes):
            if configure is not None:
                configure(mode)
            for k in range(len(ln["line"]) + 1):
                body = {"prompt": ln["before"] + ln["line"][:k], "suffix": ln["after"], "max_tokens": 32,
                        "stop": "\n", "temperature": 0}
                t0 = time.perf_counter()
                r = http.post((urls or {}).get(mode, url) + "/v1/completions", json=body)
                ms = 1000 * (time.perf_counter() - t0)
                r.raise_for_status()
                q = r.json()["choices"][0]["quicksilver"]
                text = r.json()["choices"][0]["text"]
                right = bool(text.strip()) and text.strip() == ln["line"][k:].strip()
                shown = bool(text.strip()) and q.get("confidence", 0.0) >= (
                    EDITOR_MIN_CONFIDENCE if q.get("calibrated") else UNCALIBRATED_MIN_CONFIDENCE)
                rows.append({"mode": mode, "file": ln["file"], "typed": k, "ms": ms, "passes": q["forward_passes"],
                             "tokens": q["tokens"], "reused": q.get("context_reused", False), "right": right,
                             "through": q.get("typed_through", False), "shown": shown, "shown_right": shown and right,
                             "replica": q.get("replica", "local"),
                             **{t: q.get(t, 0.0) for t in TIMINGS}})
    out = {"lines": len(lines), "modes": {}, "rows": rows}
    for mode in modes:
        these = [r for r in rows if r["mode"] == mode]
        col = lambda key: np.array([r[key] for r in these], float)
        decoded = [r for r in these if not r["through"]]
        out["modes"][mode] = {**keystroke_summary(these), "tokens_p50": float(np.median(col("tokens"))),
                              "context_reused": float(col("reused").mean()),
                              "typed_through": float(col("through").mean()),
                              "decoded_p50_ms": float(np.percentile([r["ms"] for r in decoded], 50)) if decoded else 0.0,
                              "decoded_p95_ms": float(np.percentile([r["ms"] for r in decoded], 95)) if decoded else 0.0,
                              "shown": int(col("shown").sum()), "shown_right": int(col("shown_right").sum()),
                              "server_ms_p50": {t: float(np.median(col(t))) for t in TIMINGS}}
    return out


def keystroke_summary(rows: list[dict]) -> dict:
    """Keystrokes, latency p50 / p95, passes, tokens per pass and how often the suggestion was the rest of the line."""
    col = lambda key: np.array([r[key] for r in rows], float)
    return {"keystrokes": len(rows), "p50_ms": float(np.percentile(col("ms"), 50)),
            "p95_ms": float(np.percentile(col("ms"), 95)), "passes_p50": float(np.median(col("passes"))),
            "tokens_per_pass": float(col("tokens").sum() / max(1, col("passes").sum())),
            "right_rest_of_line": float(col("right").mean())}


TIMINGS = ("tokenize_ms", "pass_ms", "sample_ms", "post_ms")   # the engine's per-request time split (Stats)


def typing_thresholds(model_dir: Path | None, thresholds: list[float], lines: int = TYPED_LINES) -> dict:
    """The typing replay's keystrokes asked in process (the request /v1/completions builds for them) of one engine
    per commit threshold, keystroke by keystroke in turn: what a threshold changes, without the server around it."""
    from runtime.session import load
    from server.routes.completions import CompletionBody, to_requests
    engines = {t: Engine(load(model_dir)) for t in thresholds}
    rows = []
    for ln in typing_lines(lines):
        for k in range(len(ln["line"]) + 1):
            texts = []
            for t, engine in engines.items():
                req = to_requests(CompletionBody(prompt=ln["before"] + ln["line"][:k], suffix=ln["after"],
                                                 max_tokens=32, stop="\n"))[0]
                req.threshold = t
                t0 = time.perf_counter()
                c = engine.complete(req)
                texts.append(c.text)
                rows.append({"threshold": t, "ms": 1000 * (time.perf_counter() - t0), "passes": c.stats["forward_passes"],
                             "tokens": c.stats["tokens"], "same_as_first": c.text == texts[0],
                             "right": bool(c.text.strip()) and c.text.strip() == ln["line"][k:].strip()})
    out = {"lines": lines, "thresholds": {}}
    for t in thresholds:
        these = [r for r in rows if r["threshold"] == t]
        out["thresholds"][str(t)] = {**keystroke_summary(these),
                                     "same_text_as_first": float(np.mean([r["same_as_first"] for r in these]))}
    return out


def add_arguments(p) -> None:
    p.add_argument("--model", type=Path, help="model directory (default: the shipped model)")
    p.add_argument("--precision", choices=["int8", "fp32", "fp16", "int4"], default="int8",
                   help="which ONNX file to prefer")
    p.add_argument("--kv-cache", choices=["both", "on", "off"], default="both",
                   help="measure with the context key/value cache, without it, or both (the speed-up)")
    p.add_argument("--typing", action="store_true",
                   help="only the typing replay through a real server (per-keystroke latency, passes, time split)")
    p.add_argument("--lines", type=int, default=TYPED_LINES, help="typing replay: lines typed (of held-out files)")
    p.add_argument("--against", type=Path,
                   help="typing replay: also type every line against this model directory (a server of its own); "
                        "--cold: also ask every cursor of it, in turn")
    p.add_argument("--thresholds", type=lambda t: [float(x) for x in t.split(",")],
                   help="only the typing replay's keystrokes in process, at each of these commit thresholds (e.g. "
                        "0.9,0.7): an engine each, keystroke by keystroke in turn (ratios in one run)")
    p.add_argument("--cold", action="store_true",
                   help="only cold editor requests (nothing kept from an earlier one) at 384 and 512 context tokens")
    p.add_argument("--json", type=Path, help="write the results here")


# what the replay compares, in one run: the engine as shipped; the same decoding every keystroke (no answer typed
# through: runtime/answers.py)
TYPING_MODES = {"now": {"type_through": True}, "decoded every keystroke": {"type_through": False}}


def run_typing(args) -> dict:
    from evals.editor import local_server
    servers = {mode: local_server(args.model) for mode in ("now",)}
    modes = tuple(TYPING_MODES)
    if args.against:   # another model: its own server, its lines typed in turn with the rest
        servers[f"now, {args.against.name}"] = local_server(args.against)
        modes += (f"now, {args.against.name}",)

    def configure(mode: str) -> None:
        srv = servers.get(mode, servers["now"])[0]
        engine = srv.config.app.state.engine
        engine.clear_cache()
        settings = TYPING_MODES[mode if mode in TYPING_MODES else mode.rsplit(", ", 1)[0]]
        engine.answers = KeptAnswers(engine.count_tokens) if settings["type_through"] else None
    try:
        out = typing_replay(servers["now"][1], typing_lines(args.lines), configure, modes,
                            {mode: url for mode, (_, url) in servers.items()})
        out["models"] = {mode: str(args.against if mode != "now" and mode in servers else args.model or "model/default")
                         for mode in modes}
    finally:
        for srv, _ in servers.values():
            srv.should_exit = True
    for mode, m in out["modes"].items():
        print(f"typing replay, {mode}: {m['keystrokes']} keystrokes on {out['lines']} lines: p50 {m['p50_ms']:.0f} ms, "
              f"p95 {m['p95_ms']:.0f} ms, {m['passes_p50']:.0f} passes and {m['tokens_p50']:.0f} tokens (median), "
              f"{m['tokens_per_pass']:.2f} tokens/pass, context reused {m['context_reused']:.0%}, suggestion = the "
              f"rest of the line {m['right_rest_of_line']:.0%}, shown {m['shown']} (right {m['shown_right']}); typed "
              f"through {m['typed_through']:.0%}, the decoded keystrokes p50 {m['decoded_p50_ms']:.0f} ms, p95 "
              f"{m['decoded_p95_ms']:.0f} ms; server p50 "
              + ", ".join(f"{k} {v:.1f}" for k, v in m["server_ms_p50"].items()))
    return out


def against_flags(args) -> str:
    return f" --against {args.against}" if args.against else ""


def write(args, out: dict) -> None:
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=1) + "\n")


def run(args) -> None:
    json_flag = f" --json {args.json}" if args.json else ""
    if args.cold:
        out = {"cold": cold_requests(args.model, against=args.against),
               "command": "quicksilver bench --cold" + (f" --model {args.model}" if args.model else "")
               + against_flags(args) + json_flag}
        for which, res in (("", out["cold"]), (f" ({args.against})", out["cold"].get("against"))):
            for n, shapes in (res or {"contexts": {}})["contexts"].items():
                for shape, m in shapes.items():
                    print(f"cold editor {shape} at {n} context{which}: {m['requests']} requests, p50 {m['p50_ms']:.0f} "
                          f"ms, p95 {m['p95_ms']:.0f} ms, {m['passes_p50']:.0f} passes (median), "
                          f"{m['tokens_per_pass']:.2f} tokens/pass")
        return write(args, out)
    if args.thresholds:
        out = {"typing_thresholds": typing_thresholds(args.model, args.thresholds, args.lines),
               "command": "quicksilver bench --thresholds " + ",".join(f"{t:g}" for t in args.thresholds) + json_flag}
        for t, m in out["typing_thresholds"]["thresholds"].items():
            print(f"keystrokes at threshold {t}: p50 {m['p50_ms']:.0f} ms, p95 {m['p95_ms']:.0f} ms, "
                  f"{m['passes_p50']:.0f} passes (median), {m['tokens_per_pass']:.2f} tokens/pass, the same text as "
                  f"the first threshold's {m['same_text_as_first']:.1%}, the rest of the line {m['right_rest_of_line']:.0%}")
        return write(args, out)
    if args.typing:
        return write(args, {"typing": run_typing(args), "command": "quicksilver bench --typing" + against_flags(args)
                            + json_flag})
    modes = {"both": (True, False), "on": (True,), "off": (False,)}[args.kv_cache]
    results = bench(args.model, args.precision, modes)
    for c in results["cases"]:
        print(f"cache {'on ' if c['kv_cache'] else 'off'} {c['shape']:>11} ctx {c['context']} streams {c['streams']}: "
              f"p50 {c['p50_ms']:.0f} ms, p95 {c['p95_ms']:.0f} ms, {c['tokens_per_s']:.1f} tok/s, "
              f"{c['tokens_per_forward']:.2f} tok/forward, {c['engine_flops'] / 1e9:.1f} GFLOP/s "
              f"({100 * c['matmul_fraction']:.0f} % of the matmul)")
    for r in results["repeat"]:
        print(f"repeated context ctx {r['context']}: first p50 {r['first_p50_ms']:.0f} ms, "
              f"repeat p50 {r['repeat_p50_ms']:.0f} ms")
    print(f"ONNX Runtime matmul: {results['matmul_flops'] / 1e9:.1f} GFLOP/s; one full pass at that rate: "
          + ", ".join(f"{ms:.0f} ms at {n} context" for n, ms in results["full_pass_floor_ms"].items()))
    write(args, results)

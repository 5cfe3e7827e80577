"""quicksilver eval report: evals/results/*.json → evals/results/REPORT.md, plus the shipped model's learning curve.

Every number in the report is read from a result file that a command wrote; the table says which command.
"""
from __future__ import annotations

import json
from pathlib import Path

from evals.infill import UNKNOWN_WINDOW
from evals.tasks import SETS, infill_tasks

RESULTS = Path(__file__).resolve().parent / "results"


def pct(x) -> str:
    return "–" if x is None else f"{100 * x:.1f} %"


def num(x, fmt="{:.0f}") -> str:
    return "–" if x is None else fmt.format(x)


def load(results: Path) -> dict[str, object]:
    out = {}
    for path in sorted(results.glob("*.json")):
        try:
            out[path.stem] = json.loads(path.read_text())
        except json.JSONDecodeError:
            continue
    return out


FIRST_WINDOW = {"single-line": 32, "multi-line": 128, "random-span": 64}  # before results recorded their window


def window_of(r: dict) -> int | None:
    """An unknown-length result's window in slots (results before the field existed used FIRST_WINDOW)."""
    if r.get("mode") != "unknown":
        return None
    return r.get("window") or FIRST_WINDOW.get(r.get("set"))


def length_of(r: dict) -> str:
    length = f"unknown ({window_of(r)} slots)" if window_of(r) else r["mode"]
    return length + (", no syntax guidance" if r.get("syntax") is False else "")


def infill_command(r: dict, name: str) -> str:
    if r.get("command"):   # results that record their own command (eval api)
        return r["command"]
    window = window_of(r)
    return (f"quicksilver eval infill --set {r['set']} --length {r['mode']}"
            + (f" --window {window}" if window and window != UNKNOWN_WINDOW.get(r["set"]) else "")
            + (" --no-syntax" if r.get("syntax") is False else "")
            + (f" --model {r['model']}" if "default" not in r.get("model", "default") else "")
            + (f" --procs {r['procs']}" if r.get("procs", 1) > 1 else "")
            + (f" --limit {r['tasks']}" if name.endswith("-limited") else "") + f" --json evals/results/{name}.json")


def learning_curve(card: dict, name: str, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    phases = card["training"].get("phases") or [{"device": card["training"].get("device", ""),
                                                  "history": card["training"]["history"]}]
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    rates = (("masked_ce@0.15", "15 % masked", "C0"), ("masked_ce@0.5", "50 % masked", "C1"),
             ("masked_ce@0.85", "85 % masked", "C2"))
    markers = "os^Dvp*hX"
    handles = [Line2D([], [], color=c, label=label) for _, label, c in rates]
    for i, phase in enumerate(phases):  # colour: masking rate; marker: phase (each on its own corpus's held-out files)
        hist = [h for h in phase["history"] if "masked_ce@0.5" in h]
        for key, _, colour in rates:
            ax.plot([h["tokens"] / 1e6 for h in hist], [h[key] for h in hist], "-", marker=markers[i % len(markers)],
                    color=colour, markersize=4)
        if len(phases) > 1:
            span = f"{phase.get('tokens', 0) / 1e6:.0f} M" if phase.get("tokens") else ""
            handles.append(Line2D([], [], color="gray", marker=markers[i % len(markers)], linestyle="",
                                  label=f"phase {i + 1}: {phase.get('device', '')} {span}".rstrip()))
    if card.get("unigram_ce"):
        ax.axhline(card["unigram_ce"], color="gray", linestyle="--")
        handles.append(Line2D([], [], color="gray", linestyle="--", label="unigram baseline"))
    ax.set_xlabel("training tokens (M), autoregressive warm start included")
    ax.set_ylabel("held-out masked-token cross-entropy (nats)")
    ax.set_title(f"model/{name}: {card['training']['tokens'] / 1e6:.0f} M training tokens in {len(phases)} "
                 f"phase{'s' * (len(phases) > 1)}; held-out loss of each phase's corpus", fontsize=9)
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(handles=handles, fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def same_weights(card: dict, model_file: str) -> set[str]:
    """The digests a result of this model file may carry: the file's, and the file's before a graph rewrite that
    kept its weights (model/graph.py; what the rewrite changes in the arithmetic is a decoding revision)."""
    return {card.get("files", {}).get(model_file, ""),
            card.get("graph", {}).get(model_file, {}).get("rewritten_from_sha256", "")} - {""}


def which_model(r: dict, card: dict) -> str:
    """A result's model, short: its hash, marked when the shipped model or the engine's decoding has changed since."""
    from runtime import current

    sha = r.get("model_sha256", "")
    stale = [] if current(r.get("decoding_revision", 1)) else ["earlier decoding"]
    if r.get("mode") == "unknown" and "window" not in r and window_of(r) != UNKNOWN_WINDOW.get(r.get("set")):
        stale.append("earlier window")  # made before results recorded a window, with one the eval no longer uses
    if "default" not in r.get("model", "default"):
        name = f"{Path(r['model']).name} {sha[:8]}"
    else:
        name = sha[:8]
        if sha not in same_weights(card, r.get("model_file", "")):
            stale.insert(0, "earlier model")
    return f"**{', '.join(stale)}** {name}" if stale else name


def report(results: Path, model_dir: Path | None = None) -> str:
    from runtime.session import DEFAULT_MODEL_DIR, read_card

    model_dir = model_dir or DEFAULT_MODEL_DIR
    card = read_card(model_dir)
    learning_curve(card, model_dir.name, results / "learning-curve.png")
    data = load(results)
    lines = ["# quicksilver evaluation report", "",
             "Written by `quicksilver eval report` from the JSON files in this folder; each row names the command",
             "that produced it. Model: `model/default` unless a row says otherwise. CPU numbers come from a 2-core",
             "machine shared with a niced training run.", ""]
    lines += ["## Learning curve", "", "![learning curve](learning-curve.png)", "",
              "Held-out masked-token cross-entropy at the shipped checkpoint: "
              + ", ".join(f"{k.split('@')[1]}: {v:.2f}" for k, v in card["heldout"].items())
              + f" (unigram {card['unigram_ce']:.2f}).", ""]
    infill = [(n, r) for n, r in data.items() if isinstance(r, dict) and r.get("set") in
              ("single-line", "multi-line", "random-span")]
    if infill:
        lines += ["## HumanEval infilling (pass@1, greedy)", "",
                  "| set | length | tasks | pass@1 | exact match | tokens / forward | p50 ms | p95 ms | model | command |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for n, r in sorted(infill, key=lambda x: (x[1]["set"], x[1]["mode"])):
            lines.append(f"| {r['set']} | {length_of(r)} | {r['tasks']} | {pct(r['pass@1'])} | {pct(r['exact_match'])} "
                         f"| {r['tokens_per_forward']:.2f} | {num(r['p50_ms'])} | {num(r['p95_ms'])} | "
                         f"{which_model(r, card)} | `{infill_command(r, n)}` |")
        lines += ["", "Model: the first hex digits of the ONNX file's SHA-256; **earlier model** marks a row made with a "
                  "model that is no longer the shipped one, **earlier decoding** one made before the engine's last "
                  "change to the completions it generates (`runtime.COMPLETIONS_SINCE`), **earlier window** an unknown-length row "
                  "made, before results recorded their window, with another window than `evals/infill.py` now "
                  "uses: re-run its command. Ratios use full runs of the shipped model at the default window, with the "
                  "syntax guidance an editor's request gets (`--no-syntax` rows show what it adds). A `--procs N` row "
                  "was generated in N processes sharing the cores (the same completions): its latencies are those "
                  "of one process with its share of the threads, not of the whole machine."]
        full = {name: len(infill_tasks(name)) for name in {r["set"] for _, r in infill}}  # each set built once
        by = {(r["set"], r["mode"]): r for _, r in infill  # full runs of the shipped model only
              if r["tasks"] == full[r["set"]] and not which_model(r, card).startswith("**")
              and "default" in r.get("model", "default")
              and window_of(r) in (None, UNKNOWN_WINDOW.get(r["set"])) and r.get("syntax") is not False}
        for s in ("single-line", "multi-line", "random-span"):
            if (s, "oracle") in by and (s, "unknown") in by and by[(s, "oracle")]["pass@1"]:
                ratio = by[(s, "unknown")]["pass@1"] / by[(s, "oracle")]["pass@1"]
                lines.append(f"\n{s}: unknown / oracle pass@1 = **{ratio:.2f}**")
        lines.append("")
    humaneval = [(n, r) for n, r in data.items() if isinstance(r, dict) and r.get("set") == "humaneval"]
    if humaneval:
        lines += ["## HumanEval completion", "",
                  "| model | decoder | problems | samples | pass@1 | tokens / forward | tokens/s | p50 ms | command |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for n, r in humaneval:
            model = "" if "default" in r["model"] else f" --model {r['model']}"
            model += " --no-syntax" if r.get("syntax") is False else ""
            lines.append(f"| {Path(r['model']).name} | {r['decoder']} | {r['tasks']} | {r['samples']} | "
                         f"{pct(r['pass@1'])} | {r['tokens_per_forward']:.2f} | {r['tokens_per_s']:.1f} | "
                         f"{num(r['p50_ms'])} | `quicksilver eval humaneval{model} --json evals/results/{n}.json` |")
        lines.append("")
    for n, r in data.items():
        if isinstance(r, list) and r and r[0].get("decoder"):
            twin = next((x for x in r if x["decoder"] == "autoregressive"), None)
            lines += [f"## Diffusion against the autoregressive twin ({r[0]['set']}, {r[0]['mode']} length)", "",
                      f"![quality against speed]({n}.png)", "",
                      "| decoder | threshold | pass@1 | exact match | tokens / forward | tokens/s | p50 ms | p95 ms |",
                      "| --- | --- | --- | --- | --- | --- | --- | --- |"]
            for x in r:
                lines.append(f"| {x['decoder']} | {num(x['threshold'], '{}')} | {pct(x['pass@1'])} | "
                             f"{pct(x['exact_match'])} | {x['tokens_per_forward']:.2f} | {x['tokens_per_s']:.1f} | "
                             f"{num(x['p50_ms'])} | {num(x['p95_ms'])} |")
            if twin:
                lines += ["", f"Command: `quicksilver eval compare --twin {twin['model']} --set {r[0]['set']} "
                              f"--length {r[0]['mode']} --json evals/results/{n}.json --plot evals/results/{n}.png`"]
            lines.append("")
    bench = data.get("bench")
    if isinstance(bench, dict) and bench.get("cases"):
        lines += ["## Engine speed (`quicksilver bench --json evals/results/bench.json`)", "",
                  "| context cache | shape | context | streams | p50 ms | p95 ms | tokens/s | tokens / forward "
                  "| engine GFLOP/s (share of the matmul) |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for c in bench["cases"]:
            flops = (f"{c['engine_flops'] / 1e9:.0f} ({100 * c['matmul_fraction']:.0f} %)"
                     if "engine_flops" in c else "–")
            lines.append(f"| {'on' if c.get('kv_cache') else 'off'} | {c['shape']} | {c['context']} | {c['streams']} "
                         f"| {num(c['p50_ms'])} | {num(c['p95_ms'])} | {c['tokens_per_s']:.1f} | "
                         f"{c['tokens_per_forward']:.2f} | {flops} |")
        for r in bench.get("repeat", []):
            lines.append(f"\nSame context again (context {r['context']}): p50 {r['first_p50_ms']:.0f} ms → "
                         f"{r['repeat_p50_ms']:.0f} ms.")
        lines += ["", f"ONNX Runtime float32 matmul on this CPU: {bench['matmul_flops'] / 1e9:.0f} GFLOP/s."]
        if "full_pass_floor_ms" in bench:
            lines.append("One full pass (context + a 32-slot window) at that rate, the least any single-line request "
                         "costs with this model here: " + ", ".join(
                             f"{ms:.0f} ms at {n} context" for n, ms in bench["full_pass_floor_ms"].items()) + ".")
        lines.append("")
    typing = data.get("typing")
    if isinstance(typing, dict) and typing.get("runs"):
        lines += ["## Typing in an editor (`quicksilver eval typing --json evals/results/typing.json`)", "",
                  "| completion cache | keystrokes | answered before the next key | superseded | from cache | "
                  "p50 ms | p95 ms |", "| --- | --- | --- | --- | --- | --- | --- |"]
        for r in typing["runs"]:
            lines.append(f"| {'on' if r['completion_cache'] else 'off'} | {r['keystrokes']} | {r['answered']} | "
                         f"{r['superseded']} | {r['cache_hits']} | {num(r['p50_ms'])} | {num(r['p95_ms'])} |")
        lines += ["", "Latency runs from didChange to the inline completion response, over the requests answered "
                      "before the next keystroke (150 ms, 800 ms after Enter).", ""]
    replay = data.get("typing-replay")
    if isinstance(replay, dict) and replay.get("typing"):
        t = replay["typing"]
        lines += [f"## Typing replay through the server (`{replay['command']}`)", "",
                  f"{t['lines']} lines of held-out files typed one character at a time mid-file, a single-line "
                  "`/v1/completions` request after each keystroke (max_tokens 32, stop \"\\n\"), one stream; the "
                  "modes run line by line in turn. Typed through: answered from a kept answer the keystroke typed the "
                  "start of (runtime/answers.py), no pass; shown: at the editors' confidence threshold.", "",
                  "| engine | keystrokes | p50 ms | p95 ms | typed through | decoded keystrokes p50 / p95 ms | "
                  "passes (median) | tokens (median) | tokens / pass | context reused | suggestion = rest of line | "
                  "shown (right) | server p50: tokenize / passes / sampler / post ms |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for mode, m in t["modes"].items():
            split = " / ".join(f"{v:.1f}" for v in m["server_ms_p50"].values())
            decoded = f"{num(m['decoded_p50_ms'])} / {num(m['decoded_p95_ms'])}" if "decoded_p50_ms" in m else "–"
            shown = f"{m['shown']} ({m['shown_right']})" if "shown" in m else "–"
            lines.append(f"| {mode} | {m['keystrokes']} | {num(m['p50_ms'])} | {num(m['p95_ms'])} | "
                         f"{pct(m.get('typed_through', 0))} | {decoded} | "
                         f"{m['passes_p50']:.0f} | {m['tokens_p50']:.0f} | {m['tokens_per_pass']:.2f} | "
                         f"{pct(m['context_reused'])} | {pct(m['right_rest_of_line'])} | {shown} | {split} |")
        lines.append("")
    for name, r in data.items():
        if name.startswith("parallel") and isinstance(r, dict) and r.get("models"):
            lines += [f"## Tokens per pass on held-out editor cursors (`{r['command']} --json evals/results/{name}.json`)",
                      "", f"{r['cursors']} cursors (seed {r['seed']}), asked as the editors ask, the models in turn; the "
                      f"same text at {pct(r.get('same_text', 0))} of them.", "",
                      "| model | tokens / pass | passes (median) | p50 / p95 ms | exactly right | shown | precision |",
                      "| --- | --- | --- | --- | --- | --- | --- |"]
            for m in r["models"]:
                lines.append(f"| {m['model']} {m['model_sha256'][:8]} | {m['tokens_per_pass']:.2f} | "
                             f"{m['passes_median']:.0f} | {num(m['p50_ms'])} / {num(m['p95_ms'])} | "
                             f"{pct(m['exact_rate'])} | {pct(m['shown_rate'])} | {pct(m['shown_precision'])} |")
            lines.append("")
        if name.startswith("imported-") and isinstance(r, dict) and r.get("precisions"):
            lines += [f"## An imported model at {r['shape']}'s shape (`{r['command']}`)", "", *imported_table(r), ""]
    lines += grounded_sections(data)
    if isinstance(r := data.get("replicas"), dict) and r.get("capacity"):
        lines += [f"## Replicas (`{r['command']}`)", "", "| setting | keystrokes | p50 / p95 ms | p50 vs one process | "
                  "decoded p50 ms | decoded vs one process | context reused | typed through |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- |"]
        lines += [f"| {name} | {m['keystrokes']} | {num(m['p50_ms'])} / {num(m['p95_ms'])} | "
                  f"{m['p50_vs_one_process']:.2f}x | {num(m['decoded_p50_ms'])} | {m['decoded_p50_vs_one_process']:.2f}x | "
                  f"{pct(m['context_reused'])} | {pct(m['typed_through'])} |" for name, m in r["modes"].items()]
        c = r["capacity"]
        lines += ["", f"Capacity: {1000 * c['seconds_per_keystroke']:.0f} ms of a replica a keystroke; replicas for "
                  f"100 / 1,000 developers ({pct(c['typing_share'])} typing at a time): {c['replicas']['100']} / "
                  f"{c['replicas']['1000']}.", ""]
    load_test = data.get("loadtest")
    if isinstance(load_test, dict):
        lines += ["## Server under load (`quicksilver eval load --json evals/results/loadtest.json`)", "",
                  "```", json.dumps(load_test, indent=1), "```", ""]
    return "\n".join(lines)


def grounded_sections(data: dict) -> list[str]:
    """Repository context (eval repo), names that exist (eval names), edits (eval edits) and next edits."""
    lines = []
    if isinstance(r := data.get("repo"), dict) and r.get("asked"):
        lines += [f"## Cross-file cursors in held-out packages (`{r['command']}`)", "",
                  "| asked | chunks | exact | identifier | shown | precision | tokens / pass | tokens read | p50 ms |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        lines += [f"| {way} | {a['extra_chunks']:.1f} | {pct(a['exact'])} | {pct(a['identifier'])} | {pct(a['shown'])} | "
                  f"{pct(a['precision'])} | {a['tokens_per_pass']:.2f} | {a['tokens_evaluated']:.0f} | {num(a['p50_ms'])} |"
                  for way, a in r["asked"].items()] + [""]
    if isinstance(r := data.get("names"), dict) and r.get("analysis"):
        lines += [f"## Names that exist (`{r['command']}`)", "", f"{r['cursors']} cursors, {r['judged']} judged by "
                  "analysis; invented: the answer's first name does not exist there (of the judged answers).", "",
                  "| analysis | kind | invented | invented and shown | right | shown | right when shown | p50 ms |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- |"]
        for way, m in r["analysis"].items():
            for kind, k in [*m.get("kinds", {}).items(), ("all", m)]:
                lines.append(f"| {way} | {kind} | {pct(k['invented'])} | {k['invented_shown']} | {pct(k['right'])} | "
                             f"{pct(k['shown'])} | {pct(k['shown_right'])} | {num(k['p50_ms'])} |")
        lines.append("")
    for name in ("edits", "edits-seed1"):
        if isinstance(r := data.get(name), dict) and r.get("kinds"):
            lines += [f"## Repair of planted bugs (`{r['command']}`)", "",
                      "| kind | cases | fixed | harmed | refused | p50 ms |", "| --- | --- | --- | --- | --- | --- |"]
            lines += [f"| {kind} | {k['cases']} | {k['fixed']} | {k['harmed']} | {k['refused']} | {num(k['p50_ms'])} |"
                      for kind, k in [*r["kinds"].items(), ("all", r["totals"])]] + [""]
    if isinstance(r := data.get("nextedits"), dict) and r.get("kinds"):
        lines += [f"## Next edits (`{r['command']}`)", "", "| kind | cases | right | partial | harmed | none | p50 ms |",
                  "| --- | --- | --- | --- | --- | --- | --- |"]
        lines += [f"| {kind} | {k['cases']} | {pct(k['right'])} | {pct(k.get('partial', 0.0))} | {pct(k['harmed'])} | "
                  f"{pct(k['none'])} | {num(k['p50_ms'])} |" for kind, k in [*r["kinds"].items(), ("all", r)]] + [""]
    return lines


def imported_table(r: dict) -> list[str]:
    """`eval imported`'s rows: per precision, the files, import and load time, passes, requests through the server."""
    out = [f"{r['family']} layout, {r['parameters'] / 1e6:.0f} M parameters, random weights (quality not measured: "
           f"the logit columns check the conversion); {r['context']}-token context, single-line requests "
           "(max_tokens 32, stop \"\\n\") through `/v1/completions`, this machine's CPU. Random weights never end a "
           "line early, so each request decodes its whole window one token a pass: the worst case.", "",
           "| precision | on disk | import s | load s | full pass ms | window pass ms | request p50 ms (cold / next "
           "keystroke) | passes | logits vs reference: correlation / argmax agreement |",
           "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for precision, row in r["precisions"].items():
        q = row["requests"]
        out.append(f"| {precision} | {sum(row['bytes'].values()) / 1e6:.0f} MB | {row['import_s']:.0f} | "
                   f"{row['load_s']:.1f} | {row['full_pass_ms']:.0f} | {row['window_pass_ms']:.0f} | "
                   f"{q['cold']['p50_ms']:.0f} / {q['next keystroke']['p50_ms']:.0f} | "
                   f"{q['cold']['passes_p50']:.0f} | {row['correlation']:.3f} / {row['argmax_agreement']:.2f} |")
    return out


def card_scores(results: Path, card: dict) -> dict:
    """The eval scores a model card records: full runs of that model at the current decoding, default settings
    (the window for its set, syntax guidance on), by set and mode."""
    data = load(results)
    scores = {}
    for name, r in sorted(data.items()):
        if not isinstance(r, dict) or which_model(r, card).startswith("**") or r.get("syntax") is False:
            continue
        if r.get("model_sha256") not in same_weights(card, r.get("model_file", "")):
            continue  # another model directory's result (the twin)
        if r.get("set") == "humaneval" and r.get("samples") == 1 and r.get("temperature") == 0:
            scores["humaneval/completion"] = {"pass@1": r["pass@1"], "tasks": r["tasks"], "result": f"{name}.json"}
        elif r.get("set") in SETS and r["tasks"] == len(infill_tasks(r["set"])) and \
                window_of(r) in (None, UNKNOWN_WINDOW.get(r["set"])):
            scores[f"{r['set']}/{r['mode']}"] = {"pass@1": r["pass@1"], "exact_match": r["exact_match"],
                                                 "tasks": r["tasks"], "result": f"{name}.json"}
    if scores:
        from runtime import DECODING_REVISION
        scores["decoding_revision"] = DECODING_REVISION
    return scores


def add_arguments(p) -> None:
    p.add_argument("--results", type=Path, default=RESULTS, help="folder of result JSON files")
    p.add_argument("--model", type=Path, help="model directory for the learning curve (default: the shipped model)")
    p.add_argument("--no-card", dest="card", action="store_false",
                   help="do not record the model's current full-run scores in its card.json (`evals`)")


def run(args) -> None:
    from runtime.session import CARD_FILE, DEFAULT_MODEL_DIR, read_card

    text = report(args.results, args.model)
    (args.results / "REPORT.md").write_text(text + "\n")
    print(f"wrote {args.results / 'REPORT.md'} and {args.results / 'learning-curve.png'}")
    if args.card:
        model_dir = args.model or DEFAULT_MODEL_DIR
        card = read_card(model_dir)
        scores = card_scores(args.results, card)
        if card.get("evals") != scores:
            card["evals"] = scores
            (model_dir / CARD_FILE).write_text(json.dumps(card, indent=1))
            print(f"recorded {len(scores) - 1 if scores else 0} eval scores in {model_dir / CARD_FILE}")

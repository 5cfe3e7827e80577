"""quicksilver repo-corpus: training rows with cross-file context.

Each row is a window of one file after snippets of *other files of its package*, laid out exactly as the engine
lays out a request's extra context (runtime/engine.py `extra_context`): every snippet is `<|eos|>` then
`# path\n` and its text, cut from its end to fit, the most relevant nearest the file; then the file's window
(from `<|eos|>` when it starts at the file's start). The snippets are the 64-line chunks llama.vim sends, ranked
by the Jaccard similarity of their identifiers with the window's (RepoCoder's retrieval). Plain rows (no
snippets) keep what the model does without context. Rows are fixed length; `starts` says where each row's file
part begins (training masks only the file part). Files are split into train / held-out by content hash as
model/corpus.py does, and the held-out packages (evals/heldout-packages.txt) never enter.
"""
from __future__ import annotations

import hashlib
import json
import keyword
import os
import re
import sys
import time
from multiprocessing import Pool
from pathlib import Path

import numpy as np
from tqdm import tqdm

from model.corpus import HELDOUT_PERMILLE, META_FILE, _examine, _init_worker, default_roots, find_python_files, \
    humaneval_path, load_humaneval
from model.tokenizer import TOKENIZER_FILE, CodeTokenizer

ROWS_FILE = {"train": "train_rows.npy", "heldout": "heldout_rows.npy"}
STARTS_FILE = {"train": "train_starts.npy", "heldout": "heldout_starts.npy"}
CHUNK_LINES = 64          # llama.vim's chunk: 64 lines
MIN_CHUNK_LINES = 8       # a shorter tail of a file is left out of the snippets
CANDIDATE_FILES = 40      # other files of the package a row's snippets are drawn from (same folder first)
MAX_SNIPPETS = 6
EXTRA_MIN_TOKENS = 16     # as runtime/request.py: a snippet cut shorter than this is left out
MIN_FILE_TOKENS = 192     # a row's file part is at least this long
PLAIN_SHARE = 0.2         # rows with no snippets
DISTRACTOR_SHARE = 0.3    # rows whose farthest snippet is from another package (context is not always relevant)
ROWS_PER_FILE = 3         # at most; one per ~2,000 tokens of the file
IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]{2,}")
STOP = set(keyword.kwlist) | {"self", "cls", "None", "True", "False", "return", "def", "class", "import"}


def identifiers(text: str) -> set[str]:
    return set(IDENT.findall(text)) - STOP


def package_of(path: str, roots: list[Path]) -> tuple[str, str] | None:
    """(package key, path inside the root) for a file in a package folder of a root; None for a top-level module."""
    for root in roots:
        try:
            rel = Path(path).relative_to(root)
        except ValueError:
            continue
        if len(rel.parts) >= 2 and rel.parts[0] != "site-packages":
            return f"{root}/{rel.parts[0]}", str(rel)
    return None


def chunks_of(rel: str, text: str) -> list[tuple[str, set[str]]]:
    lines = text.splitlines(keepends=True)
    out = []
    for i in range(0, len(lines), CHUNK_LINES):
        piece = lines[i:i + CHUNK_LINES]
        if len(piece) >= MIN_CHUNK_LINES:
            body = "".join(piece)
            out.append((f"# {rel}\n{body}", identifiers(body)))
    return out


def jaccard(a: set[str], b: set[str]) -> float:
    return len(a & b) / len(a | b) if a and b else 0.0


class RowBuilder:
    def __init__(self, tok: CodeTokenizer, seq: int, rng: np.random.Generator):
        self.tok, self.seq, self.rng = tok, seq, rng

    def file_window(self, text: str, length: int, filler: list[int]) -> list[int]:
        """`length` tokens of the file from a random line (from <|eos|> at its start), the filler after its end."""
        lines = text.splitlines(keepends=True)
        i = int(self.rng.integers(0, max(1, len(lines) - 8))) if self.rng.random() < 0.8 else 0
        take, chars = [], 0
        for line in lines[i:]:
            take.append(line)
            chars += len(line)
            if chars > 6 * length:
                break
        ids = ([self.tok.bos_id] if i == 0 else []) + self.tok.encode("".join(take))
        if len(ids) < length and i + len(take) >= len(lines):
            ids += [self.tok.eos_id] + filler
        return ids[:length]

    def snippets(self, chosen: list[str], room: int) -> list[int]:
        """The engine's layout: chosen[0] (the most relevant) nearest the file, each from its start."""
        ids: list[int] = []
        for text in chosen:
            if room - len(ids) < EXTRA_MIN_TOKENS:
                break
            ids = ([self.tok.bos_id] + self.tok.encode(text))[:room - len(ids)] + ids
        return ids

    def row(self, text: str, candidates: list[tuple[str, set[str]]], distractors: list[str],
            filler: list[int]) -> tuple[list[int], int]:
        plain = self.rng.random() < PLAIN_SHARE or not candidates
        lo = min(MIN_FILE_TOKENS, self.seq // 4)
        length = self.seq if plain else int(self.rng.integers(lo, max(lo + 1, self.seq - 4 * EXTRA_MIN_TOKENS)))
        window = self.file_window(text, length, filler)
        if plain:
            return window, 0
        query = identifiers(self.tok.decode(window))
        ranked = sorted(candidates, key=lambda c: -jaccard(query, c[1]))[:MAX_SNIPPETS]
        chosen = [c[0] for c in ranked]
        if distractors and self.rng.random() < DISTRACTOR_SHARE:
            chosen.append(distractors[int(self.rng.integers(0, len(distractors)))])
        extra = self.snippets(chosen, self.seq - len(window))
        if len(extra) + len(window) < self.seq:   # too few snippets to fill the room: the file takes the rest
            window = (window + filler)[:self.seq - len(extra)]
        return extra + window, len(extra)


def build(out: Path, roots: list[Path], tokenizer: Path, seq: int, max_rows: int, workers: int, seed: int,
          files_per_package: int) -> dict:
    t0 = time.time()
    out.mkdir(parents=True, exist_ok=True)
    tok = CodeTokenizer.load(tokenizer)
    rng = np.random.default_rng(seed)
    packages: dict[str, list[tuple[str, str]]] = {}
    for p in find_python_files(roots):
        if (key := package_of(p, roots)) is not None:
            packages.setdefault(key[0], []).append((p, key[1]))
    packages = {k: v for k, v in packages.items() if len(v) >= 2}
    order = sorted(packages, key=lambda k: hashlib.sha1(k.encode()).hexdigest())
    builder = RowBuilder(tok, seq, rng)
    rows: dict[str, list] = {"train": [], "heldout": []}
    starts: dict[str, list] = {"train": [], "heldout": []}
    seen: set[str] = set()
    distractors: list[str] = []
    stats = {"packages": 0, "files": 0, "dropped": {}}
    with Pool(workers, initializer=_init_worker, initargs=(load_humaneval(humaneval_path()),)) as pool:
        for key in tqdm(order, desc="packages", file=sys.stderr):
            files = packages[key]
            if len(files) > 4 * files_per_package:   # a large package: a sample of its files
                files = [files[i] for i in sorted(rng.choice(len(files), 4 * files_per_package, replace=False))]
            texts = {}
            for (path, rel), (digest, text, reason) in zip(files, pool.map(_examine, [f[0] for f in files])):
                if text is None or digest in seen:
                    stats["dropped"][reason if text is None else "duplicate"] = \
                        stats["dropped"].get(reason if text is None else "duplicate", 0) + 1
                    continue
                seen.add(digest)
                texts[rel] = (text, "heldout" if int(digest[:8], 16) % 1000 < HELDOUT_PERMILLE else "train")
            if len(texts) < 2:
                continue
            stats["packages"] += 1
            chunks = {rel: chunks_of(rel, t) for rel, (t, _) in texts.items()}
            targets = list(texts)
            rng.shuffle(targets)
            for rel in targets[:files_per_package]:
                text, part = texts[rel]
                folder = os.path.dirname(rel)
                others = sorted((r for r in texts if r != rel), key=lambda r: (os.path.dirname(r) != folder,
                                                                             rng.random()))[:CANDIDATE_FILES]
                candidates = [c for r in others for c in chunks[r]]
                filler = tok.encode(texts[others[0]][0][:4 * seq])[:seq]
                stats["files"] += 1
                for _ in range(min(ROWS_PER_FILE, 1 + len(text) // 8000)):
                    ids, start = builder.row(text, candidates, distractors, filler)
                    if len(ids) == seq:
                        rows[part].append(np.asarray(ids, dtype=np.uint16))
                        starts[part].append(start)
            for rel in list(chunks)[:2]:
                distractors += [c[0] for c in chunks[rel][:1]]
            if len(rows["train"]) >= max_rows:
                break
    if not rows["heldout"] and len(rows["train"]) >= 2:   # small sources: still hold a row out
        rows["heldout"].append(rows["train"].pop())
        starts["heldout"].append(starts["train"].pop())
    for part in rows:
        np.save(out / ROWS_FILE[part], np.stack(rows[part]) if rows[part] else np.zeros((0, seq), np.uint16))
        np.save(out / STARTS_FILE[part], np.asarray(starts[part], dtype=np.int32))
    tok.save(out / TOKENIZER_FILE)
    meta = {"kind": "repo", "roots": [str(r) for r in roots], "seq": seq, "vocab_size": tok.vocab_size,
            "dtype": "uint16", **stats, "rows": {p: len(r) for p, r in rows.items()},
            "tokens": {p: len(r) * seq for p, r in rows.items()},
            "rows_with_snippets": {p: int(np.sum(np.asarray(s) > 0)) for p, s in starts.items()},
            "seconds": round(time.time() - t0, 1)}
    (out / META_FILE).write_text(json.dumps(meta, indent=2))
    return meta


def load_rows(corpus: Path, part: str) -> tuple[np.ndarray, np.ndarray]:
    return np.load(corpus / ROWS_FILE[part], mmap_mode="r"), np.load(corpus / STARTS_FILE[part])


def is_repo_corpus(corpus: Path) -> bool:
    return (corpus / ROWS_FILE["train"]).exists()


def add_arguments(p) -> None:
    p.add_argument("--out", type=Path, default=Path("data/repo"), help="output folder")
    p.add_argument("--tokenizer", type=Path, default=Path("model/default/tokenizer.json"), help="tokenizer.json")
    p.add_argument("--seq", type=int, default=1024, help="row length in tokens")
    p.add_argument("--max-rows", type=int, default=12000, help="stop after this many training rows")
    p.add_argument("--files-per-package", type=int, default=40, help="target files drawn from one package")
    p.add_argument("--extra", type=Path, action="append", default=[], help="another folder of packages (repeatable)")
    p.add_argument("--no-default-roots", action="store_true", help="only scan --extra folders")
    p.add_argument("--workers", type=int, default=os.cpu_count(), help="processes reading files")
    p.add_argument("--seed", type=int, default=0)


def run(args) -> None:
    roots = ([] if args.no_default_roots else default_roots()) + [r.resolve() for r in args.extra]
    meta = build(args.out, roots, args.tokenizer, args.seq, args.max_rows, args.workers, args.seed,
                 args.files_per_package)
    print(json.dumps({k: meta[k] for k in ("packages", "files", "rows", "rows_with_snippets", "seconds")}))

"""A repository index for context: a workspace folder's source files cut into chunks along their syntax
(tree-sitter's top-level definitions), ranked against the identifiers around the cursor with SQLite FTS5's BM25
(Tabby's and RepoCoder's lexical retrieval), so a request that brings no other files — an OpenAI client sends only
a prompt and a suffix — still reaches the repository's definitions. Files git ignores (or the folder's .gitignore
files name, outside git) and large or binary files are never indexed; a background thread follows changes.

`Workspace.ground(req)` is the one entry: it returns the request with the best chunks after the client's own
(Request.extra: the most relevant first; the engine lays them out nearest the file).
"""
from __future__ import annotations

import logging
import os
import re
import sqlite3
import subprocess
import threading
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

from runtime.request import Request

log = logging.getLogger("quicksilver.workspace")

MAX_FILE_BYTES = 256_000     # larger files are mostly generated or data
MAX_FILES = 20_000           # a folder with more (a home directory?) is indexed this far, with a warning
CHUNK_LINES = 64             # the longest chunk (llama.vim's chunk); a longer definition is cut into pieces
SNIPPETS = 4                 # chunks added to one request
CANDIDATES = 16              # best BM25 rows looked at (some are already in the request's own text)
OWN_CHARS = 40               # a chunk the request holds, this long at least, says which file it is (its path)
QUERY_LINES = (24, 8)        # lines before and after the cursor whose identifiers make the query
MAX_TERMS = 48
DEFINITION_TERMS = 8         # the names nearest the cursor whose definitions come first
POLL_SECONDS = 1.0           # how often indexed files are checked for changes
RELIST_SECONDS = 10.0        # how often the folder is listed again for new and deleted files
SOURCE = {".py", ".pyi", ".js", ".jsx", ".ts", ".tsx", ".go", ".rs", ".java", ".kt", ".c", ".h", ".cc", ".cpp",
          ".hpp", ".cs", ".rb", ".php", ".swift", ".scala", ".lua", ".sh"}
SKIPPED_DIRS = {".git", "node_modules", "__pycache__", ".venv", "venv", ".tox", ".mypy_cache"}   # outside git
IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]{2,}")
COMMON = {"self", "cls", "None", "True", "False", "def", "class", "return", "import", "from", "for", "while",
          "not", "and", "with", "else", "elif", "try", "except", "raise", "pass", "lambda", "yield", "async", "await",
          "const", "let", "var", "function", "this", "new", "int", "str", "len"}
DEFINITIONS = {"function_definition", "class_definition", "decorated_definition"}
DEFINED = re.compile(r"^[ \t]*(?:async[ \t]+)?(?:def|class|function|fn|func|struct|interface|type|enum)[ \t]+([A-Za-z_]\w*)"
                     r"|^(?:(?:export[ \t]+)?(?:const|let|var)[ \t]+)?([A-Za-z_]\w*)[ \t]*(?::[^=\n]*)?=(?!=)", re.M)
DEFINES_WEIGHT = 4.0         # BM25 weight of the names a chunk defines against the names it uses (weight 1)


def identifiers(text: str) -> list[str]:
    return [w for w in IDENT.findall(text) if w not in COMMON]


def defined(text: str) -> list[str]:
    """Names a chunk defines: functions, classes and methods at any depth, assignments at its top level."""
    return list(dict.fromkeys(a or b for a, b in DEFINED.findall(text)))


def in_git(root: Path) -> bool:
    try:
        return subprocess.run(["git", "-C", str(root), "rev-parse", "--is-inside-work-tree"], capture_output=True,
                              timeout=10).stdout.strip() == b"true"
    except (OSError, subprocess.SubprocessError):
        return False


def for_editor(root: str | Path | None) -> "Workspace | None":
    """The index of an editor's workspace folder, started, when it is a git work tree (an editor opened on a
    home folder or / is not a project: indexing it would cost minutes for nothing); None otherwise."""
    if not root or not Path(root).is_dir() or not in_git(Path(root)):
        return None
    return Workspace(Path(root)).start()


def list_files(root: Path) -> list[Path]:
    """The folder's source files git would track (tracked or untracked, never ignored); outside a git work tree,
    a walk that honours every .gitignore on the way."""
    try:
        out = subprocess.run(["git", "-C", str(root), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                             capture_output=True, timeout=30, check=True).stdout
        names = [n for n in out.decode("utf-8", "surrogateescape").split("\0") if n]
        return [root / n for n in dict.fromkeys(names) if Path(n).suffix in SOURCE]
    except (OSError, subprocess.SubprocessError):
        return _walk(root)


def _walk(root: Path) -> list[Path]:
    import pathspec

    found, specs = [], []   # specs: (folder, its .gitignore's patterns)
    for folder, dirs, names in os.walk(root):
        here = Path(folder)
        if ".gitignore" in names:
            lines = (here / ".gitignore").read_text(errors="replace").splitlines()
            specs.append((here, pathspec.GitIgnoreSpec.from_lines(lines)))

        def ignored(path: Path, is_dir: bool) -> bool:
            for base, spec in specs:
                if base == path or base in path.parents:
                    rel = path.relative_to(base).as_posix() + ("/" if is_dir else "")
                    if spec.match_file(rel):
                        return True
            return False

        dirs[:] = sorted(d for d in dirs if d not in SKIPPED_DIRS and not d.startswith(".")
                         and not ignored(here / d, True))
        found += [here / n for n in sorted(names) if Path(n).suffix in SOURCE and not ignored(here / n, False)]
    return found


def chunks(text: str, python: bool) -> list[tuple[int, int, str]]:
    """(first line, end line, text) pieces: each top-level definition alone, the statements between definitions together,
    anything longer than CHUNK_LINES cut into CHUNK_LINES-line pieces; other languages in CHUNK_LINES-line pieces."""
    lines = text.splitlines(keepends=True)
    spans: list[tuple[int, int]] = []
    if python:
        from runtime.syntax import parser_for
        root = parser_for("python").parse(text.encode("utf-8")).root_node
        start = None   # the first line of a run of other statements
        for node in root.children:
            a, b = node.start_point[0], node.end_point[0] + 1
            if node.type in DEFINITIONS:
                if start is not None:
                    spans.append((start, a))
                    start = None
                spans.append((a, b))
            elif start is None:
                start = a
        if start is not None:
            spans.append((start, len(lines)))
    else:
        spans = [(0, len(lines))]
    out = []
    for a, b in spans:
        for s in range(a, b, CHUNK_LINES):
            piece = "".join(lines[s:min(b, s + CHUNK_LINES)])
            if piece.strip():
                out.append((s, min(b, s + CHUNK_LINES), piece))
    return out


class Workspace:
    """The index of one folder, in memory (SQLite FTS5), safe to query from several threads."""

    def __init__(self, root: Path, snippets: int = SNIPPETS):
        self.root, self.snippets = Path(root).resolve(), snippets
        if not self.root.is_dir():
            raise ValueError(f"the workspace {root} is not a folder")
        self.db = sqlite3.connect(":memory:", check_same_thread=False)
        # chunks are kept as (path, lines, identifiers); FTS5 indexes the identifiers (its content is `meta`), and
        # a chunk's text is read from its file when it is used
        self.db.executescript("""
            CREATE TABLE meta (id INTEGER PRIMARY KEY, path TEXT, a INTEGER, b INTEGER, words TEXT, defines TEXT);
            CREATE INDEX meta_path ON meta (path);
            CREATE VIRTUAL TABLE chunks USING fts5(words, defines, content='meta', content_rowid='id',
                                                   tokenize="unicode61 tokenchars '_'");""")
        self.lock = threading.Lock()
        self.files: dict[Path, tuple[int, int]] = {}   # indexed path → (mtime_ns, size)
        self.stopping = threading.Event()
        self.thread: threading.Thread | None = None
        self.ready = threading.Event()

    # --- indexing ---------------------------------------------------------------------------------------------
    def remove(self, path: Path) -> None:
        rel = path.relative_to(self.root).as_posix()
        with self.lock:
            rows = self.db.execute("SELECT id, words, defines FROM meta WHERE path = ?", (rel,)).fetchall()
            self.db.executemany("INSERT INTO chunks (chunks, rowid, words, defines) VALUES ('delete', ?, ?, ?)", rows)
            self.db.execute("DELETE FROM meta WHERE path = ?", (rel,))

    def index_file(self, path: Path) -> bool:
        """(Re-)index one file; False when it is left out (gone, too large, binary, not UTF-8)."""
        self.remove(path)
        try:
            if path.stat().st_size > MAX_FILE_BYTES or not path.is_file():
                return False
            text = path.read_bytes().decode("utf-8")
        except (OSError, UnicodeDecodeError):
            return False
        if "\0" in text[:8192]:
            return False
        rel, python = path.relative_to(self.root).as_posix(), path.suffix in (".py", ".pyi")
        rows = [(rel, a, b, " ".join(dict.fromkeys(identifiers(body))), " ".join(defined(body)))
                for a, b, body in chunks(text, python)]
        with self.lock:
            for row in rows:
                rowid = self.db.execute("INSERT INTO meta (path, a, b, words, defines) VALUES (?, ?, ?, ?, ?)",
                                        row).lastrowid
                self.db.execute("INSERT INTO chunks (rowid, words, defines) VALUES (?, ?, ?)", (rowid, *row[3:]))
        return True

    def refresh(self, relist: bool = True) -> int:
        """Index what changed since the last look (new, modified, deleted files); the number of files touched."""
        listed = list_files(self.root) if relist else list(self.files)
        if len(listed) > MAX_FILES:
            log.warning("%s has %d source files: indexing the first %d", self.root, len(listed), MAX_FILES)
            listed = listed[:MAX_FILES]
        touched = 0
        for path in listed:
            try:
                st = path.stat()
                key = (st.st_mtime_ns, st.st_size)
            except OSError:
                key = None
            if key != self.files.get(path):
                touched += 1
                self.index_file(path)
                if key is None:
                    self.files.pop(path, None)
                else:
                    self.files[path] = key
        for gone in set(self.files) - set(listed) if relist else ():   # deleted, or ignored now
            self.remove(gone)
            del self.files[gone]
            touched += 1
        return touched

    def indexed(self) -> dict:
        with self.lock:
            files, count = self.db.execute("SELECT count(DISTINCT path), count(*) FROM meta").fetchone()
        return {"root": str(self.root), "files": files, "chunks": count}

    def start(self) -> "Workspace":
        """Index in the background, then follow changes until close()."""
        def follow():
            t0 = time.perf_counter()
            self.refresh()
            log.info("workspace %s: %d files indexed in %.1f s", self.root, self.indexed()["files"],
                     time.perf_counter() - t0)
            self.ready.set()
            last_list = time.monotonic()
            while not self.stopping.wait(POLL_SECONDS):
                relist = time.monotonic() - last_list >= RELIST_SECONDS
                self.refresh(relist=relist)
                last_list = time.monotonic() if relist else last_list
        self.thread = threading.Thread(target=follow, name="workspace-index", daemon=True)
        self.thread.start()
        return self

    def close(self) -> None:
        self.stopping.set()
        if self.thread is not None:
            self.thread.join(timeout=5)

    # --- retrieval --------------------------------------------------------------------------------------------
    def search(self, prefix: str, suffix: str = "", limit: int | None = None, own: Counter | None = None) -> list[str]:
        """The chunks most like the code around the cursor, best first, as "# path" then the chunk (those whose
        text the request already holds are left out, and counted by path in `own`: the file being edited)."""
        near = "".join(prefix.splitlines(keepends=True)[-QUERY_LINES[0]:]) + \
            "".join(suffix.splitlines(keepends=True)[:QUERY_LINES[1]])
        terms = list(dict.fromkeys(reversed(identifiers(near))))[:MAX_TERMS]   # the nearest the cursor first
        if not terms:
            return []
        select = "SELECT meta.path, meta.a, meta.b FROM chunks JOIN meta ON meta.id = chunks.rowid WHERE chunks MATCH ? "
        with self.lock:   # where the names nearest the cursor are defined, then the chunks most like the code
            rows = [row for t in terms[:DEFINITION_TERMS]
                    for row in self.db.execute(select + "ORDER BY bm25(chunks) LIMIT 1", (f'defines : "{t}"',))]
            rows += self.db.execute(select + "ORDER BY bm25(chunks, 1.0, ?) LIMIT ?",
                                    (" OR ".join(f'"{t}"' for t in terms), DEFINES_WEIGHT, CANDIDATES)).fetchall()
        out = []
        for path, a, b in dict.fromkeys(rows):
            try:
                body = "".join((self.root / path).read_text(errors="replace").splitlines(keepends=True)[a:b])
            except OSError:   # deleted since: the watcher will drop it
                continue
            head = body.strip()[:200]
            if not head or head in prefix or head in suffix:
                if own is not None and len(head) >= OWN_CHARS:
                    own[path] += 1
                continue
            out.append(f"# {path}\n{body}")
            if len(out) == (limit or self.snippets):
                break
        return out

    def ground(self, req: Request) -> Request:
        """The request with the workspace's chunks after the client's own (edits and completions alike), the
        workspace as its root and, where the request holds chunks of one of its files, that file as its path:
        names analysis reads the repository's own modules, relative imports included (HTTP clients name no file)."""
        own = Counter()
        found = tuple(s for s in self.search(req.prefix, req.suffix, own=own) if s not in req.extra)
        path = req.path or (str(self.root / own.most_common(1)[0][0]) if own else None)
        return replace(req, extra=req.extra + found, root=req.root or str(self.root), path=path)

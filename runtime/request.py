"""The request contract: what a request is, every default it has, and how the front ends shape one.

Every front end (/v1/completions, /infill, websocket sessions, the language server) builds its requests from the
client's values and the defaults here, nothing else: to change where a completion stops, the editors' confidence
floor or the window for a line, change this file.
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass, field

from runtime.frames import Completion
from runtime.syntax import infer_language, wants_block

MAX_NEW_TOKENS = 1024             # the most tokens any request may ask for (every front end's ceiling)
OPENAI_MAX_TOKENS = 16            # /v1/completions' max_tokens when a client sends none: OpenAI's own default
THRESHOLD = 0.7                   # commit every masked slot at least this confident per step (held-out editor
                                  # cursors: docs/speed.md)
EOM_BIAS = 2.0                    # added to the <|eom|> logit: unknown-length infill overfills its window without it
MODES = ("completion", "infill", "edit")
DEFAULT_MAX_NEW_TOKENS = 32       # a request's cap when its client names none (llama.cpp's n_predict, a session's
                                  # complete): a line or a short block
DEFAULT_CONTEXT_TOKENS = 384      # prefix + window + suffix; smaller is faster on a CPU
# The window is a length hint to the model (it tends to fill it), so the engine sizes it by what the cursor asks
# for, and a client's max_tokens / n_predict only caps it: 12 slots for a line (held-out corpus lines: exact 8.3 /
# 8.7 / 7.0 / 4.7 / 4.0 % at 8 / 12 / 16 / 24 / 32 slots, docs/history.md), WINDOWS["block"] for a block.
WINDOWS = {"line": 12, "block": 32}
# Editors (/infill, the language server) show nothing when a completion's confidence is below this, unless the user
# asked. With the model's calibrator (runtime/confidence.py) the confidence is the estimated chance that the first
# line is right; chosen on held-out editor cursors of seed 0 (`quicksilver eval editor --seed 0 --clients
# completions-128`) as the highest threshold that still shows a completion at 25 % of the cursors (docs/history.md
# has its values over the revisions). /v1/completions withholds only when asked (min_confidence, serve
# --min-confidence).
EDITOR_MIN_CONFIDENCE = 0.18
UNCALIBRATED_MIN_CONFIDENCE = 0.45   # the same for a model without a calibrator, whose confidence is the least token
                                     # probability (chosen at seed 0 before calibration: 28 % shown, 38 % right)
MAX_HEALED_CHARS = 400            # a cursor line longer than this is not moved into the window (not healed)
EDIT_GROWTH = 8                   # extra slots after an edited block, so a rewrite may be a little longer
EDIT_CONTEXT_TOKENS = 64          # an edit keeps at least this much of the code around its block in view
EXTRA_TOKENS = 640                # other files' snippets (Request.extra) get at most this many tokens more than the
                                  # file's context, within the model's positions (a 1024-position model: 384 + 640;
                                  # a 512 one: 384 + 128); the file keeps all it would get without them
EXTRA_MIN_TOKENS = 16             # a snippet cut shorter than this is left out


@dataclass
class Request:
    prefix: str
    suffix: str = ""
    mode: str = "infill"
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0
    stop: tuple[str, ...] = ()
    deadline_ms: float | None = None
    block: int | None = None          # default: the whole window in one block
    threshold: float = THRESHOLD
    eom_bias: float = EOM_BIAS
    existing: str = ""                # edit mode: the block being rewritten (between prefix and suffix)
    edit: str = "all"                 # edit mode: 'all', 'repair', or 'none'
    single_line: bool = False         # end the result at the first newline
    language: str | None = None       # 'python': syntax-guided ends while decoding (Python's parser) and syntax-aware
                                      # post-processing (scope, validity) with tree-sitter
    window: int | None = None         # exact slots (the harness's oracle length); None: the engine decides (WINDOWS),
                                      # never more than max_new_tokens
    editor: bool = False              # built by editor_request (a remote language server asks its server for the same)
    extra: tuple[str, ...] = ()       # other files' text (llama.vim's input_extra, the editor's other open files),
                                      # most relevant first: placed before this file while the context has room
    path: str | None = None           # the file's path, when the client knows it: names analysis (runtime/names.py)
                                      # resolves the file's relative imports from it
    root: str | None = None           # the repository the file is in (serve --workspace, the editor's folder): names
                                      # analysis loads the repository's own modules from it
    window_multiple: int = 1          # round the window up to a multiple of this: while the user types a line, the
                                      # healed cursor line grows token by token, and a window that does not change
                                      # with it keeps the context (and its cached keys/values) identical
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {self.mode!r}")
        if not 1 <= self.max_new_tokens <= MAX_NEW_TOKENS:
            raise ValueError(f"max_new_tokens must be between 1 and {MAX_NEW_TOKENS}")
        if self.window is not None and not 1 <= self.window <= MAX_NEW_TOKENS:
            raise ValueError(f"window must be between 1 and {MAX_NEW_TOKENS} slots")
        if not 1 <= self.window_multiple <= 64:
            raise ValueError("window_multiple must be between 1 and 64")
        if self.mode == "edit" and not self.existing:
            raise ValueError("edit mode needs the existing block text")
        for name in ("prefix", "suffix", "existing", "stop", "extra"):
            check_text(name, getattr(self, name))


def check_text(name: str, value) -> None:
    """Text the tokenizer can take: a lone surrogate (half of a UTF-16 pair, e.g. from a broken JSON escape) is
    a client's error, reported with where it is, not a crash in the tokenizer."""
    for text in (value,) if isinstance(value, str) else value:
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as e:
            raise ValueError(f"{name} contains a lone surrogate {text[e.start]!r} at character {e.start}: "
                             "send valid Unicode (UTF-16 surrogates must come in pairs)") from None


def withheld(c: Completion, min_confidence: float | None) -> bool:
    """True when a completion is too unsure to show (empty answers are never shown either)."""
    return bool(min_confidence) and c.stats.get("confidence", 0.0) < min_confidence


def editor_min_confidence(c: Completion) -> float:
    """The editors' default threshold for this completion's confidence: calibrated, or the least probability."""
    return EDITOR_MIN_CONFIDENCE if c.stats.get("calibrated") else UNCALIBRATED_MIN_CONFIDENCE


# Editors (the language server; /infill as llama.vim and llama.vscode send it) ask with one request shape, so a
# cursor shows the same text on every editor path: a line where the cursor asks for a line (it ends at the
# newline), a block on a blank line in a block (runtime/syntax.py wants_block), at most EDITOR_TOKENS tokens (fewer
# if the client asks: its n_predict), the window rounded up to a multiple of EDITOR_WINDOW_MULTIPLE so that typing a
# line keeps the cached context. The window (WINDOWS) sizes a line or a block; the cap is one for both, so that a
# block shown at a blank line stays answerable while its first line is typed (runtime/answers.py).
EDITOR_TOKENS = 96
EDITOR_WINDOW_MULTIPLE = 8


def editor_request(prefix: str, suffix: str, language: str | None = None, single_line: bool | None = None,
                   max_new_tokens: int | None = None, stop: tuple[str, ...] = (), **fields) -> Request:
    """The request an editor path sends for a cursor; `max_new_tokens` (a client's n_predict) only lowers the
    cap, `stop` adds to the line's newline, `fields` are Request's others (deadline, sampling, extra, id)."""
    language = language or infer_language(prefix, suffix)
    if single_line is None:
        single_line = not wants_block(prefix, suffix, language)
    return Request(prefix=prefix, suffix=suffix, single_line=single_line, language=language,
                   max_new_tokens=min(EDITOR_TOKENS, max_new_tokens or EDITOR_TOKENS),
                   stop=tuple(dict.fromkeys((*stop, *(("\n",) if single_line else ())))),
                   window_multiple=EDITOR_WINDOW_MULTIPLE, editor=True, **fields)


def window_of(req: Request, windows: dict = WINDOWS) -> int:
    """The window for a completion or infill: the request's exact window, else the engine's choice for what the
    cursor asks for (a line, or a block on a blank line), never more than the client's max_new_tokens."""
    if req.window is not None:
        return req.window
    kind = "line" if req.single_line or "\n" in req.stop or not wants_block(req.prefix, req.suffix, req.language) \
        else "block"
    return min(req.max_new_tokens, windows[kind])


def suffix_echo(suffix: str) -> str:
    """The suffix from its start through its second non-blank line. A middle that writes this is re-writing the
    code that follows the cursor (an unknown-length window the model overfills): decoding stops there and the
    result ends before it. Empty when the suffix has fewer than two non-blank lines (too little to be sure)."""
    lines, seen = suffix.split("\n"), 0
    for i, line in enumerate(lines):
        seen += bool(line.strip())
        if seen == 2:
            return "\n".join(lines[:i + 1])
    return ""


def stops_of(req: Request) -> tuple[str, ...]:
    """A request's stop sequences: the caller's, and for a multi-line infill the suffix's echo."""
    echo = suffix_echo(req.suffix) if req.mode == "infill" and not req.single_line else ""
    return tuple(req.stop) + ((echo,) if echo else ())



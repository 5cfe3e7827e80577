"""Token healing around the cursor, and post-processing of generated text (single-line cuts, suffix duplicates).

Byte-level BPE merges a newline with the next line's indentation ("\n   " + " return"), so the model never saw a
prefix ending in a bare newline before an indented line, nor a suffix starting with a full indent. `heal` moves
the cursor's partial line (with the blank lines before a blank cursor line) out of the prefix into text the window
must start with, and the suffix's leading blank lines and all but one indent character into the window's end, so
both boundaries fall where training put them; `unheal_end` removes from a finished middle what it took from the
suffix.
"""
from __future__ import annotations

import re


def indent_of(line: str) -> str:
    return line[: len(line) - len(line.lstrip(" \t"))]


def heal(prefix: str, suffix: str) -> tuple[str, str, str]:
    """(prefix, forced window start, suffix) with the boundaries moved to where the tokenizer splits."""
    cut = prefix.rfind("\n")
    if cut >= 0 and not prefix[cut + 1:].strip():
        # a blank cursor line after blank lines: BPE spells "0\n\n    for" as '0' '\n\n   ' ' for', so the
        # window starts at the first newline of the run (a bare '\n' token ending the prefix means column 0 follows)
        cut = prefix.find("\n", len(prefix.rstrip(" \t\r\n")))
    new_prefix, forced = (prefix[:cut], prefix[cut:]) if cut >= 0 else (prefix, "")
    if not forced.isascii():  # a character spread over several byte tokens cannot be spelled token by token
        new_prefix, forced = prefix, ""
    return new_prefix, forced, suffix[len(moved_from_suffix(suffix)):]


def moved_from_suffix(suffix: str) -> str:
    """The start of the suffix that BPE merges with the middle's last newline: blank lines, then all but one
    character of the next line's indentation ("\n\n   " + " for"). It belongs to the window; `unheal_end` drops
    it from a finished middle. Nothing when the next non-blank line starts at column 0 (newlines stay bare there)."""
    start = 0
    for line in suffix.split("\n"):
        if line.strip():
            w = indent_of(line)
            return suffix[:start] + w[:-1] if w else ""
        start += len(line) + 1
    return ""


def unheal_end(text: str, suffix: str) -> str:
    """Drop what `heal` moved from the suffix's start to the end of a finished middle."""
    moved = moved_from_suffix(suffix)
    if moved and text.endswith("\n" + moved):  # the middle's own line end, then the moved text
        return text[: len(text) - len(moved)]
    return text


def drop_unwritten_indent(text: str, suffix: str) -> str:
    """A middle cut short before a line break ends at its last line: the next line's indentation alone is not
    code. Where the suffix starts mid-line that indentation is the start of the suffix's line, and stays."""
    head, newline, last = text.rpartition("\n")
    if newline and not last.strip() and not suffix.split("\n", 1)[0]:
        return head + newline
    return text


def drop_suffix_overlap(text: str, suffix: str) -> str:
    """Remove trailing lines of `text` that repeat the first lines of `suffix` (the model re-wrote what follows)."""
    after = [l.strip() for l in suffix.splitlines() if l.strip()]
    lines = text.split("\n")
    for n in range(min(len(after), len(lines)), 0, -1):
        tail = [l.strip() for l in lines if l.strip()][-n:]
        if tail and tail == after[:n]:
            kept, seen = [], 0
            for line in reversed(lines):  # drop the n matching non-blank lines from the end
                if seen < n:
                    seen += bool(line.strip())
                    continue
                kept.append(line)
            return "\n".join(reversed(kept)) + ("\n" if kept else "")
    return text


def line_end(prefix: str, suffix: str) -> str:
    """What ends a single line at this cursor: "\n" when the line takes the place of a whole line (the cursor at
    a line's start and the suffix beginning on the next one, as in HumanEval's single-line tasks), else nothing
    (the suffix holds the rest of the cursor's line)."""
    return "\n" if (not prefix or prefix.endswith("\n")) and suffix and not suffix.startswith("\n") else ""


NEARBY_LINES = 3        # non-blank lines each side of the cursor that a completion must not write again
TRIVIAL_CHARS = 5       # lines no longer than this ("pass", ")", "else:") may repeat harmlessly
SURE_REPEAT = 0.8       # a first line equal to a nearby one is kept when every generated token was this probable


def cut_repeats(text: str, prefix: str, suffix: str, sure: bool = False) -> str:
    """The completion up to the first line that repeats one of its own earlier lines or writes again one of the
    NEARBY_LINES lines above or below the cursor: from there on the model is looping or running into the code
    around the cursor. That holds for the first line too (the cursor's own line counts from the text typed before
    it) unless the model was `sure` (its least token probability at least SURE_REPEAT). Held-out editor cursors
    (seeds 2-7, 720 cursors): 64 first lines equal to a nearby line, 3 of them the file's line; the one that
    reached 0.8 was right, the 61 wrong ones stayed below it (the most confident at 0.79)."""
    head = prefix[prefix.rfind("\n") + 1:]
    above = [l.strip() for l in prefix.split("\n")[:-1] if l.strip()][-NEARBY_LINES:]
    below = [l.strip() for l in suffix.split("\n")[1:] if l.strip()][:NEARBY_LINES]
    seen = set(above + below)
    lines = text.split("\n")
    for i, line in enumerate(lines):
        whole = (head + line if i == 0 else line).strip()
        if len(whole) > TRIVIAL_CHARS and whole in seen and not (i == 0 and sure):
            return "\n".join(lines[:i]) + ("\n" if i else "")
        seen.add(whole)
    return text


NAME_END = re.compile(r"[A-Za-z_][A-Za-z0-9_]*$")
NAME_START = re.compile(r"[A-Za-z0-9_]+")
WORDS = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def invents_a_name(text: str, prefix: str, suffix: str) -> bool:
    """Whether the completion glues letters onto a name the user finished: the cursor follows a name the file
    already has (elsewhere, as a whole word), and the completion makes it one the file does not have
    (`item.price` + "rs", `quantity` + "kkkk": a user's probe found them shown). Held-out typed lines: see
    docs/history.md, "Probes behind single rules"."""
    typed, more = NAME_END.search(prefix), NAME_START.match(text)
    if typed is None or more is None:
        return False
    words = set(WORDS.findall(prefix[:typed.start()])) | set(WORDS.findall(suffix))
    return typed.group() in words and typed.group() + more.group() not in words


STUTTER = re.compile(r"(?:^|\s)(\S*[A-Za-z_]\w{2,}\S*)(?:\s+\1){2,}(?:\s|$)")


def stutters(line: str) -> bool:
    """Whether a line says the same word three times in a row (`inventory() inventory() inventory()`: a user's probe
    saw it shown) — the model looping within a line, as `cut_repeats` catches it across lines."""
    return STUTTER.search(line) is not None


def cut_broken_character(text: str, prefix: str, suffix: str) -> str:
    """The text before its first U+FFFD, unless the file has one too: the model wrote byte tokens that are not a
    whole character (a user's probe saw '"中\ufffd"' shown), and a replacement character is never what the user
    meant to type."""
    if "\ufffd" in text and "\ufffd" not in prefix and "\ufffd" not in suffix:
        return text[:text.index("\ufffd")]
    return text


def clean_completion(text: str, prefix: str, suffix: str, single_line: bool = False, sure: bool = False) -> str:
    text = cut_broken_character(text, prefix, suffix)
    if invents_a_name(text, prefix, suffix):
        return ""
    if single_line:
        text = text.split("\n", 1)[0]
    elif suffix:
        text = drop_suffix_overlap(text, suffix)
    lines = text.split("\n")
    looping = next((i for i, line in enumerate(lines) if stutters(line)), None)
    if looping is not None:   # the text before the line that loops
        text = "\n".join(lines[:looping]) + ("\n" if looping else "")
    return cut_repeats(text, prefix, suffix, sure)

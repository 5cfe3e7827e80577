"""Token healing around the cursor, and post-processing of generated text (single-line cuts, suffix duplicates).

Byte-level BPE merges a newline with the next line's indentation ("\n   " + " return"), so the model never saw a
prefix ending in a bare newline, nor a suffix starting with a full indent. `heal` moves the cursor's partial line
out of the prefix into text the window must start with, and leaves one indent character on the suffix, so both
boundaries fall where training put them; `unheal_end` removes the indentation the middle then ends with.
"""
from __future__ import annotations


def indent_of(line: str) -> str:
    return line[: len(line) - len(line.lstrip(" \t"))]


def heal(prefix: str, suffix: str) -> tuple[str, str, str]:
    """(prefix, forced window start, suffix) with the boundaries moved to where the tokenizer splits."""
    cut = prefix.rfind("\n")
    new_prefix, forced = (prefix[:cut], prefix[cut:]) if cut >= 0 else (prefix, "")
    if not forced.isascii():  # a character spread over several byte tokens cannot be spelled token by token
        new_prefix, forced = prefix, ""
    first = suffix.split("\n", 1)[0]
    w = indent_of(first)
    if w and first.strip():
        suffix = suffix[len(w) - 1:]
    return new_prefix, forced, suffix


def unheal_end(text: str, suffix: str) -> str:
    """Drop the indentation a finished middle ends with when `heal` left only one indent character on the suffix."""
    first = suffix.split("\n", 1)[0]
    w = indent_of(first)
    if w and first.strip() and text.endswith("\n" + w[:-1]):
        return text[: len(text) - (len(w) - 1)]
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


def clean_completion(text: str, prefix: str, suffix: str, single_line: bool = False) -> str:
    if single_line:
        text = text.split("\n", 1)[0]
    elif suffix:
        text = drop_suffix_overlap(text, suffix)
    return text

"""Byte-level BPE tokenizer for code, and the one place where special tokens are named.

This module imports no torch: runtime/ uses it to load the shipped tokenizer.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Iterable, Iterator

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

PAD = "<|pad|>"        # filler after a short sequence; never a training target
MASK = "<|mask|>"      # an absorbing-state slot the diffusion model fills
EOS = "<|eos|>"        # end of a file (between files in the token stream)
EOM = "<|eom|>"        # end of middle: padding that lets an infill be shorter than its window
FIM_PREFIX = "<|fim_prefix|>"  # prefix-suffix-middle sentinels for the autoregressive twin
FIM_SUFFIX = "<|fim_suffix|>"
FIM_MIDDLE = "<|fim_middle|>"
SPECIAL_TOKENS = [PAD, MASK, EOS, EOM, FIM_PREFIX, FIM_SUFFIX, FIM_MIDDLE]

DEFAULT_VOCAB_SIZE = 8192
TOKENIZER_FILE = "tokenizer.json"


def build_tokenizer() -> Tokenizer:
    """An untrained byte-level BPE with the lossless byte-level pre-tokenizer and decoder."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    return tok


def train_tokenizer(texts: Iterable[str], vocab_size: int = DEFAULT_VOCAB_SIZE) -> Tokenizer:
    """Train byte-level BPE on `texts`; special tokens take the first ids in SPECIAL_TOKENS order."""
    tok = build_tokenizer()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        min_frequency=2,
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return tok


# the roles the engine gives special tokens → the shipped tokenizer's token for each. An imported model's card names
# its own (conventions.special_tokens): Dream-family models pad a short middle with <|endoftext|>, LLaDA starts a
# file with <|startoftext|>. bos (the start of a file) is the eos token unless named; fim_* only the twin uses.
ROLES = {"pad": PAD, "mask": MASK, "eos": EOS, "eom": EOM, "bos": None,
         "fim_prefix": FIM_PREFIX, "fim_suffix": FIM_SUFFIX, "fim_middle": FIM_MIDDLE}
REQUIRED_ROLES = ("pad", "mask", "eos", "eom")


class CodeTokenizer:
    """Thin wrapper: encode/decode plus the ids of the tokens with a role (mask, end of middle, end of file, ...).
    `specials` maps roles to token strings (default: the shipped model's, ROLES)."""

    def __init__(self, tok: Tokenizer, specials: dict[str, str | None] | None = None):
        self.tok = tok
        names = {**ROLES, **(specials or {})}
        unknown = set(names) - set(ROLES)
        if unknown:
            raise ValueError(f"unknown special-token roles {sorted(unknown)}; known: {sorted(ROLES)}")
        names["bos"] = names["bos"] or names["eos"]
        ids = {role: tok.token_to_id(name) if name else None for role, name in names.items()}
        missing = [names[r] for r in REQUIRED_ROLES + ("bos",) if ids[r] is None]
        if specials is None:  # the shipped layout: every token of SPECIAL_TOKENS must be there
            missing += [n for n in SPECIAL_TOKENS if tok.token_to_id(n) is None and n not in missing]
        if missing:
            raise ValueError(f"tokenizer lacks special tokens {missing}; retrain it with model.tokenizer "
                             "(or name the model's own tokens in its card's conventions.special_tokens)")
        self.pad_id, self.mask_id, self.eos_id, self.eom_id = ids["pad"], ids["mask"], ids["eos"], ids["eom"]
        self.bos_id = ids["bos"]
        self.fim_prefix_id, self.fim_suffix_id, self.fim_middle_id = ids["fim_prefix"], ids["fim_suffix"], ids["fim_middle"]
        added = {i: t.content for i, t in tok.get_added_tokens_decoder().items() if t.special}
        self.special_ids = frozenset(i for i in ids.values() if i is not None) | frozenset(added)
        self.special_strings = sorted({tok.id_to_token(i) for i in self.special_ids}, key=len, reverse=True)

    @classmethod
    def load(cls, path: str | Path, specials: dict[str, str | None] | None = None) -> "CodeTokenizer":
        path = Path(path)
        if path.is_dir():
            path = path / TOKENIZER_FILE
        return cls(Tokenizer.from_file(str(path)), specials)

    def save(self, path: str | Path) -> None:
        self.tok.save(str(path))

    @property
    def vocab_size(self) -> int:
        return self.tok.get_vocab_size()

    def encode(self, text: str) -> list[int]:
        """Text → ids. Special-token strings inside `text` are kept as plain text."""
        if self._has_special(text):
            return self._encode_literal(text)
        return self.tok.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        if any(self._has_special(t) for t in texts):
            return [self.encode(t) for t in texts]
        return [e.ids for e in self.tok.encode_batch(texts, add_special_tokens=False)]

    def last_word_start(self, text: str) -> int:
        """Where the last pre-tokenizer piece of `text` starts. Pieces are merged independently, so the tokens of
        text[:that] are the same whatever is typed next; the last piece's may change (" tok" → " token")."""
        pieces = self.tok.pre_tokenizer.pre_tokenize_str(text) if self.tok.pre_tokenizer is not None else []
        return pieces[-1][1][0] if pieces else 0

    def decode(self, ids: Iterable[int]) -> str:
        """Ids → text, dropping special tokens (masks, padding, end markers)."""
        return self.tok.decode([i for i in ids if i not in self.special_ids], skip_special_tokens=False)

    def token_bytes(self) -> list[str]:
        """Decoded text of every id (special tokens as their names), for per-token features."""
        return self.tok.decode_batch([[i] for i in range(self.vocab_size)], skip_special_tokens=False)

    def _has_special(self, text: str) -> bool:
        return "<" in text and any(s in text for s in self.special_strings)

    def _encode_literal(self, text: str) -> list[int]:
        # tokenizers always matches added tokens; split them out and encode their characters piecewise
        out: list[int] = []
        for piece in _split_specials(text, self.special_strings):
            if piece in self.special_strings:
                out += [i for ch in (piece[:1], piece[1:]) for i in self.encode(ch)]
            elif piece:
                out += self.tok.encode(piece, add_special_tokens=False).ids
        return out


def _split_specials(text: str, specials: list[str]) -> Iterator[str]:
    i = 0
    while i < len(text):
        hits = [(text.find(s, i), s) for s in specials]
        hits = [(p, s) for p, s in hits if p >= 0]
        if not hits:
            yield text[i:]
            return
        p, s = min(hits, key=lambda h: (h[0], -len(h[1])))  # the longest of those starting first
        yield text[i:p]
        yield s
        i = p + len(s)


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()

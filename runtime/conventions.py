"""What a model directory declares about its model, read from its card (`conventions`), with the shipped model's
conventions as the defaults: the engine, the sampler and the context cache take these instead of assuming ours.

    shift          1: the output at position i predicts token i + 1 (the shipped model, Dream, DiffuCoder,
                   Open-dCoder); 0: it predicts token i itself (LLaDA)
    rope_pairs     how RoPE pairs a head's dimensions: "interleaved" (2j, 2j+1; the shipped model) or "half"
                   (j, j + head_dim/2; Hugging Face's rotate_half, every imported family)
    rope_theta     RoPE's base
    special_tokens role → token string (model/tokenizer.py ROLES); None: the shipped tokenizer's
    infill         how an infill is laid out: "prefix-window-suffix", the one layout the engine builds (the file's
                   start token, the prefix, the window of mask slots, the suffix, the file's end token)
"""
from __future__ import annotations

from dataclasses import dataclass

INFILL_LAYOUTS = ("prefix-window-suffix",)
ROPE_PAIRS = ("interleaved", "half")


@dataclass(frozen=True)
class Conventions:
    family: str = "quicksilver"
    shift: int = 1
    rope_pairs: str = "interleaved"
    rope_theta: float = 10000.0
    special_tokens: dict | None = None
    infill: str = "prefix-window-suffix"

    @classmethod
    def from_card(cls, card: dict) -> "Conventions":
        """The card's conventions; a value the engine cannot honour is an error naming it, never a silent default."""
        given = dict(card.get("conventions") or {})
        if "rope_theta" not in given and "rope_theta" in card.get("config", {}):
            given["rope_theta"] = card["config"]["rope_theta"]
        unknown = set(given) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"card conventions has unknown keys {sorted(unknown)}")
        c = cls(**given)
        if isinstance(c.shift, bool) or c.shift not in (0, 1):
            raise ValueError(f"conventions.shift must be 0 or 1, not {c.shift!r}")
        if c.rope_pairs not in ROPE_PAIRS:
            raise ValueError(f"conventions.rope_pairs must be one of {ROPE_PAIRS}, not {c.rope_pairs!r}")
        if isinstance(c.rope_theta, bool) or not isinstance(c.rope_theta, (int, float)) or not c.rope_theta > 0:
            raise ValueError(f"conventions.rope_theta must be a positive number, not {c.rope_theta!r}")
        if c.special_tokens is not None and (not isinstance(c.special_tokens, dict) or not all(
                isinstance(v, (str, type(None))) for v in c.special_tokens.values())):
            raise ValueError("conventions.special_tokens must map roles to token strings (or null)")
        if c.infill not in INFILL_LAYOUTS:
            raise ValueError(f"conventions.infill {c.infill!r} is not a layout this engine builds {INFILL_LAYOUTS}")
        return c

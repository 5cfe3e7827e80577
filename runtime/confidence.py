"""How sure a completion is. `features` describes a finished decoding (its tokens' probabilities when committed,
the cursor, what post-processing kept); a calibrator — a logistic regression fitted on held-out editor cursors
by `quicksilver eval calibrate`, stored beside the model as calibrator.json — turns them into the probability that
the first line shown is the line the file has. Without a calibrator for the model (another model, an old model
directory), the confidence is the least probability among the generated tokens.

The editors' abstention threshold (`runtime.engine.EDITOR_MIN_CONFIDENCE`) reads this number.
"""
from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np

log = logging.getLogger("quicksilver.confidence")

CALIBRATOR_FILE = "calibrator.json"
FEATURES = ("min_logp", "mean_logp", "first_logp", "last_logp", "log_tokens", "lines", "blank_line", "typed_chars",
            "suffix_on_line", "ended", "cut", "named")
FLOOR = 1e-6


def features(probs: np.ndarray, text: str, raw: str, prefix: str, suffix: str, stop_reason: str,
             named: bool = False) -> dict[str, float]:
    """What the calibrator reads: the generated tokens' log-probabilities (least, mean, first, last — the end
    marker's included), how much was generated and shown, the cursor (a blank line, how much of the line is typed,
    code after the cursor on its line), whether the model ended the middle itself, whether post-processing
    cut the text, and whether analysis checked the name it starts with (runtime/names.py)."""
    logp = np.log(np.clip(np.asarray(probs, np.float64), FLOOR, 1.0)) if len(probs) else np.log([FLOOR])
    line = prefix[prefix.rfind("\n") + 1:]
    return {"min_logp": float(logp.min()), "mean_logp": float(logp.mean()), "first_logp": float(logp[0]),
            "last_logp": float(logp[-1]), "log_tokens": math.log1p(len(probs)),
            "lines": float(min(text.count("\n") + 1, 8)) if text else 0.0,
            "blank_line": float(not line.strip()), "typed_chars": math.log1p(len(line.strip())),
            "suffix_on_line": float(bool(suffix.split("\n", 1)[0].strip())),
            "ended": float(stop_reason in ("eom", "stop")), "cut": float(len(text) < len(raw.rstrip())),
            "named": float(named)}


class Calibrator:
    def __init__(self, weights: dict[str, float], bias: float, info: dict | None = None):
        self.weights, self.bias, self.info = weights, bias, info or {}

    def __call__(self, feats: dict[str, float]) -> float:
        z = self.bias + sum(w * feats[k] for k, w in self.weights.items())
        return 1.0 / (1.0 + math.exp(-max(-60.0, min(60.0, z))))

    def save(self, path: Path) -> None:
        path.write_text(json.dumps({"features": list(self.weights), "weights": list(self.weights.values()),
                                    "bias": self.bias, **self.info}, indent=1) + "\n")

    @classmethod
    def load(cls, model_dir: Path, model_sha256: str) -> "Calibrator | None":
        """The model directory's calibrator, if it was fitted for this model file; None otherwise."""
        path = Path(model_dir) / CALIBRATOR_FILE
        if not path.exists():
            return None
        d = json.loads(path.read_text())
        if d.get("model_sha256") != model_sha256:
            log.warning("%s was fitted for another model file: confidence falls back to the least token "
                        "probability", path)
            return None
        if unknown := set(d["features"]) - set(FEATURES):
            log.warning("%s uses features this version does not compute (%s): not used", path, sorted(unknown))
            return None
        from runtime import DECODING_REVISION, current
        if not current(d.get("decoding_revision")):
            log.warning("%s was fitted at decoding revision %s, the engine is at %s: re-run `quicksilver eval "
                        "calibrate`", path, d.get("decoding_revision"), DECODING_REVISION)
        info = {k: v for k, v in d.items() if k not in ("features", "weights", "bias")}
        return cls(dict(zip(d["features"], d["weights"])), float(d["bias"]), info)

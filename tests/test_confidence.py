"""The confidence a completion carries: the calibrator fitted beside a model is used for that model only, turns the
decoding's features into a probability, and `quicksilver eval calibrate` fits one from held-out cursors (tiny
model; the fit is torch's, the serving path numpy's)."""
import argparse
import json
import shutil

import pytest

from runtime.confidence import CALIBRATOR_FILE, FEATURES, Calibrator, features
from runtime.engine import Engine
from runtime.request import Request
from runtime.session import load

PREFIX, SUFFIX = "def total(xs):\n    s = 0\n    for x in xs:\n        ", "\n    return s\n"


@pytest.fixture()
def model_copy(tiny_model_dir, tmp_path):
    out = tmp_path / "model"
    shutil.copytree(tiny_model_dir, out)
    return out


def write(model_dir, sha: str, bias: float, weights=None) -> None:
    Calibrator(weights or {k: 0.0 for k in FEATURES}, bias, {"model_sha256": sha}).save(model_dir / CALIBRATOR_FILE)


def test_features_describe_the_decoding_and_the_cursor():
    f = features([0.9, 0.5, 0.99], "x + 1\n", "x + 1\n", "def f(x):\n    return ", "\n", "eom")
    assert set(f) == set(FEATURES)
    assert f["min_logp"] == pytest.approx(-0.6931, abs=1e-3) and f["first_logp"] == pytest.approx(-0.1054, abs=1e-3)
    assert f["blank_line"] == 0 and f["ended"] == 1 and f["cut"] == 0 and f["suffix_on_line"] == 0
    g = features([], "", "return x\nreturn x\n", "    ", "    pass\n", "window")
    assert g["blank_line"] == 1 and g["cut"] == 1 and g["ended"] == 0 and g["suffix_on_line"] == 1
    assert g["min_logp"] < -13   # no generated tokens: as unsure as can be
    assert f["named"] == 0 and features([0.9], "remove(sku)", "remove(sku)", "inventory.", "\n", "eom", True)["named"] == 1


def test_the_calibrator_is_used_for_its_own_model_only(model_copy):
    model = load(model_copy, prefer="fp32", threads=1)
    sha = model.card["files"][model.model_file]
    # an answer with text (only those are calibrated); which cursor gives one depends on how the tiny model trained
    cursors = [(PREFIX, SUFFIX, n) for n in (16, 6, 3, 1)] + [("x = ", "", 2), ("import ", "", 1)]
    for prefix, suffix, n in cursors:
        req = lambda: Request(prefix=prefix, suffix=suffix, max_new_tokens=n, eom_bias=-100.0, language="")  # noqa
        if (plain := Engine(model).complete(req())).text:
            break
    assert plain.text, "the tiny model answers none of the cursors with text"
    write(model_copy, "0" * 64, bias=3.0)                  # fitted for another model file: ignored
    assert Engine(model).calibrator is None and Engine(model).complete(req()).stats["confidence"] == \
        plain.stats["confidence"]
    write(model_copy, sha, bias=3.0)                       # its own: every answer gets sigmoid(3)
    calibrated = Engine(model).complete(req())
    assert calibrated.text == plain.text
    assert calibrated.stats["confidence"] == pytest.approx(1 / (1 + 2.718281828 ** -3), abs=1e-6)
    write(model_copy, sha, bias=0.0, weights={"min_logp": 1.0})   # exp(least log-probability) = the old score
    assert Engine(model).complete(req()).stats["confidence"] == pytest.approx(
        plain.stats["confidence"] / (1 + plain.stats["confidence"]), rel=1e-4, abs=1e-6)   # (log-probabilities
    # are floored: an answer whose least token probability is ~0 scores the floor's 1e-6)


def test_eval_calibrate_fits_and_writes_a_calibrator(model_copy):
    from evals.calibrate import run
    with pytest.raises(SystemExit, match="seeds 0 and 1"):
        run(argparse.Namespace(model=model_copy, seeds="1,2", per_kind=2, check_seed=0, asked="api"))
    with pytest.raises(SystemExit, match="unknown"):
        run(argparse.Namespace(model=model_copy, seeds="2", per_kind=2, check_seed=0, asked="api,vim"))
    run(argparse.Namespace(model=model_copy, seeds="2,3", per_kind=3, check_seed=0, asked="api,editor"))
    d = json.loads((model_copy / CALIBRATOR_FILE).read_text())
    assert d["features"] == list(FEATURES) and len(d["weights"]) == len(FEATURES)
    assert d["seeds"] == [2, 3] and d["answers"] > 0 and d["asked"] == ["api", "editor"]
    assert "auc_calibrated" in d["check"]["api"] and "auc_calibrated" in d["check"]["editor"]
    model = load(model_copy, threads=1)          # the file eval calibrate served (int8 first)
    assert d["model_sha256"] == model.card["files"][model.model_file] and Engine(model).calibrator is not None
    assert Engine(load(model_copy, prefer="fp32", threads=1)).calibrator is None   # the other file: not its own

"""quicksilver import: tiny random checkpoints in each family's Hugging Face layout are imported, match the
`transformers` reference forward of their base architecture, reach the sampler with their conventions, and are
served through /v1/completions."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from model.families import CheckpointError  # noqa: E402
from model.hf_random import FAMILIES, MASK, reference_logits, write_checkpoint  # noqa: E402
from model.importer import import_checkpoint  # noqa: E402
from runtime.engine import Engine
from runtime.request import Request  # noqa: E402
from runtime.session import load  # noqa: E402

PARITY = 1e-4     # max |Δlogit| between the imported ONNX graph (fp32) and transformers, logits of magnitude ~5
SHIFT = {"dream": 1, "diffucoder": 1, "open-dcoder": 1, "llada": 0}
END = {"dream": "<|endoftext|>", "diffucoder": "<|dlm_pad|>", "open-dcoder": "<|endoftext|>", "llada": "<|endoftext|>"}


@pytest.fixture(scope="module", params=FAMILIES)
def imported(request, tmp_path_factory):
    """(family, Hugging Face directory, reference model, imported model directory)."""
    family = request.param
    base = tmp_path_factory.mktemp(family)
    ref = write_checkpoint(base / "hf", family)
    import_checkpoint(base / "hf", base / "qs")
    return family, base / "hf", ref, base / "qs"


def test_parity_with_transformers(imported):
    family, _, ref, out = imported
    model = load(out, prefer="fp32", threads=1)
    card = json.loads((out / "card.json").read_text())
    assert card["conventions"]["family"] == family and card["config"]["n_kv_head"] == 2
    rng = np.random.default_rng(1)
    for T in (5, 40):
        ids = rng.integers(0, model.tokenizer.vocab_size, (2, T))
        got = model.forward(ids, np.ones_like(ids, bool), 0)
        want = reference_logits(ref, torch.tensor(ids)).numpy()
        assert np.abs(want).max() > 1.0    # weights large enough that a wrong layout would show
        assert np.abs(got - want).max() < PARITY, family


def test_conventions_reach_the_sampler(imported):
    """The mask and end ids come from the family's tokenizer, and the window's logits are read at the family's
    shift: the engine's window logits are the reference's rows [start - shift, end - shift)."""
    family, _, ref, out = imported
    engine = Engine(load(out, prefer="fp32", threads=1), kv_cache=False)
    tok = engine.tok
    assert engine.special.mask == tok.tok.token_to_id(MASK[family]) != tok.eos_id
    assert tok.tok.token_to_id(END[family]) in engine.special.ends
    assert engine.special.mask in engine.special.banned and not set(engine.special.ends) & set(engine.special.banned)
    assert engine.shift == SHIFT[family]
    d = engine.denoiser(Request(prefix="def add(a, b):\n", suffix="\nprint(add(1, 2))\n", max_new_tokens=8))
    ids = d.inputs()
    assert (ids[d.start:d.end] == engine.special.mask).all() and engine.special.mask not in ids[:d.start]
    want = reference_logits(ref, torch.tensor(ids[None]))[0].numpy()
    got = engine._forward([d])[0]
    np.testing.assert_allclose(got, want[d.start - engine.shift:d.end - engine.shift], atol=PARITY)
    engine.shift = 1 - engine.shift      # the other convention reads other rows: a wrong one cannot pass
    other = engine._forward([engine.denoiser(Request(prefix="def add(a, b):\n", suffix="\nprint(add(1, 2))\n",
                                                     max_new_tokens=8))])[0]
    assert np.abs(other - want[d.start - SHIFT[family]:d.end - SHIFT[family]]).max() > 0.1


def test_window_pass_on_the_cache_equals_the_full_pass(imported):
    """After a request's full pass, a window pass over the same window against the cached context (the family's
    shift deciding which slot is re-run, its key/value heads in the cache) gives the full pass's logits."""
    _, _, _, out = imported
    engine = Engine(load(out, prefer="fp32", threads=1))
    d = engine.denoiser(Request(prefix="def add(a, b):\n    return", suffix="\n\nprint(add(1, 2))\n",
                                max_new_tokens=12))
    full = engine._forward([d])[0]
    assert d.cache is not None and d.cache.region == d.active()
    window = engine._forward([d])[0]
    np.testing.assert_allclose(window, full, atol=PARITY)


def test_suffix_keys_move_by_rotate_half_rope(imported):
    """The next keystroke's context reuse rotates the suffix's keys to their new positions; with the family's
    rotate-half layout the rotated first-layer keys equal keys computed at the new positions (the other layout
    does not)."""
    from runtime.contexts import ContextCache
    _, _, _, out = imported
    model = load(out, prefer="fp32", threads=1)
    shift, theta = model.conventions.shift, model.conventions.rope_theta
    ids = np.random.default_rng(3).integers(0, model.tokenizer.vocab_size, (1, 9))
    mask, empty = np.ones_like(ids, bool), model.empty_cache(1)
    at = lambda start: model.forward_kv(ids, np.arange(start, start + 9)[None], mask, empty, empty, 0)[1][:1]
    region = (shift, shift)   # nothing before the suffix: every key is a suffix key
    for pairs, same in (("half", True), ("interleaved", False)):
        moved = ContextCache(at(0), at(0), region, shift).moved((shift, shift + 5), theta, pairs)
        assert np.allclose(moved.keys, at(5), atol=1e-4) is same, pairs


def test_io_binding_path_equals_plain_runs(imported):
    """The path the CUDA provider takes (caches uploaded once and bound, window passes leaving their keys on the
    device), run on the CPU: the same text, passes and logits as plain runs."""
    import onnxruntime as ort
    _, _, _, out = imported
    plain, bound = load(out, prefer="fp32", threads=1), load(out, prefer="fp32", threads=1)
    bound.bind = True
    req = dict(prefix="def add(a, b):\n    return", suffix="\n\nprint(add(1, 2))\n", max_new_tokens=12)
    a, b = Engine(plain).complete(Request(**req)), Engine(bound).complete(Request(**req))
    assert (a.raw, a.stats["forward_passes"]) == (b.raw, b.stats["forward_passes"])
    ids = np.arange(10)[None] % plain.tokenizer.vocab_size
    mask, empty = np.ones((1, 10), bool), plain.empty_cache(1)
    logits, keys, values = plain.forward_kv(ids, np.arange(10)[None], mask, empty, empty, 0)
    past = bound.on_device(keys[:, :, :, :6]), bound.on_device(values[:, :, :, :6])
    tail, new_k, _ = bound.forward_kv(ids[:, 6:], np.arange(6, 10)[None], mask, *past, 0, new_kv=False)
    assert isinstance(new_k, ort.OrtValue) and np.allclose(tail, logits[:, 6:], atol=PARITY)


@pytest.mark.skipif("CUDAExecutionProvider" not in __import__("onnxruntime").get_available_providers(),
                    reason="needs onnxruntime-gpu and a GPU")
def test_cuda_provider_keeps_caches_on_the_device(imported):
    _, _, _, out = imported
    gpu = load(out, prefer="fp32", threads=1)
    assert gpu.provider == "CUDAExecutionProvider" and gpu.bind and gpu.device == "cuda"
    engine = Engine(gpu)
    d = engine.denoiser(Request(prefix="def add(a, b):\n    return", suffix="\n", max_new_tokens=12))
    full = engine._forward([d])[0]
    np.testing.assert_allclose(engine._forward([d])[0], full, atol=1e-3)   # the window pass on the bound cache


def test_served_through_v1_completions(imported, tmp_path):
    from openai import OpenAI

    from conftest import API_KEY, start_server, stop_server
    family, _, _, out = imported
    srv, thread, url = start_server(out, tmp_path / "db.sqlite")
    try:
        import httpx
        health = httpx.get(url + "/health").json()
        assert health["family"] == family and health["model_file"] == "model.onnx"
        client = OpenAI(base_url=url + "/v1", api_key=API_KEY)
        r = client.completions.create(model="quicksilver", prompt="def add(a, b):\n    return", max_tokens=8,
                                      extra_body={"suffix": "\n"})
        choice = r.choices[0]
        assert isinstance(choice.text, str) and choice.finish_reason in ("stop", "length")
        stats = choice.model_extra["quicksilver"]
        assert stats["forward_passes"] >= 1 and 0 <= stats["confidence"] <= 1 and stats["calibrated"] is False
        infill = httpx.post(url + "/infill", headers={"Authorization": f"Bearer {API_KEY}"},
                            json={"input_prefix": "def add(a, b):\n    ", "input_suffix": "\n", "n_predict": 8})
        assert infill.status_code == 200 and isinstance(infill.json()["content"], str)
    finally:
        stop_server(srv, thread)


@pytest.mark.parametrize("precision", ["int8", "int4", "fp16"])
def test_precisions(tmp_path, precision):
    """Each precision writes its graph, loads, and stays near the reference. Measured on these random weights
    (d_model 64, 3 inputs): logit correlation / argmax agreement fp16 1.000 / 1.00, int8 0.997 / 0.88, int4
    0.92–0.94 / 0.53–0.59 (4-bit blocks of 32 on random weights; trained weights lose far less)."""
    ref = write_checkpoint(tmp_path / "hf", "dream")
    card = import_checkpoint(tmp_path / "hf", tmp_path / "qs", precision=precision)
    assert card["imported"]["precision"] == precision
    model = load(tmp_path / "qs", prefer=precision, threads=1)
    assert model.model_file == f"model.{precision}.onnx" and list(card["files"]) == sorted(card["files"])
    ids = np.random.default_rng(2).integers(0, model.tokenizer.vocab_size, (1, 32))
    got = model.forward(ids, np.ones_like(ids, bool), 0)
    want = reference_logits(ref, torch.tensor(ids)).numpy()
    corr, agree = {"fp16": (0.9999, 0.95), "int8": (0.98, 0.7), "int4": (0.85, 0.4)}[precision]
    assert np.corrcoef(got.ravel(), want.ravel())[0, 1] > corr
    assert (got.argmax(-1) == want.argmax(-1)).mean() > agree


def test_external_data(tmp_path):
    """--external-data (automatic above 1 GB) keeps the weights beside the graph; the card hashes both."""
    write_checkpoint(tmp_path / "hf", "llada")
    card = import_checkpoint(tmp_path / "hf", tmp_path / "qs", external=True)
    assert {"model.onnx", "model.onnx.data"} <= set(card["files"])
    assert (tmp_path / "qs" / "model.onnx").stat().st_size < (tmp_path / "qs" / "model.onnx.data").stat().st_size
    model = load(tmp_path / "qs", prefer="fp32", threads=1)
    assert Engine(model).complete(Request(prefix="x = 1\n", max_new_tokens=4)).stats["forward_passes"] >= 1


def test_broken_checkpoints_are_refused_with_the_reason(tmp_path):
    hf = tmp_path / "hf"
    write_checkpoint(hf, "dream")
    cfg = json.loads((hf / "config.json").read_text())

    def refused(match, **kw):
        with pytest.raises(CheckpointError, match=match):
            import_checkpoint(hf, tmp_path / "out", **kw)
        assert not (tmp_path / "out").exists()

    (hf / "config.json").write_text(json.dumps({**cfg, "model_type": "mistral"}))
    refused("not a supported diffusion family")
    (hf / "config.json").write_text(json.dumps({**cfg, "model_type": "qwen2"}))
    refused("no <M> mask token")                     # a plain autoregressive Qwen2
    (hf / "config.json").write_text(json.dumps({**cfg, "mask_token_id": 3}))
    refused("mismatched files")
    (hf / "config.json").write_text(json.dumps({**cfg, "num_hidden_layers": 3}))
    refused("says 3 layers; the checkpoint holds 2")
    (hf / "config.json").write_text(json.dumps({**cfg, "num_hidden_layers": 1}))
    refused("says 1 layers; the checkpoint holds 2")
    (hf / "config.json").write_text(json.dumps({**cfg, "tie_word_embeddings": True}))
    refused("does not use")                          # lm_head.weight left over
    (hf / "config.json").write_text(json.dumps({**cfg, "intermediate_size": 80}))
    refused("has shape")
    (hf / "config.json").write_text(json.dumps(cfg))
    refused("unknown family", family_name="gpt2")
    refused("precision", precision="int3")
    shutil.move(hf / "model-00002-of-00002.safetensors", tmp_path / "shard")
    refused("is missing")
    shutil.move(tmp_path / "shard", hf / "model-00002-of-00002.safetensors")
    for bad, match in (("{not json", "not valid JSON"), ("[1, 2]", "JSON object"),
                       (json.dumps({**cfg, "num_hidden_layers": 10**9}), "holds 2"),     # before any allocation
                       (json.dumps({**cfg, "hidden_size": 64_000_000}), "has shape"),   # (114 GB if it were made)
                       (json.dumps({k: v for k, v in cfg.items() if k != "num_attention_heads"}), "lacks"),
                       (json.dumps({**cfg, "num_hidden_layers": "2"}), "cannot take|positive integers"),
                       (json.dumps({**cfg, "num_key_value_heads": 3}), "multiple")):
        (hf / "config.json").write_text(bad)
        refused(match)
    (hf / "config.json").write_text(json.dumps(cfg))
    refused("lacks 'n_heads'", family_name="llada")    # a Dream checkpoint read as LLaDA
    shard = hf / "model-00002-of-00002.safetensors"
    data = shard.read_bytes()
    shard.write_bytes(data[:len(data) // 2])
    refused("truncated or damaged")
    shard.write_bytes(data)
    tok_text = (hf / "tokenizer.json").read_text()
    (hf / "tokenizer.json").write_text(json.dumps({"version": "1.0", "model": {}, "added_tokens": []}))
    refused("cannot be loaded by tokenizers|lacks")
    tok = json.loads(tok_text)
    tok["added_tokens"] = [t for t in tok["added_tokens"] if t["content"] != "<|mask|>"]
    (hf / "tokenizer.json").write_text(json.dumps(tok))
    refused("not a dream checkpoint")
    (hf / "tokenizer.json").write_text(tok_text)
    assert not list(tmp_path.glob("*.import-tmp"))


def test_out_never_replaces_what_is_not_a_model_directory(tmp_path, monkeypatch):
    """--out replaces an earlier import, nothing else: not the checkpoint, a folder holding it, a file, a link, or
    a folder of other files; a failure after writing started leaves nothing half-written."""
    import model.importer as importer
    hf = tmp_path / "proj" / "hf"
    write_checkpoint(hf, "llada")
    (tmp_path / "proj" / "NOTES.txt").write_text("keep me")
    before = sorted(p.name for p in hf.iterdir())
    (tmp_path / "afile").write_text("precious")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "x.txt").write_text("keep")
    (tmp_path / "link").symlink_to(tmp_path / "other")
    for out, match in ((hf, "replace the checkpoint"), (tmp_path / "proj", "replace the checkpoint"),
                       (tmp_path / "afile", "file or a link"), (tmp_path / "link", "file or a link"),
                       (tmp_path / "other", "not a quicksilver model directory")):
        with pytest.raises(CheckpointError, match=match):
            import_checkpoint(hf, out)
    assert sorted(p.name for p in hf.iterdir()) == before and (tmp_path / "proj" / "NOTES.txt").exists()
    assert (tmp_path / "afile").read_text() == "precious" and (tmp_path / "other" / "x.txt").exists()
    with pytest.raises(CheckpointError, match="not a directory"):
        import_checkpoint(tmp_path / "afile", tmp_path / "qs")
    import_checkpoint(hf, tmp_path / "qs")
    import_checkpoint(hf, tmp_path / "qs", precision="int8")   # an earlier import is replaced
    assert (tmp_path / "qs" / "model.int8.onnx").exists() and not (tmp_path / "qs" / "model.onnx").exists()
    monkeypatch.setattr(importer, "parity", lambda model, path: 1.0)
    with pytest.raises(CheckpointError, match="parity"):
        import_checkpoint(hf, tmp_path / "qs2")
    assert not (tmp_path / "qs2").exists() and not list(tmp_path.glob("*.import-tmp"))


def test_damaged_conventions_are_refused_at_load(imported, tmp_path):
    from runtime.session import ModelError
    _, _, _, out = imported
    for bad in ({"shift": True}, {"rope_theta": "abc"}, {"rope_theta": -1}, {"special_tokens": ["<|mask|>"]}):
        copy = tmp_path / f"m{len(list(tmp_path.iterdir()))}"
        shutil.copytree(out, copy)
        card = json.loads((copy / "card.json").read_text())
        card["conventions"].update(bad)
        (copy / "card.json").write_text(json.dumps(card))
        with pytest.raises(ModelError, match="conventions"):
            load(copy, verify=False)


def test_an_engine_failure_is_a_500_not_an_empty_answer(imported, tmp_path):
    """A forward pass that raises (the scheduler logs it) reaches the client as a 500 with the reason, and the
    server answers the next request."""
    import httpx

    from conftest import API_KEY, start_server, stop_server
    _, _, _, out = imported
    srv, thread, url = start_server(out, tmp_path / "db.sqlite")
    engine = srv.config.app.state.engine
    real = engine.forward_batch
    try:
        def boom(denoisers):
            raise RuntimeError("a damaged pass")
        engine.forward_batch = boom
        auth = {"Authorization": f"Bearer {API_KEY}"}
        r = httpx.post(url + "/v1/completions", json={"prompt": "x = ", "max_tokens": 4}, headers=auth, timeout=60)
        assert r.status_code == 500 and "model failed" in r.json()["error"]["message"]
        r = httpx.post(url + "/infill", json={"input_prefix": "x = ", "n_predict": 4}, headers=auth, timeout=60)
        assert r.status_code == 500
        engine.forward_batch = real
        r = httpx.post(url + "/v1/completions", json={"prompt": "x = ", "max_tokens": 4}, headers=auth, timeout=60)
        assert r.status_code == 200
    finally:
        engine.forward_batch = real
        stop_server(srv, thread)


def test_import_command(tmp_path, capsys):
    from runtime.cli import main
    write_checkpoint(tmp_path / "hf", "open-dcoder")
    main(["import", str(tmp_path / "hf"), "--out", str(tmp_path / "qs"), "--precision", "int8"])
    printed = json.loads(capsys.readouterr().out)
    assert printed["family"] == "open-dcoder" and "model.int8.onnx" in printed["bytes"]
    with pytest.raises(SystemExit, match="quicksilver import: .*is not a directory"):
        main(["import", str(tmp_path / "nothing"), "--out", str(tmp_path / "x")])


@pytest.mark.parametrize("family", ["dream", "llada"])   # a shifted family and one with logits in place
async def test_language_server_on_an_imported_model(family, tmp_path):
    """`quicksilver lsp --model DIR` on an imported model answers inline completions and block edits."""
    import sys

    from lsprotocol import types as lsp
    from pytest_lsp import client_capabilities, make_test_lsp_client

    from conftest import ROOT
    write_checkpoint(tmp_path / "hf", family)
    import_checkpoint(tmp_path / "hf", tmp_path / "qs")
    c = make_test_lsp_client()
    await c.start_io(sys.executable, "-m", "runtime.cli", "lsp", "--model", str(tmp_path / "qs"), "--min-confidence",
                     "0", cwd=str(ROOT))
    await c.initialize_session(lsp.InitializeParams(capabilities=client_capabilities("neovim"), root_uri="file:///tmp"))
    try:
        uri, text = "file:///tmp/a.py", "def add(a, b):\n    return a\n\nprint(add(1, 2))\n"
        c.text_document_did_open(lsp.DidOpenTextDocumentParams(
            text_document=lsp.TextDocumentItem(uri=uri, language_id="python", version=1, text=text)))
        result = await c.text_document_inline_completion_async(lsp.InlineCompletionParams(
            text_document=lsp.TextDocumentIdentifier(uri=uri), position=lsp.Position(line=1, character=12),
            context=lsp.InlineCompletionContext(trigger_kind=lsp.InlineCompletionTriggerKind.Invoked)))
        items = (result.items if hasattr(result, "items") else result) or []   # None: nothing worth showing
        assert all(isinstance(i.insert_text, str) and i.insert_text for i in items)
        answer = await c.protocol.send_request_async("quicksilver/editBlock", {
            "textDocument": {"uri": uri}, "position": {"line": 1, "character": 6}, "mode": "rewrite"})
        if answer is not None and getattr(answer, "refused", None):   # random weights: refused, with the reason
            assert "not offered" in answer.refused
        else:
            assert answer is None or answer.edit.range.start.line <= 1
    finally:
        await c.shutdown_session()
        await c.stop()


@pytest.mark.parametrize("command", [
    ["infill", "--set", "single-line", "--length", "oracle", "--limit", "2", "--precision", "fp32"],
    ["api", "--set", "single-line", "--limit", "2"],
    ["editor", "--per-kind", "1", "--clients", "completions-64,infill-llama.vim"]])
def test_evals_take_an_imported_model(command, tmp_path):
    """`quicksilver eval … --model DIR` on an imported model (LLaDA: logits in place), unchanged."""
    import subprocess
    import sys

    from conftest import ROOT
    write_checkpoint(tmp_path / "hf", "llada")
    import_checkpoint(tmp_path / "hf", tmp_path / "qs")
    out = tmp_path / "out.json"
    proc = subprocess.run([sys.executable, "-m", "runtime.cli", "eval", *command, "--model", str(tmp_path / "qs"),
                           "--json", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result.get("tasks", result.get("cursors")) in (2, 3)


def test_eval_imported_measures_size_and_speed(tmp_path):
    from evals.imported import evaluate
    out = evaluate("tiny", ["int8"], tmp_path / "work", cursors=1, repeat=1)
    row = out["precisions"]["int8"]
    assert row["model_file"] == "model.int8.onnx" and row["bytes"]["model.int8.onnx"] > 0
    assert row["full_pass_ms"] > 0 and row["window_pass_ms"] > 0 and row["correlation"] > 0.9
    assert row["requests"]["cold"]["requests"] == 1 and row["requests"]["next keystroke"]["context_reused"] == 1.0
    assert not (tmp_path / "work").exists()


def test_other_files_go_before_the_file_within_their_budget(tmp_path):
    """Request.extra (llama.vim's input_extra, the editor's other open files): each starting with the file-start
    token as files follow each other in training, the most relevant nearest, each from its start as far as the
    room holds — what the file leaves unused and EXTRA_TOKENS past its context within the model's positions. The
    file keeps every token it gets without them."""
    from runtime.request import EXTRA_MIN_TOKENS, EXTRA_TOKENS
    write_checkpoint(tmp_path / "hf", "llada")
    import_checkpoint(tmp_path / "hf", tmp_path / "qs")
    model = load(tmp_path / "qs", prefer="fp32", threads=1)
    engine = Engine(model, context_tokens=1024)
    tok, bos = engine.tok, engine.tok.bos_id
    assert bos == tok.tok.token_to_id("<|startoftext|>") != tok.eos_id
    near, far = "def helper(x):\n    return x\n", "import os\n"
    req = lambda extra, prefix="def f(x):\n    ": Request(prefix=prefix, suffix="\n", max_new_tokens=8, extra=extra)
    plain, d = engine.denoiser(req(())), engine.denoiser(req((near, far)))
    files = [bos] + tok.encode(far) + [bos] + tok.encode(near)
    assert list(d.inputs()[:len(files)]) == files and d.stats.extra_tokens == len(files)
    assert list(d.inputs()[len(files):]) == list(plain.inputs())
    big = engine.denoiser(req(("x = 1\n" * 2000, near)))   # the nearest is cut from its start to the room
    assert EXTRA_MIN_TOKENS <= big.stats.extra_tokens <= engine.context_tokens + EXTRA_TOKENS and big.inputs()[0] == bos
    long_file = "x = 1\n" * 2000 + "def f(x):\n    "   # a file that fills its context: EXTRA_TOKENS more at most
    full, with_extra = engine.denoiser(req((), long_file)), engine.denoiser(req((near * 50,), long_file))
    room = min(EXTRA_TOKENS, engine.max_len - engine.context_tokens)
    unused = engine.context_tokens - (full.end - full.start) - full.stats.context_tokens   # what fit's lines leave
    assert with_extra.stats.extra_tokens == unused + room
    assert list(with_extra.inputs()[with_extra.stats.extra_tokens:]) == list(full.inputs())   # the file as it was
    assert engine.complete(req((near,))).stats["extra_tokens"] > 0


def test_infill_input_extra_reaches_a_model_with_room(tmp_path):
    import httpx

    from conftest import API_KEY, start_server, stop_server
    write_checkpoint(tmp_path / "hf", "dream")
    import_checkpoint(tmp_path / "hf", tmp_path / "qs")
    srv, thread, url = start_server(tmp_path / "qs", tmp_path / "db.sqlite", context_tokens=1024)
    try:
        body = {"input_prefix": "def read(path):\n", "input_suffix": "\n", "prompt": "    ", "n_predict": 4,
                "response_fields": ["timings/prompt_n"]}
        extra = [{"filename": "io.py", "text": "def write(path, data):\n    pass\n"}]
        ask = lambda b: httpx.post(url + "/infill", json=b, headers={"Authorization": f"Bearer {API_KEY}"},
                                   timeout=60).json()["timings/prompt_n"]
        assert ask({**body, "input_extra": extra}) > ask(body)
    finally:
        stop_server(srv, thread)

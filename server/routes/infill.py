"""POST /infill: llama.cpp-compatible fill-in-the-middle, so llama.vim / llama.vscode can point at quicksilver.

The response carries the fields llama.cpp's server sends and llama.vim reads (`content`, `tokens_predicted`,
`tokens_cached`, `truncated`, `stop_type`, `timings`, ...), filtered by `response_fields` as llama.cpp does (a
path like "timings/prompt_n" becomes a flat key). `n_predict: 0` decodes nothing (llama.vim sends it to warm
the cache); `seed: -1` is a random seed; `stream: true` sends the response as one
event once it is final (a diffusion model's lines may still be cut until then).
"""
from __future__ import annotations

import json
from typing import Annotated
import random

from fastapi import APIRouter, Request as HttpRequest
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, StrictBool

from runtime.frames import Completion

from runtime.request import (DEFAULT_MAX_NEW_TOKENS, EDITOR_MIN_CONFIDENCE, MAX_NEW_TOKENS,
                             UNCALIBRATED_MIN_CONFIDENCE, Request, editor_min_confidence, editor_request, withheld)
from server.fields import JsonFloat, JsonInt, OptionalJsonFloat
from server.generate import ModelFailure, complete, final, returned_tokens, submit
from server.routes.completions import MAX_PROMPT_CHARS

router = APIRouter()
STOP_TYPES = {"eom": "eos", "stop": "word", "window": "limit", "deadline": "limit"}


class ExtraChunk(BaseModel):
    model_config = ConfigDict(extra="ignore")
    filename: str = ""
    text: str = ""


class InfillBody(BaseModel):
    model_config = ConfigDict(extra="ignore")   # llama.cpp clients send many fields we do not use
    input_prefix: str = ""
    input_suffix: str = ""
    input_extra: list[ExtraChunk] = Field([], max_length=256)
    prompt: str = ""
    n_predict: JsonInt = Field(DEFAULT_MAX_NEW_TOKENS, ge=-1, le=MAX_NEW_TOKENS)
    temperature: JsonFloat = Field(0.0, ge=0, le=2, allow_inf_nan=False)
    top_p: JsonFloat = Field(1.0, gt=0, le=1, allow_inf_nan=False)
    stop: list[Annotated[str, Field(min_length=1)]] = Field([], max_length=16)
    seed: JsonInt = Field(0, ge=-1, le=2**32 - 1)
    stream: StrictBool = False
    t_max_predict_ms: OptionalJsonFloat = Field(None, ge=0, allow_inf_nan=False, description="0 or null: no limit")
    response_fields: list[str] = Field([], max_length=64)
    min_confidence: OptionalJsonFloat = Field(None, ge=0, le=1, description=(
        "an answer less confident than this comes back empty (editors show nothing rather than noise); "
        f"0 shows everything; default {EDITOR_MIN_CONFIDENCE} (the model's calibrated confidence), "
        f"{UNCALIBRATED_MIN_CONFIDENCE} for a model without a calibrator."))


def to_request(body: InfillBody) -> Request:
    # llama.vim sends the chunks oldest first; the engine places the most relevant (the newest) nearest the file
    extra = tuple(f"# {c.filename}\n{c.text}" if c.filename else c.text for c in reversed(body.input_extra))
    prefix = body.input_prefix + body.prompt
    if len(prefix) + len(body.input_suffix) + sum(map(len, extra)) > MAX_PROMPT_CHARS:
        raise ValueError(f"input is longer than {MAX_PROMPT_CHARS} characters")
    # the editors' request for the cursor (the language server asks the same way): n_predict only lowers the cap
    return editor_request(prefix, body.input_suffix, max_new_tokens=None if body.n_predict < 0 else max(1, body.n_predict),
                          stop=tuple(body.stop), extra=extra, temperature=body.temperature, top_p=body.top_p,
                          seed=random.getrandbits(32) if body.seed < 0 else body.seed,
                          deadline_ms=body.t_max_predict_ms or None)


def response(state, req: Request, c: Completion | None, min_confidence: float | None = None) -> dict:
    """llama.cpp's final response for a completion (None: nothing decoded, as for n_predict 0), with its
    confidence; empty content when it is below `min_confidence` (None: the editors' default; 0: never)."""
    stats = c.stats if c else {"tokens": 0, "ms": 0.0, "stop_reason": "limit", "steps": 0, "forward_passes": 0}
    predicted = returned_tokens(state, c) if c else 0
    prompt_n = stats.get("context_tokens", 0)   # what the model read (the file's and other files'), the engine's count
    kind = STOP_TYPES.get(stats["stop_reason"], "none")
    word = stats.get("stop_word", "") if kind == "word" and stats.get("stop_word") in req.stop else ""
    predicted_ms = max(stats["ms"], 1e-6)
    hide = c is not None and withheld(c, editor_min_confidence(c) if min_confidence is None else min_confidence)
    return {"content": c.text if c and not hide else "", "tokens": [], "id_slot": 0, "stop": True,
            "model": state.model_name, "confidence": stats.get("confidence", 0.0), "withheld": hide,
            "typed_through": bool(stats.get("typed_through")),
            "calibrated": bool(stats.get("calibrated")),
            "tokens_predicted": predicted, "tokens_evaluated": prompt_n, "tokens_cached": 0,
            "extra_chunks": stats.get("extra_chunks", 0), "extra_tokens": stats.get("extra_tokens", 0),
            "names": stats.get("names", "not asked"),   # what names analysis did (runtime/names.py)
            "truncated": bool(stats.get("truncated")), "has_new_line": bool(c and "\n" in c.text),
            "stop_type": kind, "stopping_word": word, "stopped_eos": kind == "eos", "stopped_limit": kind == "limit",
            "stopped_word": kind == "word", "id": c.id if c else req.id,
            "timings": {"prompt_n": prompt_n, "prompt_ms": 0.0, "prompt_per_token_ms": 0.0, "prompt_per_second": 0.0,
                        "predicted_n": predicted, "predicted_ms": stats["ms"],
                        "predicted_per_token_ms": stats["ms"] / max(1, predicted),
                        "predicted_per_second": 1000 * predicted / predicted_ms,
                        "steps": stats["steps"], "forward_passes": stats["forward_passes"],
                        "names_ms": stats.get("names_ms", 0.0)}}   # names analysis's own time (part of the rest)


def select(data: dict, fields: list[str]) -> dict:
    """llama.cpp's `response_fields`: only the named fields; "a/b" is data["a"]["b"] under the key "a/b"."""
    if not fields:
        return data
    out = {}
    for path in fields:
        value, found = data, True
        for part in path.split("/"):
            found = isinstance(value, dict) and part in value
            value = value[part] if found else None
            if not found:
                break
        if found:
            out[path] = value
    return out


@router.post("/infill", responses={200: {"content": {"text/event-stream": {}},
                                        "description": "llama.cpp's response, or server-sent events with `stream`"}})
async def infill(body: InfillBody, http: HttpRequest):
    state, req = http.app.state, to_request(body)
    if body.n_predict == 0:
        return select(response(state, req, None), body.response_fields)
    handles = await submit(state, [req])   # queued before any answer starts: a full queue is still a 429
    if body.stream:
        return StreamingResponse(_stream(state, req, handles[0], body.response_fields, body.min_confidence),
                                 media_type="text/event-stream")
    results = await complete(state, [req], handles, "/infill", http)
    if results is None:
        return Response(status_code=499)
    return select(response(state, req, results[0], body.min_confidence), body.response_fields)


async def _stream(state, req: Request, handle, fields: list[str], min_confidence: float | None):
    """One event once the answer is final (as /v1/completions' streams: post-processing may cut any line until
    then), exactly the response the same request without `stream` gets."""
    try:
        c = await final(state, req, "/infill", handle)   # a disconnect cancels the request
    except ModelFailure as e:   # the status line is sent already: the error travels as an event
        yield f"data: {json.dumps({'error': {'code': 500, 'message': str(e), 'type': 'server_error'}})}\n\n"
        return
    yield f"data: {json.dumps(select(response(state, req, c, min_confidence), fields))}\n\n"

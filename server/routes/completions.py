"""POST /v1/completions: OpenAI-compatible completions, with `suffix` for fill-in-the-middle and SSE streaming.

A stream sends each choice in one chunk once it is final, then `data: [DONE]`: until its last pass a diffusion
model's lines are not final, and post-processing (the stop strings, repeats of the lines around the cursor, the
cursor's scope, the syntax guard, `min_confidence`) may cut any of them, so a stream gets exactly what the same
request without `stream` gets, never text the editor would have to take back.
"""
from __future__ import annotations

import json
from typing import Annotated
import time
import uuid

from fastapi import APIRouter, Request as HttpRequest
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, StrictBool, field_validator

from runtime.frames import Completion

from runtime.request import MAX_NEW_TOKENS, OPENAI_MAX_TOKENS, Request, withheld
from server.fields import JsonFloat, JsonInt, OnlyFalse, OptionalJsonFloat, OptionalJsonInt
from server.generate import ModelFailure, complete, final, returned_tokens, submit

router = APIRouter()
MAX_PROMPT_CHARS = 200_000
MAX_PROMPTS = 2           # prompts in one request; with n ≤ 8, at most 16 completions (a quarter of the queue)
Prompt = Annotated[str, Field(max_length=MAX_PROMPT_CHARS)]


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")
    include_usage: StrictBool = False


class CompletionBody(BaseModel):
    model_config = ConfigDict(extra="ignore")
    model: str = ""
    prompt: Prompt | Annotated[list[Prompt], Field(min_length=1, max_length=MAX_PROMPTS)] = Field(
        ..., description="text before the cursor (or a list of them)")
    suffix: Prompt | None = Field(None, description="text after the cursor: fill-in-the-middle")
    max_tokens: OptionalJsonInt = Field(OPENAI_MAX_TOKENS, ge=1, le=MAX_NEW_TOKENS,
                                        description=f"null: the default, {OPENAI_MAX_TOKENS}")
    temperature: JsonFloat = Field(0.0, ge=0, le=2, allow_inf_nan=False)
    top_p: JsonFloat = Field(1.0, gt=0, le=1, allow_inf_nan=False)
    stop: Annotated[str, Field(min_length=1)] | Annotated[list[Annotated[str, Field(min_length=1)]],
                                                          Field(max_length=16)] | None = None
    n: JsonInt = Field(1, ge=1, le=8)
    seed: OptionalJsonInt = Field(None, ge=0, le=2**53)   # exact in every JSON parser
    stream: StrictBool = False
    stream_options: StreamOptions | None = Field(None, description="with `stream`: include_usage sends a last chunk "
                                                                   "with the usage and no choices, as OpenAI does")
    echo: OnlyFalse = Field(False, description="not supported: the prompt is never echoed")
    logprobs: None = Field(None, description="not supported")
    min_confidence: OptionalJsonFloat = Field(None, ge=0, le=1, description=(
        "withhold (empty text) a choice whose confidence is below this; default: the server's --min-confidence "
        "(none unless set)."))

    @field_validator("prompt", mode="before")
    @classmethod
    def text_prompts(cls, v):
        if isinstance(v, list) and any(not isinstance(p, str) for p in v):
            raise ValueError("prompts are text: token ids (or lists of them) are not accepted")
        return v


def to_requests(body: CompletionBody) -> list[Request]:
    prompts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
    if sum(len(p) for p in prompts) + len(body.suffix or "") > MAX_PROMPT_CHARS:
        raise ValueError(f"the prompts and suffix are over {MAX_PROMPT_CHARS} characters together")
    stop = (body.stop,) if isinstance(body.stop, str) else tuple(body.stop or ())
    return [Request(prefix=p, suffix=body.suffix or "", mode="infill" if body.suffix else "completion",
                    max_new_tokens=body.max_tokens or OPENAI_MAX_TOKENS, temperature=body.temperature, top_p=body.top_p,
                    seed=(body.seed or 0) + i, stop=stop)
            for p in prompts for i in range(body.n)]


def finish_reason(c: Completion) -> str:
    return "stop" if c.stats["stop_reason"] in ("eom", "stop") else "length"


def _usage(state, reqs: list[Request], results: list[Completion]) -> dict:
    prompt = sum(c.stats.get("context_tokens", 0) for c in results)   # what the model read, counted by the engine
    done = sum(returned_tokens(state, c) for c in results)
    return {"prompt_tokens": prompt, "completion_tokens": done, "total_tokens": prompt + done}


@router.post("/v1/completions", responses={200: {"content": {"text/event-stream": {}},
                                                   "description": "a completion, or server-sent events with `stream`"}})
async def completions(body: CompletionBody, http: HttpRequest):
    state = http.app.state
    reqs = to_requests(body)
    cid, created = f"cmpl-{uuid.uuid4().hex[:20]}", int(time.time())
    model = state.model_name
    handles = await submit(state, reqs)   # queued before any answer starts: a full queue is still a 429
    floor = body.min_confidence if body.min_confidence is not None else state.min_confidence
    if body.stream:   # each choice is sent once it is final: see the module's docstring
        usage = bool(body.stream_options and body.stream_options.include_usage)
        return StreamingResponse(_stream(state, reqs, handles, cid, created, model, floor, usage),
                                 media_type="text/event-stream")
    results = await complete(state, reqs, handles, "/v1/completions", http)
    if results is None:  # the client disconnected: nobody to answer
        return Response(status_code=499)
    return {"id": cid, "object": "text_completion", "created": created, "model": model,
            "choices": [choice(i, c, withheld(c, floor)) for i, c in enumerate(results)],
            "usage": _usage(state, reqs, results)}


def choice(index: int, c: Completion, hide: bool) -> dict:
    return {"index": index, "text": "" if hide else c.text, "logprobs": None, "finish_reason": finish_reason(c),
            "quicksilver": {"id": c.id, **c.stats, "withheld": hide}}


async def _stream(state, reqs, handles, cid, created, model, floor, usage: bool = False):
    def chunk(index, text, reason=None, stats=None):
        data = {"id": cid, "object": "text_completion", "created": created, "model": model,
                "choices": [{"index": index, "text": text, "logprobs": None, "finish_reason": reason}],
                **({"usage": None} if usage else {})}
        if stats is not None:   # a choice's chunk carries its statistics
            data["choices"][0]["quicksilver"] = stats
        return f"data: {json.dumps(data)}\n\n"

    results = []

    try:
        for index, (req, handle) in enumerate(zip(reqs, handles)):
            try:
                c = await final(state, req, "/v1/completions", handle)
            except ModelFailure as e:   # the status line is sent already: the error travels as an event
                yield f"data: {json.dumps({'error': {'message': str(e), 'type': 'server_error'}})}\n\n"
                break
            hide = withheld(c, floor)
            results.append(c)
            yield chunk(index, "" if hide else c.text, finish_reason(c), {"id": c.id, **c.stats, "withheld": hide})
        if usage and len(results) == len(reqs):   # stream_options.include_usage: the usage, with no choices
            last = {"id": cid, "object": "text_completion", "created": created, "model": model, "choices": [],
                    "usage": _usage(state, reqs, results)}
            yield f"data: {json.dumps(last)}\n\n"
        yield "data: [DONE]\n\n"
    finally:   # a client that leaves cancels every choice, not only the one being streamed
        for h in handles:
            h.cancel()

"""POST /infill: llama.cpp-compatible fill-in-the-middle, so llama.vim / llama.vscode can point at quicksilver."""
from __future__ import annotations

import json

from fastapi import APIRouter, Request as HttpRequest
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from runtime.engine import Completion, Request
from server.generate import complete, run
from server.routes.completions import MAX_PROMPT_CHARS

router = APIRouter()


class ExtraChunk(BaseModel):
    model_config = ConfigDict(extra="ignore")
    filename: str = ""
    text: str = ""


class InfillBody(BaseModel):
    model_config = ConfigDict(extra="ignore")   # llama.cpp clients send many sampler fields we do not use
    input_prefix: str = ""
    input_suffix: str = ""
    input_extra: list[ExtraChunk] = []
    prompt: str = ""
    n_predict: int = Field(32, ge=-1, le=1024)
    temperature: float = Field(0.0, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    stop: list[str] = []
    seed: int = 0
    stream: bool = False
    t_max_predict_ms: float | None = Field(None, gt=0)


def to_request(body: InfillBody) -> Request:
    extra = "".join(f"# {c.filename}\n{c.text}\n" if c.filename else c.text + "\n" for c in body.input_extra)
    prefix = extra + body.input_prefix + body.prompt
    if len(prefix) + len(body.input_suffix) > MAX_PROMPT_CHARS:
        raise ValueError(f"input is longer than {MAX_PROMPT_CHARS} characters")
    return Request(prefix=prefix, suffix=body.input_suffix, max_new_tokens=32 if body.n_predict < 1 else body.n_predict,
                   temperature=body.temperature, top_p=body.top_p, stop=tuple(body.stop), seed=body.seed,
                   deadline_ms=body.t_max_predict_ms)


def _response(c: Completion) -> dict:
    return {"content": c.text, "stop": True, "id_slot": 0, "tokens_predicted": c.stats["tokens"],
            "stopped_eos": c.stats["stop_reason"] == "eom", "stopped_limit": c.stats["stop_reason"] == "window",
            "timings": {"predicted_n": c.stats["tokens"], "predicted_ms": c.stats["ms"], "steps": c.stats["steps"],
                        "forward_passes": c.stats["forward_passes"]}}


@router.post("/infill")
async def infill(body: InfillBody, http: HttpRequest):
    state, req = http.app.state, to_request(body)
    if not body.stream:
        results = await complete(state, [req], "/infill", http)
        return _response(results[0]) if results else Response(status_code=499)

    async def events():
        async for item in run(state, req, "/infill"):
            if isinstance(item, Completion):
                yield f"data: {json.dumps(_response(item))}\n\n"
    return StreamingResponse(events(), media_type="text/event-stream")

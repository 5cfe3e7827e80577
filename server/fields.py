"""Request-body field types that accept exactly what their JSON Schema says (the OpenAPI document is the contract:
schemathesis checks it), where pydantic's lax mode would also take `false` for a number or `0` for `false`."""
from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BeforeValidator


def _not_a_bool(v):
    if isinstance(v, (bool, str)):
        raise ValueError(f"a {type(v).__name__} is not a number")
    return v


JsonInt = Annotated[int, BeforeValidator(_not_a_bool)]               # 4 and 4.0, not false or 4.5
JsonFloat = Annotated[float, BeforeValidator(_not_a_bool)]           # 0 and 0.5, not false
# optional ones take the validator outside the union (inside, pydantic writes the bounds as "ge"/"le" into the schema)
OptionalJsonInt = Annotated[int | None, BeforeValidator(_not_a_bool)]
OptionalJsonFloat = Annotated[float | None, BeforeValidator(_not_a_bool)]
OnlyFalse = Annotated[Literal[False], BeforeValidator(lambda v: v if isinstance(v, bool) else None)]

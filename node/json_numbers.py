"""Whole numbers in JSON a client sends (the API's bodies, an application file for `alliance apply`), `true` and
`false` refused.

Pydantic reads a boolean as 1 or 0 where an int goes: a report sent with `"confidence": true` was queued with
confidence 1, and an alert confirmed with it reported the borrower at 1, each answered 2xx as if the body were right.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BeforeValidator


def not_a_boolean(value: Any) -> Any:
    """A BeforeValidator of JsonInt's; one beside the bounds of an optional int, whose bounds must go before it
    (`Annotated[int, Field(ge=1), BeforeValidator(not_a_boolean)] | None`): put after it, pydantic writes them into
    the OpenAPI document as `ge`/`le`, which JSON Schema does not know, and clients read "any integer"."""
    if isinstance(value, bool):
        raise ValueError("a whole number is needed, not true or false")
    return value


JsonInt = Annotated[int, BeforeValidator(not_a_boolean)]

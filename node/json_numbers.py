"""Whole numbers in JSON a client sends (the API's bodies, an application file for `alliance apply`), `true` and
`false` refused.

Pydantic reads a boolean as 1 or 0 where an int goes: a report sent with `"confidence": true` was queued with
confidence 1, and an alert confirmed with it reported the borrower at 1, each answered 2xx as if the body were right.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BeforeValidator


def _not_a_boolean(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError("a whole number is needed, not true or false")
    return value


JsonInt = Annotated[int, BeforeValidator(_not_a_boolean)]

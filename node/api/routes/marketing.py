"""`/v1/marketing/prescreen`: clean a prospect list (CSV body) against validation, duplicates and the ledger."""

from __future__ import annotations

import io
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request

from node.api.deps import NodeDep, require_roles
from node.auth.apikeys import KeyInfo, Role
from node.errors import InvalidInput
from node.modules import marketing

router = APIRouter(prefix="/marketing", tags=["marketing"])

Marketer = Annotated[KeyInfo, Depends(require_roles(Role.workflow, Role.analyst))]


@router.post("/prescreen")
async def create_prescreen(*, request: Request, node: NodeDep, key: Marketer) -> dict[str, Any]:
    """Body: the prospect CSV (text/csv). Answer: counts per segment and the clean CSV."""
    try:
        text = (await request.body()).decode("utf-8-sig")
    except UnicodeDecodeError:
        raise InvalidInput("the prospect list must be UTF-8 CSV", code="not_utf8") from None
    from starlette.concurrency import run_in_threadpool

    # Lines as a file opened with newline="" gives them (the CLI's): str.splitlines also breaks at \x0c, \x1c,
    # \u2028 and others, which split one prospect's row into two.
    result = await run_in_threadpool(marketing.prescreen, node, io.StringIO(text, newline=""), key_id=key.key_id)
    return {**result.to_json(), "clean_csv": result.clean_csv()}
